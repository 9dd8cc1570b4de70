"""HTTP API routes (KServe V1 / TF Serving style) on the Powertools HTTP API resolver.

Errors are raised as typed exceptions (bigpickle.errors) and turned into JSON in one place below.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types

from bigpickle.config import Settings
from bigpickle.errors import (
    BadRequestError,
    BigPickleError,
    ModelNotFoundError,
    ModelNotReadyError,
    PredictionFailedError,
)
from bigpickle.loading import ModelRegistry, describe, heap
from bigpickle.observability import MetricUnit, logger, metrics
from bigpickle.serving.validation import (
    RequestLimits,
    RequestValidator,
    body_bytes,
    parse_predict_request,
)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": {"code": code, "message": message}},
        headers=headers,
    )


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> APIGatewayHttpResolver:
    settings = settings or Settings.from_env()
    registry = registry or ModelRegistry.from_settings(settings)
    heap.tune_for_requests()
    app = APIGatewayHttpResolver(serializer=_dumps)
    validator = RequestValidator(RequestLimits.from_settings(settings))  # also the served OpenAPI document

    def default_model() -> str:
        if not settings.model_name:
            raise ModelNotFoundError("MODEL_NAME is not set for this function; call /v1/models/{name}:predict")
        return settings.model_name

    def predict(name: str) -> dict[str, Any]:
        event = app.current_event
        raw = body_bytes(event.body, event.is_base64_encoded, event.get_header_value("content-encoding"))
        body = validator.parse(raw)
        loaded = registry.get(name)
        request = parse_predict_request(body, loaded.model)
        started = time.perf_counter()
        try:
            predictions = loaded.model.predict(request.inputs)
            probabilities = loaded.model.predict_proba(request.inputs) if request.probabilities else None
        except (ValueError, TypeError) as exc:
            raise BadRequestError(f"the model rejected the input: {exc}") from None
        except Exception as exc:
            logger.exception("model raised inside predict", extra={"model": name})
            raise PredictionFailedError(f"model {name!r} failed to predict: {type(exc).__name__}: {exc}") from exc
        metrics.add_metric(
            name="PredictLatency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1000
        )
        # The request's size and shape (never its body) ride in the metrics line this invocation prints
        # anyway: one structured line per request, where a separate log line cost ~0.4 ms of a 1 ms budget.
        for key, value in (
            ("model", name),
            ("version", loaded.manifest.version),
            ("rows", request.rows),
            ("request_bytes", len(raw)),
        ):
            metrics.add_metadata(key=key, value=value)
        answer: dict[str, Any] = {
            "predictions": predictions,
            "model_name": name,
            "model_version": loaded.manifest.version,
        }
        if probabilities is not None:
            answer["probabilities"] = probabilities
            answer["classes"] = loaded.model.classes_
        return answer

    @app.post("/v1/models/<name>:predict")
    def predict_named(name: str) -> dict[str, Any]:
        return predict(name)

    @app.post("/predict")
    def predict_default() -> dict[str, Any]:
        return predict(default_model())

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return registry.list_models()

    @app.get("/v1/models/<name>")
    def model_metadata(name: str) -> dict[str, Any]:
        return describe(registry.get(name))

    @app.get("/openapi.json")
    def openapi() -> dict[str, Any]:
        return validator.document

    @app.get("/health")
    def health() -> dict[str, Any]:
        # Health speaks for the default model: anything short of servable is a 503, so whatever probes it
        # waits and retries instead of sending traffic.
        if not settings.model_name:
            raise ModelNotReadyError("MODEL_NAME is not set, so there is no default model to report on")
        name = settings.model_name
        state, version = registry.state(name)
        if state == "ready":
            return {"status": "ready", "model": name, "version": version}
        if state == "loading":
            raise ModelNotReadyError(f"model {name!r} version {version!r} is loading", retry_after_seconds=5)
        try:
            manifest = registry.store.read_manifest(name)
        except ModelNotFoundError as exc:
            raise ModelNotReadyError(f"no model is staged yet: {exc.message}", retry_after_seconds=30) from None
        if not registry.store.model_path(manifest).is_file():
            raise ModelNotReadyError(f"model {name!r} version {manifest.version!r} has no model file; re-stage it")
        return {"status": "loadable", "model": name, "version": manifest.version}

    @app.exception_handler(BigPickleError)
    def handle_known(exc: BigPickleError) -> Response:
        if exc.status >= 500:
            logger.error("request failed", extra={"code": exc.code, "error": exc.message})
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.not_found
    def handle_not_found(_exc: Exception) -> Response:
        event = app.current_event
        return error_response(404, "route_not_found", f"no route for {event.http_method} {event.path}")

    @app.exception_handler(Exception)
    def handle_unexpected(_exc: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; the request id is in the function's logs")

    return app

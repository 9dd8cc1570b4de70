"""HTTP API routes (KServe V1 / TF Serving style) on the Powertools HTTP API resolver.

`create_app` is the route table: each path names the `Routes` method that answers it. Errors are raised as
typed exceptions (bigpickle.errors) and turned into JSON in one place (`handle_known`).
"""

from __future__ import annotations

import re
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
from bigpickle.loading import ModelRegistry, heap
from bigpickle.observability import MetricUnit, logger, metrics
from bigpickle.serving.metadata import describe
from bigpickle.serving.tabular import columns_of
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


def declared_methods(document: dict[str, Any]) -> list[tuple[re.Pattern[str], list[str]]]:
    """Each path of the OpenAPI document as a pattern, with its methods. A parameter ({name}) holds no '/' and
    no ':' (no model name does), so /v1/models/x:predict is the predict path, not the metadata one."""
    return [
        (
            re.compile("[^/:]+".join(re.escape(piece) for piece in re.split(r"\{[^}]+\}", path))),
            sorted(method.upper() for method in operations),
        )
        for path, operations in document["paths"].items()
    ]


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> APIGatewayHttpResolver:
    settings = settings or Settings.from_env()
    registry = registry or ModelRegistry.from_settings(settings)
    heap.tune_for_requests()
    app = APIGatewayHttpResolver(serializer=_dumps)
    routes = Routes(app, settings, registry, RequestValidator(RequestLimits.from_settings(settings)))
    app.post("/v1/models/<name>:predict")(routes.predict_named)
    app.post("/predict")(routes.predict_default)
    # Registered before the metadata route, which would take "<name>:predict" for a model name.
    app.get("/v1/models/<name>:predict")(routes.get_on_predict)
    app.get("/v1/models")(routes.list_models)
    app.get("/v1/models/<name>")(routes.model_metadata)
    app.get("/openapi.json")(routes.openapi)
    app.get("/health")(routes.health)
    app.not_found(routes.not_found)
    app.exception_handler(BigPickleError)(handle_known)
    app.exception_handler(Exception)(handle_unexpected)
    return app


class Routes:
    """The answer to each route of one app; `create_app` maps the paths to these methods."""

    def __init__(
        self, app: APIGatewayHttpResolver, settings: Settings, registry: ModelRegistry, validator: RequestValidator
    ) -> None:
        self.app = app
        self.settings = settings
        self.registry = registry
        self.validator = validator  # also the served OpenAPI document
        self.known_paths = declared_methods(validator.document)

    def predict_named(self, name: str) -> dict[str, Any]:
        return self.predict(name)

    def predict_default(self) -> dict[str, Any]:
        return self.predict(self.default_model())

    def get_on_predict(self, name: str) -> Response:
        return self.method_not_allowed_or_not_found()

    def list_models(self) -> dict[str, Any]:
        return self.registry.list_models()

    def model_metadata(self, name: str) -> dict[str, Any]:
        loaded = self.registry.get(name)
        features = columns_of(loaded.model, loaded.manifest.features).features
        return {**describe(loaded), "features": [feature.as_dict() for feature in features]}

    def openapi(self) -> dict[str, Any]:
        return self.validator.document

    def health(self) -> dict[str, Any]:
        # Health speaks for the default model: anything short of servable is a 503, so whatever probes it
        # waits and retries instead of sending traffic.
        if not self.settings.model_name:
            raise ModelNotReadyError("MODEL_NAME is not set, so there is no default model to report on")
        name = self.settings.model_name
        state, version = self.registry.state(name)
        if state == "ready":
            return {"status": "ready", "model": name, "version": version}
        if state == "loading":
            raise ModelNotReadyError(f"model {name!r} version {version!r} is loading", retry_after_seconds=5)
        try:
            manifest, has_file = self.registry.published(name)
        except ModelNotFoundError as exc:
            raise ModelNotReadyError(f"no model is staged yet: {exc.message}", retry_after_seconds=30) from None
        if not has_file:
            raise ModelNotReadyError(f"model {name!r} version {manifest.version!r} has no model file; re-stage it")
        return {"status": "loadable", "model": name, "version": manifest.version}

    def not_found(self, _exc: Exception) -> Response:
        return self.method_not_allowed_or_not_found()

    def default_model(self) -> str:
        if not self.settings.model_name:
            raise ModelNotFoundError("MODEL_NAME is not set for this function; call /v1/models/{name}:predict")
        return self.settings.model_name

    def predict(self, name: str) -> dict[str, Any]:
        event = self.app.current_event
        raw = body_bytes(event.body, event.is_base64_encoded, event.get_header_value("content-encoding"))
        body = self.validator.parse(raw)
        loaded = self.registry.get(name)
        request = parse_predict_request(body, loaded.model, loaded.manifest.features)
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

    def method_not_allowed_or_not_found(self) -> Response:
        """405 with the methods the document declares when the path is one of the API's, else 404."""
        event = self.app.current_event
        allowed = sorted({m for path, methods in self.known_paths if path.fullmatch(event.path) for m in methods})
        if allowed:
            return error_response(
                405,
                "method_not_allowed",
                f"{event.http_method} is not allowed on {event.path}; it answers {', '.join(allowed)}",
                {"Allow": ", ".join(allowed)},
            )
        return error_response(404, "route_not_found", f"no route for {event.http_method} {event.path}")


def handle_known(exc: BigPickleError) -> Response:
    if exc.status >= 500:
        logger.error("request failed", extra={"code": exc.code, "error": exc.message})
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def handle_unexpected(_exc: Exception) -> Response:
    logger.exception("unhandled error")
    return error_response(500, "internal_error", "internal error; the request id is in the function's logs")

"""HTTP API routes (KServe V1 / TF Serving style) on the Powertools HTTP API resolver.

`create_app` is the route table: each path names the `Routes` method that answers it. Errors are raised as
typed exceptions (bigpickle.errors) and turned into JSON in one place (`handle_known`).
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
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


# Array kinds orjson writes itself (bool, int, uint, float): such an array, C-ordered in native byte order, is
# handed over as it is; that is the numeric fast path.
_NUMPY_NATIVE_KINDS = frozenset("biuf")
_JSON_LEAVES = (str, int, float, bool, type(None))


def jsonable(value: Any, what: str) -> Any:
    """A model's output (`what`: predictions, probabilities, classes) as something `_dumps` writes, whatever the
    model type: numeric arrays of any order and byte order, object or string arrays (class labels), numpy
    scalars, sparse matrices, pandas objects, and lists of these (one per output). Anything else (complex
    numbers, bytes, arbitrary objects) is a PredictionFailedError naming it, raised inside the route so it is
    answered as JSON instead of failing the invocation."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in _NUMPY_NATIVE_KINDS:
            if value.ndim and value.flags.c_contiguous and value.dtype.isnative:
                return value
            return value.item() if not value.ndim else np.ascontiguousarray(value, value.dtype.newbyteorder("="))
        return jsonable(value.tolist(), what)
    if isinstance(value, (list, tuple)):
        return [jsonable(item, what) for item in value]
    if isinstance(value, np.generic):
        return jsonable(value.item(), what)
    if isinstance(value, _JSON_LEAVES):
        return value
    if hasattr(value, "toarray"):  # a scipy sparse matrix or array
        return jsonable(value.toarray(), what)
    if hasattr(value, "to_numpy"):  # a pandas Series or DataFrame
        return jsonable(value.to_numpy(), what)
    raise PredictionFailedError(
        f"the model answered {what} holding {type(value).__name__} values, which have no JSON form"
    )


def probabilities_per_output(model: Any, probabilities: Any) -> tuple[Any, Any]:
    """`predict_proba` and the classes in the documented shape (docs/api.md): as the model gives them for one
    output; for several outputs (a list `classes_`), one [row][class] list per output and one class list per
    output. A multilabel model's (n_rows, n_outputs) array of positive-class probabilities (scikit-learn's other
    multilabel form, e.g. ClassifierChain) becomes that per-output form; any other shape is a 400."""
    classes = getattr(model, "classes_", None)  # a mixture model gives probabilities without classes
    if not isinstance(classes, list):
        return jsonable(probabilities, "probabilities"), jsonable(classes, "classes")
    outputs = len(classes)
    if isinstance(probabilities, list) and len(probabilities) == outputs:
        per_output = probabilities
    elif (
        isinstance(probabilities, np.ndarray)
        and probabilities.ndim == 2
        and probabilities.shape[1] == outputs
        and all(len(labels) == 2 for labels in classes)
    ):
        per_output = [np.column_stack([1 - positive, positive]) for positive in probabilities.T]
    else:
        shape = getattr(probabilities, "shape", None) or f"a {type(probabilities).__name__}"
        raise BadRequestError(
            f"{type(model).__name__} gives probabilities as {shape}, which has no per-output form for its "
            f'{outputs} outputs; omit "probabilities"'
        )
    return jsonable(per_output, "probabilities"), jsonable(classes, "classes")


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
            raise ModelNotReadyError(f"model {name!r} version {version!r} is loading", retry_after_seconds=1)
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
        # anyway: one structured line per request; a separate log line cost a large share of the per-request
        # budget (benchmarks/results/README.md).
        for key, value in (
            ("model", name),
            ("version", loaded.manifest.version),
            ("rows", request.rows),
            ("request_bytes", len(raw)),
        ):
            metrics.add_metadata(key=key, value=value)
        answer: dict[str, Any] = {
            "predictions": jsonable(predictions, "predictions"),
            "model_name": name,
            "model_version": loaded.manifest.version,
        }
        if probabilities is not None:
            answer["probabilities"], answer["classes"] = probabilities_per_output(loaded.model, probabilities)
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

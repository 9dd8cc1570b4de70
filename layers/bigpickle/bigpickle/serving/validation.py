"""Request bodies -> model inputs, or a 4xx that says exactly what is wrong.

`instances` is a list of rows: lists of cells (in training column order), objects keyed by feature
name (models fitted on named columns), or strings (text pipelines). A cell is a number, a boolean, null or
a string. Rows of numbers become a float64 matrix (the fast path); rows for a model with text, boolean,
integer or category columns, or fitted on a DataFrame, become the table it was fitted on (serving.tabular,
which checks every cell against its column). JSON null is the column's missing value (NaN for numbers).
NaN and Infinity literals are not JSON (the parser refuses them, 400), so a non-finite value can only
arrive as null.

Every predict body is checked, before any model is loaded, against the PredictRequest schema of the
OpenAPI document served at GET /openapi.json (serving/openapi.json with this deployment's limits filled
in): the same object is served and compiled into the validator.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import json
import math
import warnings
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import fastjsonschema
import numpy as np
import orjson
import simdjson

from bigpickle.config import Settings
from bigpickle.errors import BadRequestError, LimitExceededError, PayloadTooLargeError, UnsupportedMediaTypeError
from bigpickle.serving import tabular
from bigpickle.units import KiB

OPENAPI_FILE = Path(__file__).with_name("openapi.json")

# Bodies this big or bigger try simdjson first. With the cold caches a predict leaves, the general path is
# faster below it (the threshold's figures: benchmarks/results/README.md).
SIMDJSON_MIN_BYTES = 16 * KiB

# Rows keyed by name are reordered into training order before predicting; sklearn's warning about a
# plain array reaching a model fitted on named columns is then noise.
warnings.filterwarnings("ignore", message="X does not have valid feature names")


@dataclass(frozen=True)
class PredictBody:
    """A predict body the schema accepts."""

    instances: np.ndarray | list[Any]  # a numeric array when every cell is a number, boolean or null; else JSON rows
    probabilities: bool
    body: bytes = b""  # the JSON itself: a model with typed columns reads a numeric body's cells as sent

    def rows(self) -> list[Any]:
        """The instances as JSON rows (a numeric matrix's booleans are 1/0 in it: a typed column needs them)."""
        return self.instances if isinstance(self.instances, list) else orjson.loads(self.body)["instances"]


@dataclass(frozen=True)
class PredictRequest:
    inputs: Any  # 2-D float64 array, the model's table (DataFrame or object array), or a list of str for text
    rows: int
    probabilities: bool


def body_bytes(body: str | None, is_base64_encoded: bool, content_encoding: str | None = None) -> bytes:
    """The raw request body; API Gateway base64-encodes bodies it does not treat as text. Compressed bodies
    are refused (415), not decoded: a small compressed body could expand past MAX_BODY_BYTES in memory."""
    if content_encoding and content_encoding.strip().lower() != "identity":
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {content_encoding!r} is not supported: send the JSON body uncompressed "
            "(no Content-Encoding header)"
        )
    if not body:
        return b""
    if not is_base64_encoded:
        return body.encode()
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("request body is marked base64-encoded but is not valid base64") from None


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int
    max_instances: int
    max_row_width: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(settings.max_body_bytes, settings.max_instances, settings.max_row_width)


@functools.cache
def _openapi_template() -> dict[str, Any]:
    return json.loads(OPENAPI_FILE.read_text())


def openapi_document(limits: RequestLimits) -> dict[str, Any]:
    """The OpenAPI 3.1 document with this deployment's limits written into the request schema."""
    document = copy.deepcopy(_openapi_template())
    instances = document["components"]["schemas"]["PredictRequest"]["properties"]["instances"]
    instances["maxItems"] = limits.max_instances
    row, named_row, _text = instances["items"]["anyOf"]
    row["maxItems"] = named_row["maxProperties"] = limits.max_row_width
    document["info"]["x-limits"] = {
        "MAX_BODY_BYTES": limits.max_body_bytes,
        "MAX_INSTANCES": limits.max_instances,
        "MAX_ROW_WIDTH": limits.max_row_width,
    }
    return document


class RequestValidator:
    """Checks a parsed predict body: the envelope, the limits (413 naming the setting), then the schema."""

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.document = openapi_document(limits)
        components = self.document["components"]
        request = {"$ref": "#/components/schemas/PredictRequest", "components": components}
        branches = components["schemas"]["PredictRequest"]["properties"]["instances"]["items"]["anyOf"]
        self._validate = fastjsonschema.compile(request)
        # one validator per row shape, to say which cell is wrong when a row matches none of them
        self._rows = {
            kind: fastjsonschema.compile({**branch, "components": components})
            for kind, branch in zip((list, dict, str), branches, strict=True)
        }

    def parse(self, body: bytes) -> PredictBody:
        """The predict body, or a 4xx that says what is wrong: its size, its JSON, the envelope, the limits (413
        naming the setting), then the schema."""
        if len(body) > self.limits.max_body_bytes:
            raise PayloadTooLargeError(
                f"request body is {len(body)} bytes; the limit is {self.limits.max_body_bytes} bytes (MAX_BODY_BYTES)"
            )
        if not body:
            raise BadRequestError('request body is empty; send JSON like {"instances": [[1.0, 2.0]]}')
        parsed = _numbers_only(body) if len(body) >= SIMDJSON_MIN_BYTES else None
        if parsed is not None:
            self._check_limits(*parsed.instances.shape)
            return parsed
        payload = _loads(body)
        _refuse_repeated_keys(body)
        return self._check(payload, body)

    def _check(self, payload: Any, body: bytes) -> PredictBody:
        if not isinstance(payload, dict) or "instances" not in payload:
            raise BadRequestError('request body must be a JSON object with an "instances" list')
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise BadRequestError('"instances" must be a non-empty list of rows')
        probabilities = payload.get("probabilities", False)
        if not isinstance(probabilities, bool):
            raise BadRequestError('"probabilities" must be true or false')
        matrix = _numeric_matrix(payload, body)
        if matrix is not None:
            self._check_limits(*matrix.shape)
            return PredictBody(matrix, probabilities, body)
        self._check_limits(
            len(instances), max((len(row) for row in instances if isinstance(row, list | dict)), default=0)
        )
        try:
            self._validate(payload)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise BadRequestError(self._explain(payload, exc)) from None
        return PredictBody(instances, probabilities, body)

    def _check_limits(self, rows: int, widest: int) -> None:
        if rows > self.limits.max_instances:
            raise LimitExceededError(
                f"{rows} instances; the limit is {self.limits.max_instances} (MAX_INSTANCES)",
                code="too_many_instances",
            )
        if widest > self.limits.max_row_width:
            raise LimitExceededError(
                f"a row has {widest} values; the limit is {self.limits.max_row_width} (MAX_ROW_WIDTH)",
                code="row_too_wide",
            )

    def _explain(self, payload: Any, exc: fastjsonschema.JsonSchemaValueException) -> str:
        path = exc.path or []
        if exc.rule == "anyOf" and len(path) == 3 and path[1] == "instances":
            index = int(path[2])
            row = payload["instances"][index]
            validate = self._rows.get(type(row))
            if validate is None:
                return f"instances[{index}] must be a row (a list of numbers), an object keyed by name, or a string"
            try:
                validate(row)
            except fastjsonschema.JsonSchemaValueException as inner:
                return inner.message.replace("data", f"instances[{index}]", 1)
        return exc.message.replace("data.", "", 1).replace("data ", "request body ", 1)


_ENVELOPE_KEYS = frozenset({"instances", "probabilities"})


class _Members(list):  # type: ignore[type-arg]
    """A JSON object's (key, value) pairs in order, repeats kept."""


def _refuse_repeated_keys(body: bytes) -> None:
    """400 when the body's object repeats a key, as the fast path refuses it (JSON parsers let the last one
    win). Only bodies that spell a key twice, or escape characters, are parsed a second time."""
    if body.count(b'"instances"') < 2 and body.count(b'"probabilities"') < 2 and b"\\u" not in body:
        return
    try:
        members = json.loads(body, object_pairs_hook=_Members)
    except (ValueError, RecursionError):  # nested deeper than json allows: orjson has accepted it
        return
    keys = [key for key, _ in members] if isinstance(members, _Members) else []
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise BadRequestError(f"request body repeats the key {repeated[0]!r}; send each key once")


def _numbers_only(body: bytes) -> PredictBody | None:
    """The common body, rows of JSON numbers of one length, parsed by simdjson straight into a float64 matrix.

    No Python object is made per cell, which makes it several times faster than orjson's lists, their
    conversion and freeing them (benchmarks/results/README.md). Both parsers follow RFC 8259 strictly and
    round numbers correctly, so the matrix is the one the general path builds (tested against it). Any
    other body returns None for the general path to accept or explain: nulls, booleans, text, ragged or
    nested rows, integers beyond 64 bits, repeated or unknown keys, invalid JSON."""
    try:
        document = simdjson.Parser().parse(body)
        if not isinstance(document, simdjson.Object):
            return None
        keys = list(document.keys())
        if "instances" not in keys or len(set(keys)) != len(keys) or not _ENVELOPE_KEYS.issuperset(keys):
            return None
        probabilities = document.get("probabilities", False)
        rows = document["instances"]
        if not isinstance(probabilities, bool) or not isinstance(rows, simdjson.Array) or not rows:
            return None
        # first what fails fastest on other bodies: a null, boolean, text or object cell stops the copy
        cells = np.frombuffer(rows.as_buffer(of_type="d"), dtype=np.float64)
        width = len(rows[0]) if isinstance(rows[0], simdjson.Array) else 0
        if not width or not all(isinstance(row, simdjson.Array) and len(row) == width for row in rows):
            return None
        # as_buffer flattens nested lists. Every cell being a number, the keys are the body's only strings,
        # so a "[" opens either the list of rows or a row: one more than the rows means no cell is a list.
        if body.count(b"[") != len(rows) + 1:
            return None
    except (ValueError, TypeError, RuntimeError):  # not JSON, a cell that is not a number, an integer over 64 bits
        return None
    return PredictBody(cells.reshape(len(rows), width), probabilities, body)


def _numeric_matrix(payload: dict[str, Any], body: bytes) -> np.ndarray | None:
    """Rows of numbers, booleans and nulls (missing values), equal length, satisfy the schema by construction:
    numpy proves it in one C pass, where the compiled schema costs a Python call per cell.

    When the body's only strings are its keys, every cell is a number, a boolean or null, and a float64
    conversion maps those as the schema does (true 1, false 0, null NaN), a third faster than letting numpy
    discover the type. A string anywhere would be cast silently ("1.5" -> 1.5), so such a body takes the
    path that finds the type and refuses text."""
    if not _ENVELOPE_KEYS.issuperset(payload):
        return None
    try:
        if _strings_at_most(body, len(payload)):
            array = np.array(payload["instances"], dtype=np.float64)
        else:
            array = np.asarray(payload["instances"])
    except (ValueError, TypeError, OverflowError):
        return None
    return array if array.ndim == 2 and array.shape[1] >= 1 and array.dtype.kind in "biuf" else None


def _strings_at_most(body: bytes, count: int) -> bool:
    """Whether the JSON `body` holds at most `count` strings (keys included): each has two quotes, and no
    other JSON token has one. `find` runs at memchr speed, `count` several times slower."""
    position = -1
    for _ in range(2 * count + 1):
        position = body.find(b'"', position + 1)
        if position < 0:
            return True
    return False


def parse_predict_request(
    body: PredictBody, model: Any, recorded_features: list[dict[str, Any]] | None = None
) -> PredictRequest:
    """Model-specific checks on a body the RequestValidator accepted. `recorded_features`: the manifest's
    `features`, when staging recorded them (else they are learnt from the model)."""
    if body.probabilities and not hasattr(model, "predict_proba"):
        raise BadRequestError(f'{type(model).__name__} does not give probabilities; omit "probabilities"')
    inputs = _to_inputs(body, model, recorded_features)
    return PredictRequest(inputs=inputs, rows=len(body.instances), probabilities=body.probabilities)


def _to_inputs(body: PredictBody, model: Any, recorded_features: list[dict[str, Any]] | None) -> Any:
    instances = body.instances
    if not (isinstance(instances, list) and isinstance(instances[0], str)):
        columns = tabular.columns_of(model, recorded_features)
        if columns.features and (columns.frame or columns.typed or isinstance(instances, list)):
            if isinstance(instances, np.ndarray) and not columns.typed:
                return tabular.from_matrix(instances, columns)
            return tabular.from_rows(body.rows(), columns)
    if isinstance(instances, np.ndarray):
        return _numeric_rows(instances, model)
    first = instances[0]
    if isinstance(first, dict):  # models fitted on DataFrames took the table path above
        raise BadRequestError("model was not fitted with feature names; send each instance as a list of values")
    if isinstance(first, str):
        if not all(isinstance(row, str) for row in instances):
            raise BadRequestError('"instances" mixes strings with other values; send all strings or all rows')
        if hasattr(model, "n_features_in_"):
            raise BadRequestError(f"model expects rows of {model.n_features_in_} numbers, got text")
        return instances
    return _numeric_rows(instances, model)


def _numeric_rows(instances: np.ndarray | list[Any], model: Any) -> np.ndarray:
    try:
        array = np.asarray(instances)
    except ValueError:
        raise BadRequestError("every instance must be a list of the same length") from None
    if array.ndim != 2:
        raise BadRequestError("every instance must be a list of numbers (a row), not a single value")
    if array.dtype.kind in "iuf":
        array = array.astype(np.float64, copy=False)
    else:  # nulls, booleans or text somewhere: find and name the first bad cell
        array = np.array(
            [[_cell(v, i, j) for j, v in enumerate(row)] for i, row in enumerate(instances)], dtype=np.float64
        )
    expected = getattr(model, "n_features_in_", None)
    if expected is not None and array.shape[1] != expected:
        raise BadRequestError(f"model expects {expected} features per instance, got {array.shape[1]}")
    return array


def _cell(value: Any, row: int, column: int) -> float:
    if value is None:
        return math.nan
    if not isinstance(value, Real):  # booleans are Real: they count as 0/1, as the schema says
        raise BadRequestError(f"instances[{row}]: column {column} got {value!r}; expected a number")
    return float(value)

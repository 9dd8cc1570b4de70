"""Request bodies -> model inputs, or a 4xx that says exactly what is wrong.

`instances` is a list of rows: lists of numbers (in training column order), objects keyed by feature
name (models fitted on named columns), or strings (text pipelines). JSON null becomes NaN, which models
that handle missing values accept and the others reject with a 400.
"""

from __future__ import annotations

import base64
import binascii
import math
import warnings
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import orjson

from bigpickle.errors import BadRequestError, PayloadTooLargeError

# Rows keyed by name are reordered into training order before predicting; sklearn's warning about a
# plain array reaching a model fitted on named columns is then noise.
warnings.filterwarnings("ignore", message="X does not have valid feature names")


@dataclass(frozen=True)
class PredictRequest:
    inputs: Any  # 2-D float64 array, or a list of str for text models
    rows: int
    probabilities: bool


def body_bytes(body: str | None, is_base64_encoded: bool) -> bytes:
    """The raw request body; API Gateway base64-encodes bodies it does not treat as text."""
    if not body:
        return b""
    if not is_base64_encoded:
        return body.encode()
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("request body is marked base64-encoded but is not valid base64") from None


def parse_json_body(body: bytes, max_bytes: int) -> Any:
    if len(body) > max_bytes:
        raise PayloadTooLargeError(f"request body is {len(body)} bytes; the limit is {max_bytes} bytes")
    if not body:
        raise BadRequestError('request body is empty; send JSON like {"instances": [[1.0, 2.0]]}')
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None


def parse_predict_request(payload: Any, model: Any) -> PredictRequest:
    if not isinstance(payload, dict) or "instances" not in payload:
        raise BadRequestError('request body must be a JSON object with an "instances" list')
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequestError('"instances" must be a non-empty list of rows')
    probabilities = payload.get("probabilities", False)
    if not isinstance(probabilities, bool):
        raise BadRequestError('"probabilities" must be true or false')
    if probabilities and not hasattr(model, "predict_proba"):
        raise BadRequestError(f'{type(model).__name__} does not give probabilities; omit "probabilities"')
    return PredictRequest(inputs=_to_inputs(instances, model), rows=len(instances), probabilities=probabilities)


def _to_inputs(instances: list[Any], model: Any) -> Any:
    first = instances[0]
    if isinstance(first, dict):
        return _named_rows(instances, model)
    if isinstance(first, str):
        if not all(isinstance(row, str) for row in instances):
            raise BadRequestError('"instances" mixes strings with other values; send all strings or all rows')
        if hasattr(model, "n_features_in_"):
            raise BadRequestError(f"model expects rows of {model.n_features_in_} numbers, got text")
        return instances
    return _numeric_rows(instances, model)


def _numeric_rows(instances: list[Any], model: Any) -> np.ndarray:
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
    if isinstance(value, bool) or not isinstance(value, Real):
        raise BadRequestError(f"instances[{row}][{column}] is {value!r}; the model takes numbers")
    return float(value)


def _named_rows(instances: list[Any], model: Any) -> np.ndarray:
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise BadRequestError("model was not fitted with feature names; send each instance as a list of numbers")
    names = [str(n) for n in names]
    rows = []
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise BadRequestError(f"instances[{i}] is not an object; send all rows keyed by feature name or none")
        missing = [n for n in names if n not in row]
        unknown = sorted(set(row) - set(names))
        if missing or unknown:
            raise BadRequestError(f"instances[{i}]: missing features {missing}, unknown features {unknown}")
        rows.append([_cell(row[n], i, j) for j, n in enumerate(names)])
    return np.array(rows, dtype=np.float64)

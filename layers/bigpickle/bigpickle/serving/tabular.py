"""Rows of a predict body -> the input the model was fitted on, column by column as its features describe them.

A model fitted on a DataFrame with typed columns (text, integer, boolean, category) or picking columns by
name gets a pandas DataFrame with its training columns and their training dtypes; one fitted on an array
with typed columns gets an object array in column order; a model whose columns all take numbers gets a
float64 matrix in training column order. Each cell is checked against its column: a cell of the wrong
type, a row without a feature or with one the model does not know, or a category the model's encoder would
refuse is a 400 naming the feature, what it got and what it expected. Nothing is coerced: null becomes the
column's missing value (NaN for numbers, None or NaN for text, as the model saw in training) and booleans
count as 0/1 in number columns, as the OpenAPI document says.
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from bigpickle.errors import BadRequestError
from bigpickle.features import REJECTS, Feature, infer_features, selects_columns_by_name

_EXPECTED = {
    "number": "a number (or true/false as 1/0)",
    "integer": "an integer (64-bit)",
    "boolean": "true or false",
    "string": "a string",
}
MAX_LISTED = 20  # an error lists at most this many names or categories
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class ModelColumns:
    """A model's input columns and the input they must be handed as."""

    features: list[Feature]
    # A DataFrame: the model was fitted on one and picks columns by name, or has typed columns to keep.
    frame: bool
    typed: bool  # some column takes something other than numbers: a float64 matrix cannot carry it

    @property
    def named(self) -> bool:
        return bool(self.features) and self.features[0].name is not None


_columns_by_model: weakref.WeakKeyDictionary[Any, ModelColumns] = weakref.WeakKeyDictionary()


def columns_of(model: Any, recorded: list[dict[str, Any]] | None = None) -> ModelColumns:
    """The model's input columns: as staging recorded them in the manifest, else learnt from the model; once."""
    try:
        return _columns_by_model[model]
    except KeyError:
        pass
    except TypeError:  # an object without weak references: learn it every time (cheap: no data is read)
        return _learn(model, recorded)
    columns = _columns_by_model[model] = _learn(model, recorded)
    return columns


def _learn(model: Any, recorded: list[dict[str, Any]] | None) -> ModelColumns:
    features = [Feature.from_dict(item) for item in recorded] if recorded is not None else infer_features(model)
    typed = any(feature.type != "number" for feature in features)
    # A numeric model fitted on a DataFrame answers the same on an array, and sooner (benchmarks/results/README.md).
    frame = hasattr(model, "feature_names_in_") and (typed or selects_columns_by_name(model))
    return ModelColumns(features, frame, typed)


def from_matrix(matrix: np.ndarray, columns: ModelColumns) -> Any:
    """A numeric body for a model that takes a DataFrame whose columns all take numbers."""
    _check_width(matrix.shape[1], columns.features, "instances[0]")
    import pandas as pd

    return pd.DataFrame(matrix, columns=[feature.name for feature in columns.features], copy=False)


def from_rows(rows: list[Any], columns: ModelColumns) -> Any:
    """JSON rows (lists in training column order, or objects keyed by feature name) -> the model's input:
    a DataFrame, an object array in column order, or a float64 matrix when every column takes numbers."""
    features = columns.features
    cells = _columns(rows, features, columns.named)
    converted = [_convert(column, feature) for column, feature in zip(cells, features, strict=True)]
    if columns.frame:
        import pandas as pd

        return pd.DataFrame(
            {feature.name: _as_pandas(values, feature) for values, feature in zip(converted, features, strict=True)}
        )
    if not columns.typed:
        return np.column_stack(converted)
    table = np.empty((len(rows), len(features)), dtype=object)
    for j, values in enumerate(converted):
        table[:, j] = values
    return table


def _columns(rows: list[Any], features: list[Feature], named: bool) -> list[list[Any]]:
    """The rows' cells column by column, after checking each row has exactly the model's features."""
    names = [feature.name for feature in features]
    if isinstance(rows[0], dict):
        if not named:
            raise BadRequestError(
                f"the model was fitted on an array without column names; send each instance as a list of "
                f"{len(features)} values in training column order"
            )
        known = set(names)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadRequestError(f"instances[{i}] is not an object; send all rows keyed by feature name or none")
            missing = [name for name in names if name not in row]
            unknown = sorted(set(row) - known)
            if missing or unknown:
                raise BadRequestError(
                    f"instances[{i}]: missing features {_listed(missing)}, unknown features {_listed(unknown)}; "
                    f"the model takes {_listed(names)}"
                )
        return [[row[name] for row in rows] for name in names]
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise BadRequestError(f"instances[{i}] is not a list; send all rows as lists or all keyed by name")
        _check_width(len(row), features, f"instances[{i}]")
    return [[row[j] for row in rows] for j in range(len(features))]


def _check_width(width: int, features: list[Feature], where: str) -> None:
    if width != len(features):
        shown = f" {_listed([f.name for f in features])}" if features and features[0].name is not None else ""
        raise BadRequestError(
            f"{where} has {width} values; the model takes {len(features)} features{shown} in this order"
        )


def _convert(cells: list[Any], feature: Feature) -> np.ndarray:
    """One column's cells as the array of its training dtype; 400 on the first cell it cannot take."""
    for i, cell in enumerate(cells):
        if cell is None:
            if not feature.nullable:
                raise _bad_cell(i, feature, cell, "its encoder refuses missing values")
        elif not _fits(cell, feature.type):
            raise _bad_cell(i, feature, cell)
    if feature.unknown == REJECTS:
        allowed = set(feature.categories or ())
        for i, cell in enumerate(cells):
            if cell is not None and cell not in allowed:
                raise _bad_cell(i, feature, cell, "the model's encoder refuses categories it did not see in training")
    missing = None if feature.missing == "None" else math.nan
    if feature.type == "number":
        return np.array([math.nan if cell is None else float(cell) for cell in cells], dtype=np.float64)
    if feature.type == "integer":
        if any(cell is None for cell in cells):  # as pandas does: an integer column with a gap is float64
            return np.array([math.nan if cell is None else float(cell) for cell in cells], dtype=np.float64)
        return np.array([int(cell) for cell in cells], dtype=np.int64)
    if feature.type == "boolean" and all(cell is not None for cell in cells):
        return np.array(cells, dtype=bool)
    column = np.empty(len(cells), dtype=object)
    column[:] = [missing if cell is None else cell for cell in cells]
    return column


def _fits(cell: Any, cell_type: str) -> bool:
    if cell_type == "any":
        return True
    if cell_type == "string":
        return isinstance(cell, str)
    if cell_type == "boolean":
        return isinstance(cell, bool)
    if cell_type == "integer":
        return (
            not isinstance(cell, bool)
            and isinstance(cell, Real)
            and float(cell).is_integer()
            and INT64_MIN <= cell <= INT64_MAX
        )
    return isinstance(cell, Real)  # number: booleans count as 0/1, as the OpenAPI document says


def _as_pandas(values: np.ndarray, feature: Feature) -> Any:
    import pandas as pd

    if feature.dtype == "category":
        known = list(feature.categories or ())
        # values outside the training categories stay what they are: the model's encoder decides about them
        unseen = {value for value in values.tolist() if isinstance(value, str | Real)}.difference(known)
        unseen = {value for value in unseen if not (isinstance(value, float) and math.isnan(value))}
        return pd.Categorical(values, categories=known + sorted(unseen, key=str))
    return pd.Series(values, dtype=values.dtype, copy=False)


def _bad_cell(row: int, feature: Feature, cell: Any, why: str | None = None) -> BadRequestError:
    got = "null" if cell is None else f"{json.dumps(cell)} ({_json_type(cell)})"
    expected = _EXPECTED.get(feature.type, "a value")
    if feature.unknown == REJECTS and feature.categories is not None:
        expected += f", one of {_listed(list(feature.categories), as_json=True)}"
    reason = f" ({why})" if why else ""
    return BadRequestError(f"instances[{row}]: feature {feature.label} got {got}; expected {expected}{reason}")


def _json_type(cell: Any) -> str:
    if isinstance(cell, bool):
        return "a boolean"
    if isinstance(cell, str):
        return "a string"
    if isinstance(cell, Real):
        return "a number"
    return "an array or object"


def _listed(values: list[Any], *, as_json: bool = False) -> str:
    """Names or categories for a message: the first MAX_LISTED, then how many more."""
    shown = values[:MAX_LISTED]
    more = f" and {len(values) - MAX_LISTED} more" if len(values) > MAX_LISTED else ""
    return (json.dumps(shown) if as_json else str(shown)) + more

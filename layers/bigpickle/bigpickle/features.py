"""What each input column of a fitted model is: its name, the JSON cell it takes and the dtype it had in training.

Learnt from the safely loaded model's own fitted attributes, never by running it: `feature_names_in_`
(the training columns), encoders' `categories_` (the values and their type), `SimpleImputer`'s fit dtype,
`HistGradientBoosting*`'s categorical mask (`categorical_features="from_dtype"` means pandas `category`
columns), text vectorizers (strings). A column nothing tells us about takes numbers, as every scikit-learn
estimator that is not an encoder does. `infer_features` is a pure function: the predict side calls it on
the model it loaded, a staging-side trial load may call it to record the result in the manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

# The JSON cell a column takes -> the dtype it is handed to the model as (unless the column is a category).
CELL_DTYPES = {"number": "float64", "integer": "int64", "boolean": "bool", "string": "object", "any": "object"}
# How an encoder treats a value outside its categories.
REJECTS, ACCEPTS = "error", "accepted"


@dataclass(frozen=True)
class Feature:
    """One input column of a model, as its request cells must be."""

    index: int  # position in training column order
    name: str | None  # the training column name; None for models fitted on arrays
    type: str  # the JSON cell: "number" | "integer" | "boolean" | "string" | "any" (a column the model drops)
    dtype: str  # what the model is handed: "float64" | "int64" | "bool" | "object" | "category"
    categories: tuple[Any, ...] | None = None  # the values the model's encoder learnt (nulls not listed)
    unknown: str | None = None  # REJECTS: a value outside `categories` is refused by the model's encoder
    missing: str = "NaN"  # "NaN" or "None": the missing value the model saw; null cells become it
    nullable: bool = True  # False: the model's encoder refuses a missing value in this column

    @property
    def label(self) -> str:
        return repr(self.name) if self.name is not None else f"column {self.index}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "type": self.type,
            "dtype": self.dtype,
            "categories": None if self.categories is None else list(self.categories),
            "unknown_categories": self.unknown,
            "missing_value": self.missing,
            "nullable": self.nullable,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Feature:
        categories = data.get("categories")
        return cls(
            index=data["index"],
            name=data["name"],
            type=data["type"],
            dtype=data["dtype"],
            categories=None if categories is None else tuple(categories),
            unknown=data.get("unknown_categories"),
            missing=data["missing_value"],
            nullable=data["nullable"],
        )


def infer_features(model: Any) -> list[Feature]:
    """Every input column of `model` in training order; [] for a model without a fixed column count (text)."""
    names = getattr(model, "feature_names_in_", None)
    count = len(names) if names is not None else getattr(model, "n_features_in_", None)
    if not isinstance(count, int):
        return []
    learnt: dict[int, _Column] = {}
    _visit(model, list(range(count)), learnt)
    return [
        learnt.get(i, _Column()).feature(i, None if names is None else str(names[i]))  # type: ignore[index]
        for i in range(count)
    ]


def recorded_features(model: Any) -> list[dict[str, Any]] | None:
    """What staging writes into the manifest's `features` (the trial load's probe): None when the columns
    cannot be learnt here, so the predict side learns them from the model it loads instead."""
    try:
        return [feature.as_dict() for feature in infer_features(model)]
    except Exception:  # a model this module does not understand still publishes; the predict side decides
        return None


def selects_columns_by_name(model: Any) -> bool:
    """Whether the model picks input columns by name somewhere (a ColumnTransformer fitted on a DataFrame with
    column names): such a model only works on a DataFrame. Others fitted on one answer the same on an array."""
    pending = [model]
    while pending:
        estimator = pending.pop()
        if estimator is None or isinstance(estimator, str):
            continue
        if hasattr(estimator, "transformers_"):
            if any(_names_columns(columns) for _, _, columns in estimator.transformers_):
                return True
            pending.extend(part for _, part, _ in estimator.transformers_)
        elif hasattr(estimator, "steps"):
            pending.extend(step for _, step in estimator.steps)
        elif hasattr(estimator, "transformer_list"):
            pending.extend(part for _, part in estimator.transformer_list)
        elif (inner := _wrapped(estimator)) is not None:
            pending.append(inner)
    return False


def _names_columns(columns: Any) -> bool:
    if isinstance(columns, str):
        return True
    if hasattr(columns, "dtype"):  # an array of names or a boolean mask
        return columns.dtype.kind in "OU"
    return isinstance(columns, list | tuple) and any(isinstance(column, str) for column in columns)


@dataclass(frozen=True)
class _Column:
    """What the estimators reading one column taught us; fields stay None until one does."""

    type: str | None = None
    category_dtype: bool = False
    categories: tuple[Any, ...] | None = None
    unknown: str | None = None
    missing: str | None = None
    imputed: bool = False  # an imputer before the encoder fills nulls: the encoder never sees them

    def merge(self, later: _Column) -> _Column:
        """This column as the next estimator in a pipeline adds to it (the first word on the type wins)."""
        return replace(
            self,
            type=self.type or later.type,
            category_dtype=self.category_dtype or later.category_dtype,
            categories=self.categories if self.categories is not None else later.categories,
            unknown=self.unknown or later.unknown,
            missing=self.missing or later.missing,
            imputed=self.imputed or later.imputed,
        )

    def feature(self, index: int, name: str | None) -> Feature:
        cell = self.type or "number"
        dtype = "category" if self.category_dtype else CELL_DTYPES[cell]
        missing = self.missing or ("NaN" if cell in ("number", "integer") else "None")
        unknown = None if self.categories is None else (self.unknown or ACCEPTS)
        # an encoder that refuses unknown values refuses a missing one it never saw, unless an imputer fills it
        nullable = self.imputed or self.missing is not None or unknown != REJECTS
        return Feature(index, name, cell, dtype, self.categories, unknown, missing, nullable)


def _visit(estimator: Any, positions: list[int], learnt: dict[int, _Column]) -> None:
    """Record what `estimator`, reading the model's columns `positions` in that order, tells about them."""
    if estimator is None or isinstance(estimator, str):  # "passthrough" / "drop" are handled by the caller
        return
    if hasattr(estimator, "transformers_"):  # ColumnTransformer
        _visit_column_transformer(estimator, positions, learnt)
    elif hasattr(estimator, "steps"):  # Pipeline: steps after a column-preserving one still see the columns
        for _, step in estimator.steps:
            if step is None or step == "passthrough":
                continue
            _visit(step, positions, learnt)
            if not _keeps_columns(step):
                break
    elif hasattr(estimator, "transformer_list"):  # FeatureUnion: every part reads every column
        for _, part in estimator.transformer_list:
            _visit(part, positions, learnt)
    elif hasattr(estimator, "is_categorical_") and hasattr(estimator, "_preprocessor"):
        _visit_hist_gradient_boosting(estimator, positions, learnt)
    elif (inner := _wrapped(estimator)) is not None:
        _visit(inner, positions, learnt)
    else:
        for offset, column in _own_columns(estimator).items():
            if offset < len(positions):
                position = positions[offset]
                learnt[position] = learnt.get(position, _Column()).merge(column)


def _visit_column_transformer(transformer: Any, positions: list[int], learnt: dict[int, _Column]) -> None:
    indices = getattr(transformer, "_transformer_to_input_indices", {})
    for name, part, _ in transformer.transformers_:
        selected = [positions[i] for i in indices.get(name, [])]
        if isinstance(part, str) and part == "drop":
            for position in selected:
                learnt.setdefault(position, _Column(type="any"))
        else:
            _visit(part, selected, learnt)


def _visit_hist_gradient_boosting(model: Any, positions: list[int], learnt: dict[int, _Column]) -> None:
    """Categorical columns are encoded by the model's own OrdinalEncoder; with `from_dtype` they were pandas
    `category` columns in training."""
    preprocessor = model._preprocessor
    if preprocessor is None:
        return
    from_dtype = isinstance(model.categorical_features, str) and model.categorical_features == "from_dtype"
    encoded: dict[int, _Column] = {}
    _visit(preprocessor, list(range(len(positions))), encoded)
    for offset, column in encoded.items():
        if model.is_categorical_[offset]:
            column = replace(column, category_dtype=from_dtype)
        learnt[positions[offset]] = learnt.get(positions[offset], _Column()).merge(column)


def _wrapped(estimator: Any) -> Any:
    """The model a meta-estimator refitted on all of its input columns: a search's best estimator, a target
    transformer's regressor, a calibrated classifier's first fitted classifier."""
    for attribute in ("best_estimator_", "regressor_"):
        if hasattr(estimator, attribute):
            return getattr(estimator, attribute)
    calibrated = getattr(estimator, "calibrated_classifiers_", None)
    return calibrated[0].estimator if calibrated else None


def _keeps_columns(step: Any) -> bool:
    """Whether a pipeline step hands on the columns it reads one for one (so the next step's view is theirs)."""
    return hasattr(step, "statistics_") and not getattr(step, "add_indicator", False)


def _own_columns(estimator: Any) -> dict[int, _Column]:
    """What a single estimator says about the columns it reads, by their offset in its input."""
    categories = getattr(estimator, "categories_", None)
    if isinstance(categories, list):  # OneHotEncoder, OrdinalEncoder, TargetEncoder
        unknown = REJECTS if getattr(estimator, "handle_unknown", None) == "error" else ACCEPTS
        return {offset: _encoded_column(values, unknown) for offset, values in enumerate(categories)}
    fit_dtype = getattr(estimator, "_fit_dtype", None)
    if hasattr(estimator, "statistics_") and fit_dtype is not None:  # SimpleImputer
        cell = _cell_of_kind(fit_dtype.kind) or "number"
        missing = "None" if estimator.missing_values is None else None
        column = _Column(type=cell, missing=missing, imputed=True)
        return dict.fromkeys(range(len(estimator.statistics_)), column)
    if hasattr(estimator, "build_analyzer"):  # CountVectorizer, TfidfVectorizer, HashingVectorizer on one column
        return {0: _Column(type="string")}
    return {}


def _encoded_column(values: Any, unknown: str) -> _Column:
    known = [value for value in values.tolist() if not _is_missing(value)]
    missing = next(("None" if value is None else "NaN" for value in values.tolist() if _is_missing(value)), None)
    cell = _cell_of_kind(values.dtype.kind)
    if cell == "string" and not all(isinstance(value, str) for value in known):
        cell = _uniform_cell(known)
    return _Column(type=cell, categories=tuple(known), unknown=unknown, missing=missing)


def _cell_of_kind(kind: str) -> str | None:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "number", "O": "string", "U": "string"}.get(kind)


def _uniform_cell(values: list[Any]) -> str:
    """The cell type of an object array's values when they are not all strings (numbers kept as objects)."""
    if all(isinstance(value, bool) for value in values):
        return "boolean"
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        return "integer"
    if all(isinstance(value, int | float) and not isinstance(value, bool) for value in values):
        return "number"
    return "any"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))

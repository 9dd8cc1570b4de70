"""Real tabular pipelines, each fitted on a DataFrame with a string column (one on a numpy object array), and the
rows to ask them about: the shapes of production models that issue 13 is about.

Every pipeline is fitted on the same synthetic table: a text column with missing values (`color`), a
second text column (`shape`), a float (`size`), an integer (`weight`) and a boolean (`flag`). The rows asked
include unseen categories and missing values where the pipeline is built to take them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler, TargetEncoder

COLORS = ["red", "green", "blue"]
SHAPES = ["round", "square", "oval", "star"]


def training_table(rows: int = 240, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "color": pd.Series(rng.choice(COLORS, rows), dtype=object),
            "shape": pd.Series(rng.choice(SHAPES, rows), dtype=object),
            "size": rng.normal(10, 3, rows),
            "weight": rng.integers(1, 6, rows),
            "flag": rng.random(rows) > 0.5,
        }
    )
    table.loc[rng.random(rows) < 0.1, "color"] = None
    target = ((table["size"] > 10) ^ (table["color"] == "red") ^ table["flag"]).to_numpy().astype(int)
    return table, target


def asked_rows() -> pd.DataFrame:
    """Rows to predict: known and unseen categories, a missing color, each weight and flag."""
    return pd.DataFrame(
        {
            "color": pd.Series(["red", "green", None, "blue", "purple"], dtype=object),
            "shape": pd.Series(["round", "star", "oval", "square", "round"], dtype=object),
            "size": [9.5, 12.25, 10.0, 7.0, 14.5],
            "weight": [1, 5, 3, 2, 4],
            "flag": [True, False, True, False, True],
        }
    )


@dataclass(frozen=True)
class Case:
    """A fitted model and the rows to ask it about, as it takes them in process."""

    name: str
    model: Any
    rows: Any  # DataFrame (models fitted on DataFrames) or numpy object array

    @property
    def classifier(self) -> bool:
        return hasattr(self.model, "predict_proba")


def _drop_unseen(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["color"].isin(COLORS)].reset_index(drop=True)


def onehot_scaler() -> Case:
    table, target = training_table()
    table = table.dropna()  # the pipeline, as the user fitted it: no missing colors
    model = make_pipeline(
        ColumnTransformer(
            [
                ("c", OneHotEncoder(handle_unknown="ignore"), ["color"]),
                ("n", StandardScaler(), ["size", "weight"]),
            ]
        ),
        LogisticRegression(),
    ).fit(table[["color", "size", "weight"]], target[table.index])
    return Case("onehot-scaler", model, asked_rows().fillna({"color": "green"})[["color", "size", "weight"]])


def imputer_ordinal() -> Case:
    table, target = training_table()
    model = make_pipeline(
        ColumnTransformer(
            [
                ("color", make_pipeline(SimpleImputer(strategy="most_frequent"), OrdinalEncoder()), ["color"]),
                (
                    "shape",
                    OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2),
                    ["shape"],
                ),
                ("n", SimpleImputer(), ["size"]),
            ],
        ),
        LogisticRegression(),
    ).fit(table[["color", "shape", "size"]], target)
    rows = _drop_unseen(asked_rows().fillna({"color": "red"}))[["color", "shape", "size"]]
    rows.loc[1, "color"] = None  # the imputer fills it
    rows.loc[2, "shape"] = None  # the encoder's own missing value
    return Case("imputer-ordinal", model, rows)


def hist_gradient_boosting_categories() -> Case:
    table, target = training_table()
    table["color"] = table["color"].astype(pd.CategoricalDtype(COLORS))
    table["shape"] = table["shape"].astype(pd.CategoricalDtype(SHAPES))
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=20, random_state=0)
    model.fit(table[["color", "shape", "size", "weight"]], target)
    rows = asked_rows()[["color", "shape", "size", "weight"]]
    rows["color"] = rows["color"].astype(pd.CategoricalDtype(COLORS))  # "purple" is missing to the model
    rows["shape"] = rows["shape"].astype(pd.CategoricalDtype(SHAPES))
    return Case("hgb-categories", model, rows)


def target_encoder() -> Case:
    table, target = training_table()
    model = make_pipeline(
        ColumnTransformer(
            [("te", TargetEncoder(random_state=0), ["color", "shape"])],
            remainder="passthrough",
        ),
        LogisticRegression(),
    ).fit(table, target)
    return Case("target-encoder", model, asked_rows())


def integers_and_booleans() -> Case:
    table, target = training_table()
    model = make_pipeline(
        ColumnTransformer(
            [
                ("codes", OneHotEncoder(), ["weight", "flag"]),  # refuses unseen values
                ("text", OneHotEncoder(handle_unknown="ignore"), ["color"]),
            ],
            remainder="passthrough",
        ),
        RandomForestRegressor(n_estimators=10, random_state=0),
    ).fit(table[["color", "weight", "flag", "size"]], table["size"] * 2 + target)
    return Case("ints-bools", model, asked_rows()[["color", "weight", "flag", "size"]])


def object_array() -> Case:
    table, target = training_table()
    columns = ["color", "size", "weight"]
    model = make_pipeline(
        ColumnTransformer(
            [
                ("c", make_pipeline(SimpleImputer(strategy="constant", fill_value="none"), OneHotEncoder()), [0]),
                ("n", StandardScaler(), [1, 2]),
            ]
        ),
        LogisticRegression(),
    ).fit(table[columns].to_numpy(dtype=object), target)
    rows = _drop_unseen(asked_rows().fillna({"color": "blue"}))[columns].to_numpy(dtype=object)
    rows[0, 0] = None
    return Case("object-array", model, rows)


CORPUS: dict[str, Callable[[], Case]] = {
    "onehot-scaler": onehot_scaler,
    "imputer-ordinal": imputer_ordinal,
    "hgb-categories": hist_gradient_boosting_categories,
    "target-encoder": target_encoder,
    "ints-bools": integers_and_booleans,
    "object-array": object_array,
}


def json_cell(value: Any) -> Any:
    """A table cell as a client sends it: missing values as null, numpy scalars as JSON numbers/booleans."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def rows_by_name(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [{name: json_cell(value) for name, value in row.items()} for _, row in rows.astype(object).iterrows()]


def rows_in_order(rows: pd.DataFrame | np.ndarray) -> list[list[Any]]:
    values = rows.astype(object).to_numpy() if isinstance(rows, pd.DataFrame) else rows
    return [[json_cell(value) for value in row] for row in values]

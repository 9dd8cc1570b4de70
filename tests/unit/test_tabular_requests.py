"""Which input a model is handed (float64 matrix, DataFrame, object array) and what its features say, from
the request side: numeric models keep the fast path, models fitted on DataFrames get their columns back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from bigpickle.config import Settings
from bigpickle.features import Feature, infer_features
from bigpickle.local.runtime import predict_handler
from bigpickle.serving.validation import SIMDJSON_MIN_BYTES, RequestLimits, RequestValidator, parse_predict_request
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.helpers import publish_model
from tests.tabular_corpus import (
    hist_gradient_boosting_categories,
    imputer_ordinal,
    integers_and_booleans,
    onehot_scaler,
    training_table,
)
from tests.unit.test_tabular_corpus import request


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator(RequestLimits.from_settings(Settings.from_env({})))


def numeric_body(rows: list[list[float]]) -> bytes:
    return json.dumps({"instances": rows}).encode().ljust(SIMDJSON_MIN_BYTES, b" ")


def test_a_model_fitted_on_an_array_of_numbers_keeps_the_float64_fast_path(validator: RequestValidator) -> None:
    model = LinearRegression().fit(np.arange(6.0).reshape(3, 2), [1.0, 2.0, 3.0])

    inputs = parse_predict_request(validator.parse(numeric_body([[1.5, 2.0]])), model).inputs

    assert isinstance(inputs, np.ndarray)
    assert inputs.dtype == np.float64


def test_a_numeric_model_fitted_on_a_dataframe_answers_from_an_array_it_takes_the_same(
    validator: RequestValidator,
) -> None:
    # a DataFrame would cost ~0.8 ms per request (docs/api.md) for the same answer
    model = LinearRegression().fit(pd.DataFrame({"b": [1.0, 2.0, 3.0], "a": [0.5, 0.0, 1.0]}), [1.0, 2.0, 3.0])

    by_name = parse_predict_request(validator.parse(b'{"instances": [{"a": 2.0, "b": 1.5}]}'), model).inputs
    numeric = parse_predict_request(validator.parse(numeric_body([[1.5, 2.0]])), model).inputs

    assert isinstance(numeric, np.ndarray)
    assert by_name.tolist() == numeric.tolist() == [[1.5, 2.0]]


def test_a_numeric_model_that_selects_columns_by_name_gets_its_training_columns(validator: RequestValidator) -> None:
    table = pd.DataFrame({"b": [1.0, 2.0, 3.0], "a": [0.5, 0.0, 1.0]})
    model = make_pipeline(ColumnTransformer([("s", StandardScaler(), ["a"])]), LinearRegression())
    model.fit(table, [1.0, 2.0, 3.0])

    inputs = parse_predict_request(validator.parse(numeric_body([[1.5, 2.0]])), model).inputs

    assert isinstance(inputs, pd.DataFrame)
    assert list(inputs.columns) == ["b", "a"]
    assert inputs.to_numpy().tolist() == [[1.5, 2.0]]


def test_dataframe_columns_have_the_training_dtypes_and_missing_values(validator: RequestValidator) -> None:
    model = integers_and_booleans().model
    body = {"instances": [{"color": None, "weight": 3, "flag": True, "size": None}]}

    inputs = parse_predict_request(validator.parse(json.dumps(body).encode()), model).inputs

    assert inputs.dtypes.astype(str).tolist() == ["object", "int64", "bool", "float64"]
    assert inputs["color"].iloc[0] is None
    assert np.isnan(inputs["size"].iloc[0])


def test_category_columns_carry_the_training_categories(validator: RequestValidator) -> None:
    model = hist_gradient_boosting_categories().model
    body = {"instances": [["star", "round", 1.0, 2], [None, "oval", 1.0, 2]]}

    inputs = parse_predict_request(validator.parse(json.dumps(body).encode()), model).inputs

    assert isinstance(inputs["color"].dtype, pd.CategoricalDtype)
    assert inputs["color"].cat.categories.tolist() == ["blue", "green", "red", "star"]  # "star" is passed on as is
    assert inputs["shape"].cat.categories.tolist() == ["oval", "round", "square", "star"]
    assert inputs["color"].isna().tolist() == [False, True]


def test_an_imputer_before_a_strict_encoder_lets_nulls_through(validator: RequestValidator) -> None:
    color, shape, _size = infer_features(imputer_ordinal().model)

    assert (color.unknown, color.nullable) == ("error", True)
    assert (shape.unknown, shape.nullable) == ("accepted", True)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda pipeline: GridSearchCV(pipeline, {"logisticregression__C": [0.5, 1.0]}, cv=2),
        lambda pipeline: CalibratedClassifierCV(pipeline, cv=2),
    ],
)
def test_a_wrapped_pipeline_is_described_by_the_pipeline_inside(wrap: Any) -> None:
    case = onehot_scaler()
    table, target = training_table()
    table = table.dropna()

    wrapped = wrap(clone(case.model)).fit(table[["color", "size", "weight"]], target[table.index])

    assert [(f.name, f.type) for f in infer_features(wrapped)] == [
        ("color", "string"),
        ("size", "number"),
        ("weight", "number"),
    ]


def test_features_recorded_at_staging_are_the_ones_served(lambda_env: Path) -> None:
    # given a manifest whose features staging recorded (here: saying the one column takes integers)
    model = LinearRegression().fit(pd.DataFrame({"n": [1.0, 2.0, 3.0]}), [1.0, 2.0, 3.0])
    recorded = Feature(0, "n", "integer", "int64", missing="NaN").as_dict()
    publish_model(lambda_env, "recorded", model, features=[recorded])
    handler = predict_handler()

    _, meta = request(handler, "GET", "/v1/models/recorded")
    status, answer = request(handler, "POST", "/v1/models/recorded:predict", {"instances": [{"n": 1.5}]})

    assert meta["features"] == [recorded]
    assert status == 400
    assert "feature 'n' got 1.5 (a number); expected an integer" in answer["error"]["message"]

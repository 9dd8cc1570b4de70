"""The tabular corpus (tests/tabular_corpus.py) staged from S3 by the stage handler and served by the predict
handler: every pipeline answers exactly what it answers in process, for rows keyed by name and in column
order, with and without probabilities; the metadata route describes each feature."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from bigpickle.local.context import LocalLambdaContext
from bigpickle.local.events import load_event
from bigpickle.local.runtime import Handler, predict_handler, stage_handler

from tests.helpers import BUCKET, s3_put_event, upload_model
from tests.tabular_corpus import CORPUS, Case, rows_by_name, rows_in_order


@pytest.fixture(scope="module")
def corpus() -> dict[str, Case]:
    return {name: make() for name, make in CORPUS.items()}


def request(handler: Handler, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    event = copy.deepcopy(load_event("predict-single"))
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["body"] = None if body is None else json.dumps(body)
    event["isBase64Encoded"] = False
    response = handler(event, LocalLambdaContext())
    return response["statusCode"], json.loads(response["body"])


@pytest.fixture
def served(corpus: dict[str, Case], moto_s3: Any, lambda_env: Path) -> Handler:
    """Given every corpus model uploaded to S3 and staged by the stage handler's S3 events (default allowlist)."""
    stage = stage_handler()
    for name, case in corpus.items():
        key = f"models/{name}/model.pkl"
        upload_model(moto_s3, case.model, key)
        result = stage(s3_put_event(BUCKET, key), LocalLambdaContext())
        assert result["results"][0]["status"] == "published", result
    return predict_handler()


def test_every_pipeline_answers_as_in_process_for_rows_by_name_and_in_column_order(
    served: Handler, corpus: dict[str, Case]
) -> None:
    for name, case in corpus.items():
        expected = case.model.predict(case.rows).tolist()
        shapes = [rows_in_order(case.rows)]
        if hasattr(case.model, "feature_names_in_"):
            shapes.append(rows_by_name(case.rows))
        for rows in shapes:
            status, answer = request(served, "POST", f"/v1/models/{name}:predict", {"instances": rows})

            assert status == 200, (name, answer)
            assert answer["predictions"] == expected, name


def test_every_classifier_gives_the_in_process_probabilities(served: Handler, corpus: dict[str, Case]) -> None:
    classifiers = {name: case for name, case in corpus.items() if case.classifier}
    assert len(classifiers) == 5
    for name, case in classifiers.items():
        body = {"instances": rows_in_order(case.rows), "probabilities": True}

        status, answer = request(served, "POST", f"/v1/models/{name}:predict", body)

        assert status == 200, (name, answer)
        assert answer["probabilities"] == case.model.predict_proba(case.rows).tolist(), name
        assert answer["classes"] == case.model.classes_.tolist()


def test_the_metadata_route_names_each_feature_with_its_type(served: Handler) -> None:
    status, meta = request(served, "GET", "/v1/models/ints-bools")

    assert status == 200
    features = {feature["name"]: feature for feature in meta["features"]}
    assert [feature["name"] for feature in meta["features"]] == ["color", "weight", "flag", "size"]
    assert features["color"]["type"] == "string"
    assert features["color"]["categories"] == ["blue", "green", "red"]
    assert features["color"]["unknown_categories"] == "accepted"
    assert (features["weight"]["type"], features["weight"]["dtype"]) == ("integer", "int64")
    assert features["weight"]["categories"] == [1, 2, 3, 4, 5]
    assert features["weight"]["unknown_categories"] == "error"
    assert (features["flag"]["type"], features["flag"]["categories"]) == ("boolean", [False, True])
    assert (features["size"]["type"], features["size"]["dtype"]) == ("number", "float64")


def test_pandas_category_columns_are_described_as_categories(served: Handler) -> None:
    _, meta = request(served, "GET", "/v1/models/hgb-categories")

    color, shape, size, _ = meta["features"]
    assert (color["type"], color["dtype"], color["categories"]) == ("string", "category", ["blue", "green", "red"])
    assert (shape["dtype"], shape["categories"]) == ("category", ["oval", "round", "square", "star"])
    assert size["dtype"] == "float64"


def test_an_array_fitted_pipeline_has_unnamed_features_in_column_order(served: Handler) -> None:
    _, meta = request(served, "GET", "/v1/models/object-array")

    assert [(f["index"], f["name"], f["type"]) for f in meta["features"]] == [
        (0, None, "string"),
        (1, None, "number"),
        (2, None, "number"),
    ]


@pytest.mark.parametrize(
    ("model", "row", "says"),
    [
        # a cell of a type the column cannot take
        (
            "onehot-scaler",
            {"color": 3, "size": 1.0, "weight": 2},
            "feature 'color' got 3 (a number); expected a string",
        ),
        (
            "onehot-scaler",
            {"color": "red", "size": "big", "weight": 2},
            "feature 'size' got \"big\" (a string); expected a number",
        ),
        ("ints-bools", {"color": "red", "weight": 2.5, "flag": True, "size": 1.0}, "'weight' got 2.5"),
        (
            "ints-bools",
            {"color": "red", "weight": 2**64 - 1, "flag": True, "size": 1.0},
            "expected an integer (64-bit)",
        ),
        (
            "ints-bools",
            {"color": "red", "weight": 2, "flag": "yes", "size": 1.0},
            'got "yes" (a string); expected true or false, one of [false, true]',
        ),
        # a category the model's encoder refuses (OneHotEncoder(handle_unknown="error"))
        ("ints-bools", {"color": "red", "weight": 9, "flag": True, "size": 1.0}, "feature 'weight' got 9 (a number)"),
        ("ints-bools", {"color": "red", "weight": 1, "flag": None, "size": 1.0}, "feature 'flag' got null"),
        (
            "imputer-ordinal",
            {"color": "purple", "shape": "round", "size": 1.0},
            'expected a string, one of ["blue", "green", "red"]',
        ),
        # missing and unknown feature names, and rows of the wrong width
        ("onehot-scaler", {"color": "red", "size": 1.0}, "missing features ['weight']"),
        ("onehot-scaler", {"color": "red", "size": 1.0, "weight": 2, "age": 3}, "unknown features ['age']"),
        (
            "onehot-scaler",
            ["red", 1.0],
            "has 2 values; the model takes 3 features ['color', 'size', 'weight'] in this order",
        ),
        ("object-array", {"0": "red", "1": 1.0, "2": 2}, "fitted on an array without column names"),
        ("object-array", [4, 1.0, 2], "feature column 0 got 4 (a number); expected a string, one of"),
    ],
)
def test_bad_cells_are_400_naming_the_feature_what_it_got_and_what_it_expected(
    served: Handler, model: str, row: Any, says: str
) -> None:
    status, answer = request(served, "POST", f"/v1/models/{model}:predict", {"instances": [row]})

    assert status == 400
    assert answer["error"]["code"] == "bad_request"
    assert says in answer["error"]["message"]


def test_a_numeric_body_for_a_model_with_text_columns_says_which_column_wants_text(served: Handler) -> None:
    # given a body of numbers only (the fast path's shape) for a model whose first column is text
    rows = [[1.0, 2.0, 3.0]] * 2000  # past the size where simdjson parses it

    status, answer = request(served, "POST", "/v1/models/onehot-scaler:predict", {"instances": rows})

    assert status == 400
    assert "feature 'color' got 1.0 (a number); expected a string" in answer["error"]["message"]


def test_unseen_categories_reach_an_encoder_that_accepts_them(served: Handler, corpus: dict[str, Case]) -> None:
    # given "purple", which the model never saw: in process it is outside the column's categories (missing)
    case = corpus["hgb-categories"]
    in_process = case.rows.iloc[[4]]
    assert in_process["color"].isna().all()
    row = {"color": "purple", "shape": "round", "size": 14.5, "weight": 4}

    status, answer = request(served, "POST", "/v1/models/hgb-categories:predict", {"instances": [row]})

    # then the model's own encoder treats it as missing, as it does in process
    assert status == 200
    assert answer["predictions"] == case.model.predict(in_process).tolist()


def test_staging_records_each_models_features_in_its_manifest(
    served: Handler, corpus: dict[str, Case], models_root: Path
) -> None:
    """The trial load learns the columns where the stage function holds the model; predict serves those."""
    from bigpickle.features import infer_features
    from bigpickle.store import ModelStore

    store = ModelStore(models_root)
    for name, case in corpus.items():
        recorded = store.read_manifest(name).features

        assert recorded == [feature.as_dict() for feature in infer_features(case.model)], name
        status, meta = request(served, "GET", f"/v1/models/{name}")
        assert status == 200 and meta["features"] == recorded, name

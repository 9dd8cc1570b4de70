"""The predict handler, driven by the sample events in events/ (as `sam local invoke -e` would)."""

from __future__ import annotations

import base64
import copy
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bigpickle.local.events import load_event
from bigpickle.local.runtime import Handler, predict_handler
from bigpickle.store import Manifest, ModelStore


def publish(root: Path, name: str, model: Any, version: str = "20261126T120000Z-abc") -> Manifest:
    """Put a model on the EFS stand-in the way staging does."""
    store = ModelStore(root)
    data = pickle.dumps(model, protocol=5)
    (store.prepare_incoming(name, version) / "model.pkl").write_bytes(data)
    manifest = Manifest(
        name=name,
        version=version,
        file="model.pkl",
        format="pickle",
        bytes=len(data),
        sha256="0" * 64,
        staged_at="2026-11-26T12:00:00+00:00",
        bucket="b",
        key=f"models/{name}/model.pkl",
        etag='"abc"',
    )
    store.publish(manifest)
    return manifest


def call(handler: Handler, context: Any, event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = handler(event, context)
    assert response["headers"]["Content-Type"] == "application/json"
    return response["statusCode"], json.loads(response["body"]), response["headers"]


def with_body(name: str, body: Any, path: str | None = None) -> dict[str, Any]:
    event = copy.deepcopy(load_event(name))
    event["body"] = body if isinstance(body, str) else json.dumps(body)
    event["isBase64Encoded"] = False
    if path:
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
    return event


@pytest.fixture
def served(lambda_env: Path, trained: dict[str, Any]) -> Handler:
    for name, (model, _X) in trained.items():
        publish(lambda_env, name, model)
    return predict_handler()


def rows_of(event: dict[str, Any]) -> Any:
    body = event["body"]
    return json.loads(base64.b64decode(body) if event["isBase64Encoded"] else body)["instances"]


@pytest.mark.parametrize("event_name", ["predict-single", "predict-batch"])
def test_sample_predict_events_answer_what_the_model_answers(
    served: Handler, context: Any, trained: dict[str, Any], event_name: str
) -> None:
    event = load_event(event_name)
    model = trained["iris"][0]

    status, body, _ = call(served, context, event)

    assert status == 200
    assert body["predictions"] == model.predict(np.asarray(rows_of(event))).tolist()
    assert body["model_name"] == "iris"
    assert body["model_version"] == "20261126T120000Z-abc"


def test_probabilities_come_with_their_classes_when_asked(
    served: Handler, context: Any, trained: dict[str, Any]
) -> None:
    event = load_event("predict-batch")  # base64-encoded body, as sam local generate-event emits
    assert event["isBase64Encoded"] is True
    model = trained["iris"][0]

    _, body, _ = call(served, context, event)

    expected = model.predict_proba(np.asarray(rows_of(event)))
    assert np.allclose(body["probabilities"], expected)
    assert body["classes"] == model.classes_.tolist()


def test_rows_keyed_by_feature_name_reach_the_default_model_in_training_order(
    served: Handler, context: Any, trained: dict[str, Any]
) -> None:
    event = load_event("predict-by-feature-name")
    model = trained["iris"][0]
    row = rows_of(event)[0]
    reordered = dict(reversed(list(row.items())))
    event = with_body("predict-by-feature-name", {"instances": [reordered]})

    status, body, _ = call(served, context, event)

    assert status == 200
    assert body["predictions"] == model.predict(np.asarray([[row[n] for n in model.feature_names_in_]])).tolist()


@pytest.mark.parametrize("name", ["iris-pipeline", "diabetes"])
def test_every_sample_model_predicts_like_in_process(
    served: Handler, context: Any, trained: dict[str, Any], name: str
) -> None:
    model, X = trained[name]
    event = with_body("predict-single", {"instances": X[:25].tolist()}, path=f"/v1/models/{name}:predict")

    status, body, _ = call(served, context, event)

    assert status == 200
    assert np.allclose(body["predictions"], model.predict(X[:25]))


def test_metadata_describes_the_served_version(served: Handler, context: Any, trained: dict[str, Any]) -> None:
    status, body, _ = call(served, context, load_event("metadata"))

    assert status == 200
    assert body["name"] == "iris" and body["version"] == "20261126T120000Z-abc"
    assert body["n_features_in"] == 4
    assert body["feature_names"] == list(trained["iris"][0].feature_names_in_)
    assert body["classes"] == [0, 1, 2]
    assert body["runtime_sklearn_version"]
    assert {"bytes", "sha256", "staged_at", "ready"} <= body.keys()


def test_health_is_loadable_then_ready(served: Handler, context: Any) -> None:
    status, body, _ = call(served, context, load_event("health"))
    assert (status, body["status"]) == (200, "loadable")

    call(served, context, load_event("predict-single"))
    status, body, _ = call(served, context, load_event("health"))

    assert (status, body["status"]) == (200, "ready")


def test_health_is_503_when_nothing_is_staged(lambda_env: Path, context: Any) -> None:
    (lambda_env / "iris").mkdir()
    status, body, headers = call(predict_handler(), context, load_event("health"))

    assert status == 503
    assert body["error"]["code"] == "model_not_ready"
    assert headers["Retry-After"]


@pytest.mark.parametrize(
    ("body", "path", "status", "code", "says"),
    [
        ("{not json", None, 400, "bad_request", "not valid JSON"),
        ("", None, 400, "bad_request", "empty"),
        ({"rows": [[1, 2, 3, 4]]}, None, 400, "bad_request", '"instances"'),
        ({"instances": []}, None, 400, "bad_request", "non-empty"),
        ({"instances": [[1, 2, 3]]}, None, 400, "bad_request", "expects 4 features"),
        ({"instances": [[1, 2, 3, 4], [1, 2]]}, None, 400, "bad_request", "same length"),
        ({"instances": [[1, 2, "three", 4]]}, None, 400, "bad_request", "instances[0][2]"),
        ({"instances": [1, 2, 3, 4]}, None, 400, "bad_request", "row"),
        ({"instances": ["some text"]}, None, 400, "bad_request", "expects rows of 4 numbers"),
        ({"instances": [{"sepal length (cm)": 1}]}, None, 400, "bad_request", "missing features"),
        ({"instances": [[1, 2, 3, 4]], "probabilities": "yes"}, None, 400, "bad_request", "true or false"),
        ({"instances": [[1, 2, 3, 4]]}, "/v1/models/ghost:predict", 404, "model_not_found", "ghost"),
        ({"instances": [[1, 2, 3, 4]]}, "/v1/models/..:predict", 400, "invalid_model_name", "invalid model name"),
        ({"instances": [[1, 2, 3, 4]]}, "/v2/nothing", 404, "route_not_found", "no route"),
        (
            {"instances": [[1, 2, 3, 4]], "probabilities": True},
            "/v1/models/diabetes:predict",
            400,
            "bad_request",
            "does not give probabilities",
        ),
    ],
)
def test_bad_requests_get_a_json_error_that_says_what_is_wrong(
    served: Handler, context: Any, body: Any, path: str | None, status: int, code: str, says: str
) -> None:
    got_status, got, _ = call(served, context, with_body("predict-single", body, path))

    assert got_status == status
    assert got["error"]["code"] == code
    assert says in got["error"]["message"]


def test_the_sample_bad_request_events_are_400(served: Handler, context: Any) -> None:
    for name in ("bad-request", "malformed-json"):
        status, body, _ = call(served, context, load_event(name))
        assert status == 400, body


def test_nulls_become_nan_which_a_model_without_missing_value_support_rejects_with_400(
    served: Handler, context: Any
) -> None:
    status, body, _ = call(
        served,
        context,
        with_body("predict-single", {"instances": [[1, None, 3, 4]]}, path="/v1/models/iris-pipeline:predict"),
    )

    assert status == 400
    assert "NaN" in body["error"]["message"]


def test_a_body_over_the_limit_is_413(
    lambda_env: Path, context: Any, monkeypatch: pytest.MonkeyPatch, trained: dict[str, Any]
) -> None:
    publish(lambda_env, "iris", trained["iris"][0])
    monkeypatch.setenv("MAX_BODY_BYTES", "100")
    handler = predict_handler()

    status, body, _ = call(handler, context, with_body("predict-single", {"instances": [[1.0, 2.0, 3.0, 4.0]] * 20}))

    assert status == 413
    assert "100 bytes" in body["error"]["message"]


def test_invalid_base64_is_a_400_not_a_crash(served: Handler, context: Any) -> None:
    event = with_body("predict-single", "!!!not base64!!!")
    event["isBase64Encoded"] = True

    status, body, _ = call(served, context, event)

    assert status == 400
    assert "base64" in body["error"]["message"]


def test_a_model_file_that_cannot_load_is_503_naming_the_version(
    lambda_env: Path, context: Any, trained: dict[str, Any]
) -> None:
    manifest = publish(lambda_env, "iris", trained["iris"][0])
    path = ModelStore(lambda_env).model_path(manifest)
    path.write_bytes(path.read_bytes()[:100])  # truncated

    status, body, _ = call(predict_handler(), context, load_event("predict-single"))

    assert status == 503
    assert body["error"]["code"] == "model_load_failed"
    assert manifest.version in body["error"]["message"]

"""The predict handler, driven by the sample events in events/ (as `sam local invoke -e` would)."""

from __future__ import annotations

import base64
import copy
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn
from aws_lambda_powertools.metrics.provider.cold_start import reset_cold_start_flag
from bigpickle.config import Settings
from bigpickle.loading import ModelRegistry, load_model_file
from bigpickle.local.events import load_event
from bigpickle.local.runtime import Handler, predict_handler
from bigpickle.serving import create_app
from bigpickle.store import Manifest, ModelStore

from tests.helpers import publish_model


def publish(root: Path, name: str, model: Any, version: str = "20261126T120000Z-abc") -> Manifest:
    return publish_model(root, name, model, version)


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


@pytest.mark.parametrize("staging_started", [False, True])
def test_health_is_503_when_nothing_is_staged(lambda_env: Path, context: Any, staging_started: bool) -> None:
    if staging_started:
        (lambda_env / "iris").mkdir()
    status, body, headers = call(predict_handler(), context, load_event("health"))

    assert status == 503
    assert body["error"]["code"] == "model_not_ready"
    assert headers["Retry-After"]


def test_health_is_503_without_a_default_model(lambda_env: Path, context: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_NAME", "")

    status, body, _ = call(predict_handler(), context, load_event("health"))

    assert status == 503
    assert "MODEL_NAME" in body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "path", "status", "code", "says"),
    [
        ("{not json", None, 400, "bad_request", "not valid JSON"),
        ("", None, 400, "bad_request", "empty"),
        ({"rows": [[1, 2, 3, 4]]}, None, 400, "bad_request", '"instances"'),
        ({"instances": []}, None, 400, "bad_request", "non-empty"),
        ({"instances": [[1, 2, 3]]}, None, 400, "bad_request", "expects 4 features"),
        ({"instances": [[1, 2, 3, 4], [1, 2]]}, None, 400, "bad_request", "instances[1] has 2 values"),
        ({"instances": [[1, 2, "three", 4]]}, None, 400, "bad_request", "'petal length (cm)' got \"three\""),
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


# -- loading behaviour as clients see it --


def test_the_models_route_lists_staged_models_and_which_version_is_loaded(served: Handler, context: Any) -> None:
    call(served, context, load_event("predict-single"))  # loads iris

    status, body, _ = call(served, context, load_event("list-models"))

    assert status == 200
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {"iris", "iris-pipeline", "diabetes"}
    assert by_name["iris"]["state"] == "ready" and by_name["iris"]["loaded_version"] == "20261126T120000Z-abc"
    assert by_name["diabetes"]["state"] == "not_loaded" and by_name["diabetes"]["current_version"]
    assert body["memory"]["models_bytes"] == by_name["iris"]["memory_bytes"] > 0


def test_a_request_for_a_model_still_loading_is_503_with_retry_after(
    lambda_env: Path, context: Any, trained: dict[str, Any]
) -> None:
    publish(lambda_env, "iris", trained["iris"][0])
    release = threading.Event()

    def slow_loader(path: Path, fmt: str, **options: Any) -> Any:
        release.wait(10)
        return load_model_file(path, fmt, **options)

    settings = Settings.from_env()
    registry = ModelRegistry.from_settings(settings, loader=slow_loader, request_wait_seconds=0.05)
    app = create_app(settings, registry)

    loading = [call(app.resolve, context, load_event(name)) for name in ("predict-single", "metadata", "health")]
    release.set()
    registry.get("iris", until_loaded=True)
    status, body, _ = call(app.resolve, context, load_event("predict-single"))

    for got_status, got, headers in loading:
        assert got_status == 503 and int(headers["Retry-After"]) >= 1
        assert "is loading" in got["error"]["message"]
    assert status == 200 and body["model_version"] == "20261126T120000Z-abc"


def test_a_model_too_big_for_the_function_is_503_naming_both_sizes(
    lambda_env: Path, context: Any, monkeypatch: pytest.MonkeyPatch, trained: dict[str, Any]
) -> None:
    publish(lambda_env, "iris", trained["iris"][0])
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")  # less than this test process already holds

    status, body, _ = call(predict_handler(), context, load_event("predict-single"))

    assert status == 503 and body["error"]["code"] == "insufficient_memory"
    assert "this function has 128 MiB" in body["error"]["message"] and "needs about" in body["error"]["message"]


def test_a_model_saved_under_another_scikit_learn_is_503_unless_the_check_only_warns(
    lambda_env: Path, context: Any, monkeypatch: pytest.MonkeyPatch, trained: dict[str, Any]
) -> None:
    publish_model(lambda_env, "iris", trained["iris"][0], details={"sklearn_version": "0.24.2", "numpy_major": "1.x"})

    status, body, _ = call(predict_handler(), context, load_event("predict-single"))
    monkeypatch.setenv("MODEL_VERSION_CHECK", "warn")
    warned_status, _, _ = call(predict_handler(), context, load_event("predict-single"))

    assert status == 503 and body["error"]["code"] == "version_mismatch"
    assert "0.24.2" in body["error"]["message"] and sklearn.__version__ in body["error"]["message"]
    assert warned_status == 200


@pytest.mark.parametrize("name", ["iris", "iris-pipeline", "diabetes"])
def test_a_bpk_model_answers_identically_with_mmap_on_and_off(
    lambda_env: Path, context: Any, monkeypatch: pytest.MonkeyPatch, trained: dict[str, Any], name: str
) -> None:
    model, X = trained[name]
    publish_model(lambda_env, name, model, suffix=".bpk")
    event = with_body("predict-single", {"instances": X[:40].tolist()}, path=f"/v1/models/{name}:predict")
    answers = {}
    for mmap in ("off", "on"):
        monkeypatch.setenv("MODEL_MMAP", mmap)
        status, answers[mmap], _ = call(predict_handler(), context, event)
        assert status == 200

    assert answers["on"] == answers["off"]
    assert np.allclose(answers["on"]["predictions"], model.predict(X[:40]))


def test_a_warm_function_answers_with_a_newly_published_version(
    lambda_env: Path, context: Any, monkeypatch: pytest.MonkeyPatch, trained: dict[str, Any]
) -> None:
    monkeypatch.setenv("MODEL_REFRESH_SECONDS", "0")  # check the pointer on every request
    publish(lambda_env, "iris", trained["iris"][0], "20261126T120000Z-abc")
    handler = predict_handler()
    _, before, _ = call(handler, context, load_event("predict-single"))

    publish(lambda_env, "iris", trained["iris"][0], "20261126T130000Z-def")
    _, after, _ = call(handler, context, load_event("predict-single"))
    _, metadata, _ = call(handler, context, load_event("metadata"))

    assert (before["model_version"], after["model_version"]) == ("20261126T120000Z-abc", "20261126T130000Z-def")
    assert metadata["version"] == "20261126T130000Z-def"


def test_cold_start_load_and_latency_metrics_are_published(
    lambda_env: Path, context: Any, capsys: pytest.CaptureFixture[str], trained: dict[str, Any]
) -> None:
    publish(lambda_env, "iris", trained["iris"][0])
    reset_cold_start_flag()
    handler = predict_handler()
    capsys.readouterr()

    call(handler, context, load_event("predict-single"))

    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    names = {m["Name"] for blob in emitted for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"ColdStart", "ModelLoadSeconds", "ModelBytes", "PredictLatency"} <= names


def test_an_old_protocol_pickle_still_loads_and_its_metadata_says_what_it_cost(
    lambda_env: Path, context: Any, trained: dict[str, Any]
) -> None:
    manifest = publish_model(lambda_env, "iris", trained["iris"][0], protocol=2)

    status, body, _ = call(predict_handler(), context, load_event("metadata"))

    assert status == 200
    assert body["load"]["pickle_protocol"] == 2
    assert body["load"]["memory_bytes"] > 2 * manifest.bytes  # priced at the measured ~2.3x


@pytest.mark.parametrize(
    ("rows", "status"),
    [
        ([[5.1, 3.5, 1.4, 0.2]], 200),  # plain numbers: the byte-level fast path
        ([[5.1, None, 1.4, 0.2]], 200),  # null -> NaN, which the forest handles
        ([[True, False, 1.4, 0.2]], 200),  # booleans count as 0/1
        ([[1, 0, 1, 1]], 200),
        ([["5.1", 3.5, 1.4, 0.2]], 400),  # a number inside a string is text, never silently converted
        ([[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 5.1, "1.8"]], 400),  # ... in any row
        ([[5.1, 3.5, 1.4, 0.2], {}], 400),  # a row that is not a list of numbers
        ([[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 5.1]], 400),  # rows of different lengths
    ],
)
def test_cells_mean_what_the_docs_say_on_every_path(
    served: Handler, context: Any, trained: dict[str, Any], rows: list[list[Any]], status: int
) -> None:
    got_status, body, _ = call(served, context, with_body("predict-single", {"instances": rows}))

    assert got_status == status, body
    if status == 200:
        cells = [[np.nan if v is None else float(v) for v in row] for row in rows]
        assert body["predictions"] == trained["iris"][0].predict(np.asarray(cells)).tolist()

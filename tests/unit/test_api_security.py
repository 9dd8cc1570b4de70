"""The public edge: the OpenAPI document is served and enforced, limits answer 413 naming the setting,
no input gives a 5xx, model names never leave MODELS_ROOT, logs never carry bodies or credentials."""

from __future__ import annotations

import base64
import copy
import json
import logging
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from bigpickle.local.context import LocalLambdaContext
from bigpickle.local.events import load_event
from bigpickle.local.runtime import Handler, predict_handler
from bigpickle.store import ModelStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi

from tests.helpers import publish_model


@pytest.fixture
def api(lambda_env: Path, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Handler:
    monkeypatch.setenv("MAX_INSTANCES", "50")
    monkeypatch.setenv("MAX_ROW_WIDTH", "20")
    for name, (model, _X) in trained.items():
        publish_model(lambda_env, name, model)
    return predict_handler()


def request(
    handler: Handler, method: str, path: str, body: str | bytes | None = None, *, base64_encoded: bool = False
) -> tuple[int, Any]:
    event = copy.deepcopy(load_event("predict-single"))
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    if isinstance(body, bytes):
        body, base64_encoded = base64.b64encode(body).decode(), True
    event["body"] = body
    event["isBase64Encoded"] = base64_encoded
    response = handler(event, LocalLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def test_the_openapi_document_is_served_valid_and_carries_the_configured_limits(api: Handler) -> None:
    status, document = request(api, "GET", "/openapi.json")

    assert status == 200
    validate_openapi(document)
    instances = document["components"]["schemas"]["PredictRequest"]["properties"]["instances"]
    assert instances["maxItems"] == 50
    assert instances["items"]["anyOf"][0]["maxItems"] == 20
    assert {"/v1/models/{name}:predict", "/predict", "/v1/models/{name}", "/health"} <= document["paths"].keys()


@pytest.mark.parametrize(
    ("body", "code", "setting"),
    [
        ({"instances": [[1.0, 2.0, 3.0, 4.0]] * 51}, "too_many_instances", "MAX_INSTANCES"),
        ({"instances": [[1.0] * 21]}, "row_too_wide", "MAX_ROW_WIDTH"),
        ({"instances": [{f"f{i}": 1.0 for i in range(21)}]}, "row_too_wide", "MAX_ROW_WIDTH"),
    ],
)
def test_a_request_over_a_limit_is_413_naming_the_setting(api: Handler, body: Any, code: str, setting: str) -> None:
    status, answer = request(api, "POST", "/predict", json.dumps(body))

    assert status == 413
    assert answer["error"]["code"] == code
    assert setting in answer["error"]["message"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"instances": [[1.0, 2.0, 3.0, 4.0]], "signature": "x"}, "must not contain {'signature'}"),
        ({"instances": [[1.0, [2.0], 3.0, 4.0]]}, "instances[0][1] must be number or boolean or null or string"),
        ({"instances": [{"a": {"b": 1}}]}, "instances[0].a must be number or boolean or null or string"),
        ({"instances": [[]]}, "instances[0] must contain at least 1 items"),
        ('{"instances": [[NaN, 1, 2, 3]]}', "not valid JSON"),
        ('{"instances": [[Infinity, 1, 2, 3]]}', "not valid JSON"),
        ('{"instances": [[1e999, 1, 2, 3]]}', "not valid JSON"),
    ],
)
def test_a_request_outside_the_schema_is_400_saying_where(api: Handler, body: Any, says: str) -> None:
    status, answer = request(api, "POST", "/predict", body if isinstance(body, str) else json.dumps(body))

    assert status == 400
    assert says in answer["error"]["message"]


def test_null_becomes_nan_for_a_model_that_handles_missing_values(lambda_env: Path, trained: dict[str, Any]) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    _, X = trained["iris"]
    model = HistGradientBoostingClassifier(max_iter=5).fit(X, np.arange(len(X)) % 3)
    publish_model(lambda_env, "hgb", model)

    status, answer = request(predict_handler(), "POST", "/v1/models/hgb:predict", '{"instances": [[null, 1, 2, 3]]}')

    assert status == 200
    assert answer["predictions"] == model.predict(np.array([[np.nan, 1, 2, 3]])).tolist()


# -- property-based: no input gives a 5xx, and the schema the document shows is the one enforced --

# Bounded and reproducible in CI: the same examples every run, no example database left in the tree.
FUZZ = settings(
    deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

cells = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
json_values = st.recursive(
    cells, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=40,
)  # fmt: skip
rows = st.one_of(
    st.lists(cells, min_size=0, max_size=25),
    st.dictionaries(st.sampled_from(["sepal length (cm)", "sepal width (cm)", "x", ""]), cells, max_size=5),
    st.text(max_size=20),
    json_values,
)
envelopes = st.fixed_dictionaries(
    {"instances": st.lists(rows, max_size=60) | json_values},
    optional={"probabilities": json_values | st.booleans(), "extra": json_values},
)
bodies = st.one_of(
    envelopes.map(json.dumps), json_values.map(json.dumps), st.text(max_size=200), st.binary(max_size=200), st.none()
)
paths = st.one_of(
    st.sampled_from(["/predict", "/v1/models/iris:predict", "/v1/models/iris-pipeline:predict", "/health",
                     "/v1/models/diabetes", "/v1/models", "/openapi.json", "/v1/models/..%2F..%2Fetc:predict"]),
    st.text(max_size=40).map(lambda name: f"/v1/models/{name}:predict"),
    st.text(max_size=40).map(lambda name: f"/v1/models/{name}"),
)  # fmt: skip


@settings(FUZZ, max_examples=400)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]), path=paths, body=bodies, b64=st.booleans())
def test_no_input_gives_a_5xx_or_an_answer_that_is_not_json(
    api: Handler, method: str, path: str, body: str | bytes | None, b64: bool
) -> None:
    status, answer = request(api, method, path, body, base64_encoded=b64 and isinstance(body, str))

    assert status < 500, answer
    if status >= 400:
        assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message"}


@settings(FUZZ, max_examples=300)
@given(body=envelopes)
def test_a_body_the_served_schema_rejects_is_never_predicted_on(api: Handler, body: dict[str, Any]) -> None:
    _, document = request(api, "GET", "/openapi.json")
    schema = {"$ref": "#/components/schemas/PredictRequest", "components": document["components"]}
    schema_accepts = jsonschema.Draft202012Validator(schema).is_valid(body)

    status, _ = request(api, "POST", "/v1/models/iris:predict", json.dumps(body))

    assert status < 500
    if not schema_accepts:
        assert status in (400, 413)


@settings(FUZZ, max_examples=300)
@given(name=st.text(max_size=64))
def test_no_model_name_reaches_outside_models_root(name: str) -> None:
    root = Path("/mnt/models")
    store = ModelStore(root)
    try:
        resolved = store.model_dir(name).resolve()
    except Exception as exc:  # the only way out is an invalid-name refusal
        assert type(exc).__name__ == "InvalidModelNameError"
        return
    assert resolved.parent == root


def test_logs_carry_sizes_and_shapes_never_bodies_or_credentials(
    api: Handler, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    caplog.set_level(logging.INFO, logger="bigpickle")  # whatever level an earlier test left in the environment
    event = copy.deepcopy(load_event("predict-single"))
    event["headers"]["authorization"] = "Bearer sk-SECRET-TOKEN-123"
    event["body"] = json.dumps({"instances": [[5.123456, 3.5, 1.4, 0.2]]})
    event["isBase64Encoded"] = False

    response = api(event, LocalLambdaContext())
    bad = copy.deepcopy(event)
    bad["body"] = json.dumps({"instances": [[5.654321, "secret-cell", 1.4, 0.2]]})
    api(bad, LocalLambdaContext())
    printed = capsys.readouterr().out  # Powertools' metrics lines (EMF) carry the per-request facts
    metric_lines = [json.loads(line) for line in printed.splitlines() if line.startswith('{"_aws"')]
    logs = " ".join(map(str, [vars(record) for record in caplog.records])) + printed

    assert response["statusCode"] == 200
    assert any(line.get("rows") == 1 and line.get("request_bytes") for line in metric_lines)
    for secret in ("sk-SECRET-TOKEN-123", "5.123456", "5.654321"):
        assert secret not in logs

"""Faults on the predict side: each is a clear JSON error with a code, a log line saying what to fix, and a
container that keeps serving the other models and recovers when a good version is published."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bigpickle.local.context import LocalLambdaContext
from bigpickle.local.events import load_event
from bigpickle.local.runtime import Handler, predict_handler
from bigpickle.store import CURRENT_FILE, ModelStore

from tests.helpers import publish_model


class ExplodingModel:
    """A model that raises inside predict (admitted through PICKLE_ALLOWLIST_EXTRA, as an operator would)."""

    n_features_in_ = 4

    def predict(self, X: Any) -> Any:
        raise ZeroDivisionError("the model divided by zero")


def predict(handler: Handler, name: str, rows: Any) -> tuple[int, dict[str, Any]]:
    event = copy.deepcopy(load_event("predict-single"))
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/v1/models/{name}:predict"
    event["body"], event["isBase64Encoded"] = json.dumps({"instances": rows.tolist()}), False
    response = handler(event, LocalLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def _flip_a_coefficient(path: Path, model: Any) -> None:
    nodes = model.estimators_[0].tree_.__getstate__()["nodes"]
    data = bytearray(path.read_bytes())
    start = data.find(nodes.tobytes())
    assert start > 0
    data[start + nodes.dtype.fields["threshold"][1] + 5] ^= 0x40  # one threshold changes; still a valid pickle
    path.write_bytes(bytes(data))


def _truncate(path: Path, _model: Any) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _remove(path: Path, _model: Any) -> None:
    path.unlink()


def _point_at_a_missing_version(path: Path, _model: Any) -> None:
    (path.parents[2] / CURRENT_FILE).write_text(json.dumps({"version": "20261126T999999Z-gone"}))


FAULTS: dict[str, tuple[Callable[[Path, Any], None], int, str, str]] = {
    "corrupted (bytes changed after staging)": (_flip_a_coefficient, 503, "model_integrity_failed", "Re-stage"),
    "truncated": (_truncate, 503, "model_load_failed", "truncated"),
    "missing model file": (_remove, 503, "model_load_failed", "cannot be read"),
    "manifest points at a missing version": (_point_at_a_missing_version, 503, "model_not_ready", "roll back"),
}


@pytest.fixture
def monkey_env(lambda_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODEL_REFRESH_SECONDS", "0")  # notice a newly published version on the next request
    return lambda_env


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_broken_model_is_a_clear_503_others_keep_serving_and_a_good_version_recovers(
    fault: str, monkey_env: Path, trained: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    model, X = trained["iris"]
    other, other_X = trained["diabetes"]
    break_it, status, code, fix = FAULTS[fault]
    manifest = publish_model(monkey_env, "iris", model, version="20261126T100000Z-bad")
    publish_model(monkey_env, "diabetes", other)
    break_it(ModelStore(monkey_env).model_path(manifest), model)
    handler = predict_handler()

    got_status, answer = predict(handler, "iris", X[:3])
    other_status, other_answer = predict(handler, "diabetes", other_X[:3])
    publish_model(monkey_env, "iris", model, version="20261126T110000Z-good")
    healed_status, healed = predict(handler, "iris", X[:3])

    assert (got_status, answer["error"]["code"]) == (status, code)
    assert fix in answer["error"]["message"]
    errors = [f"{r.getMessage()} {getattr(r, 'error', '')}" for r in caplog.records if r.levelname == "ERROR"]
    assert any("20261126T100000Z-bad" in e or "20261126T999999Z-gone" in e for e in errors)
    assert any("re-stage" in e.lower() or "roll back" in e for e in errors)  # what to do about it
    assert other_status == 200 and np.allclose(other_answer["predictions"], other.predict(other_X[:3]))
    assert healed_status == 200 and healed["predictions"] == model.predict(X[:3]).tolist()
    assert healed["model_version"] == "20261126T110000Z-good"


def test_a_model_that_raises_inside_predict_is_a_500_and_the_container_keeps_serving(
    monkey_env: Path, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PICKLE_ALLOWLIST_EXTRA", f"{__name__}:ExplodingModel")
    publish_model(monkey_env, "exploding", ExplodingModel())
    publish_model(monkey_env, "iris", trained["iris"][0])
    handler = predict_handler()

    status, answer = predict(handler, "exploding", trained["iris"][1][:2])
    iris_status, _ = predict(handler, "iris", trained["iris"][1][:2])

    assert status == 500
    assert answer["error"]["code"] == "prediction_failed"
    assert "ZeroDivisionError" in answer["error"]["message"]
    assert iris_status == 200

"""What the store reads back is validated: a corrupt `current` pointer or manifest takes only its own model out
of service (503 model_invalid, saying what to do, no file system paths); other models and the listing go on."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from bigpickle.local.events import load_event
from bigpickle.local.runtime import Handler, predict_handler
from bigpickle.store import MANIFEST_FILE, ModelStore

from tests.helpers import publish_model

VERSION = "20261126T120000Z-abc"


def request(handler: Handler, context: Any, name: str, method: str = "predict") -> tuple[int, dict[str, Any]]:
    event = copy.deepcopy(load_event("predict-single" if method == "predict" else "list-models"))
    if method == "predict":
        event["rawPath"] = event["requestContext"]["http"]["path"] = f"/v1/models/{name}:predict"
    response = handler(event, context)
    return response["statusCode"], json.loads(response["body"])


@pytest.fixture
def two_models(lambda_env: Path, trained: dict[str, Any]) -> Path:
    for name in ("iris", "broken"):
        publish_model(lambda_env, name, trained["iris"][0], VERSION)
    return lambda_env


def assert_only_broken_is_out_of_service(handler: Handler, context: Any, models_root: Path, fix: str) -> None:
    status, body = request(handler, context, "broken")
    assert (status, body["error"]["code"]) == (503, "model_invalid")
    assert fix in body["error"]["message"]
    assert str(models_root) not in body["error"]["message"]

    assert request(handler, context, "iris")[0] == 200
    status, listing = request(handler, context, "", method="list")
    assert status == 200
    assert "iris" in [m["name"] for m in listing["models"]]


@pytest.mark.parametrize(
    "pointer",
    [b"not json", b'{"version": "../../iris/versions/x"}', b'{"version": 7}', b'["v1"]', b"\xff\xfe\x00", b""],
    ids=["not-json", "path-in-version", "number", "list", "binary", "empty"],
)
def test_a_corrupt_current_pointer_is_503_model_invalid_for_that_model_only(
    two_models: Path, context: Any, pointer: bytes
) -> None:
    (two_models / "broken" / "current").write_bytes(pointer)

    assert_only_broken_is_out_of_service(predict_handler(), context, two_models, "bigpickle rollback broken")


@pytest.mark.parametrize(
    "change",
    [
        {"file": "../../iris/versions/" + VERSION + "/model.pkl"},  # a file outside the version folder
        {"file": "/etc/hostname"},
        {"format": "exe"},
        {"version": "20990101T000000Z-other"},
        {"sha256": None},
    ],
    ids=["file-escapes", "absolute-file", "unknown-format", "other-version", "no-sha256"],
)
def test_a_corrupt_manifest_is_503_model_invalid_for_that_model_only(
    two_models: Path, context: Any, change: dict[str, Any]
) -> None:
    path = two_models / "broken" / "versions" / VERSION / MANIFEST_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))

    assert_only_broken_is_out_of_service(predict_handler(), context, two_models, "bigpickle rollback broken")


def test_a_manifest_that_is_not_json_is_503_model_invalid(two_models: Path, context: Any) -> None:
    (two_models / "broken" / "versions" / VERSION / MANIFEST_FILE).write_text("{")

    assert_only_broken_is_out_of_service(predict_handler(), context, two_models, "upload the model again")


def test_the_next_publish_repairs_an_invalid_pointer_with_the_newest_published_version(
    lambda_env: Path, trained: dict[str, Any]
) -> None:
    older, newer = "20261126T120000Z-aaa", "20261126T130000Z-bbb"
    publish_model(lambda_env, "iris", trained["iris"][0], newer)
    (lambda_env / "iris" / "current").write_text("{")

    publish_model(lambda_env, "iris", trained["iris"][0], older)  # a late, older upload

    assert ModelStore(lambda_env).current_version("iris") == newer

"""The whole pipeline on real servers: SeaweedFS S3 over HTTP, the stage handler, a folder as EFS,
the predict handler behind a real HTTP port, a real HTTP client."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from bigpickle.local import demo
from bigpickle.local.apigw import ApiGatewayBridge
from bigpickle.local.runtime import predict_handler, stage_handler
from bigpickle.safety.rewriter import file_checksum
from bigpickle.store import ModelStore

from tests.helpers import BUCKET, s3_put_event, upload_model

pytestmark = pytest.mark.integration


@pytest.fixture
def api(lambda_env: Path) -> Iterator[str]:
    bridge = ApiGatewayBridge(predict_handler()).start_background()
    yield bridge.url
    bridge.stop()


def test_given_three_models_in_s3_when_staged_by_events_then_http_predictions_match(
    real_s3: Any, lambda_env: Path, context: Any, trained: dict[str, Any]
) -> None:
    handler = stage_handler()
    uploaded = {}
    for name, (model, _X) in trained.items():
        key = f"models/{name}/model.pkl"
        uploaded[name] = upload_model(real_s3, model, key)
        result = handler(s3_put_event(BUCKET, key), context)
        assert result["results"][0]["status"] == "published"

    store = ModelStore(lambda_env)
    for name, data in uploaded.items():
        manifest = store.read_manifest(name)
        assert manifest.sha256 == hashlib.sha256(data).hexdigest()  # the upload's, for provenance
        published = file_checksum(store.model_path(manifest))
        assert manifest.format == "bigpickle" and published == manifest.details["layout"]["file_checksum"]

    bridge = ApiGatewayBridge(predict_handler()).start_background()
    try:
        for name, (model, X) in trained.items():
            response = requests.post(
                f"{bridge.url}/v1/models/{name}:predict", json={"instances": X[:40].tolist()}, timeout=30
            )
            assert response.status_code == 200, response.text
            assert np.allclose(response.json()["predictions"], model.predict(X[:40]))
        meta = requests.get(f"{bridge.url}/v1/models/iris", timeout=30).json()
        assert meta["sha256"] == hashlib.sha256(uploaded["iris"]).hexdigest()
    finally:
        bridge.stop()


def test_a_full_object_checksum_from_s3_is_verified_and_recorded(
    real_s3: Any, lambda_env: Path, context: Any, trained: dict[str, Any]
) -> None:
    data = upload_model(real_s3, trained["iris"][0], "models/checked/model.pkl")
    real_s3.put_object(Bucket=BUCKET, Key="models/checked/model.pkl", Body=data, ChecksumAlgorithm="SHA256")

    stage_handler()(s3_put_event(BUCKET, "models/checked/model.pkl"), context)

    manifest = ModelStore(lambda_env).read_manifest("checked")
    assert manifest.s3_checksum == {
        "algorithm": "SHA256",
        "value": base64.b64encode(hashlib.sha256(data).digest()).decode(),
    }


def test_the_local_bridge_speaks_http_api_events_both_ways(api: str, lambda_env: Path, trained: dict[str, Any]) -> None:
    response = requests.post(
        f"{api}/v1/models/iris:predict",
        data=b"\x00\xff binary",
        timeout=30,
        headers={"content-type": "application/octet-stream"},
    )

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.text)["error"]["code"] == "bad_request"


def test_make_demo_runs_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (
        "MODELS_ROOT",
        "MODEL_NAME",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.setenv(name, "")  # the demo sets these; monkeypatch restores them afterwards

    assert demo.run(tmp_path) == 0

    out = capsys.readouterr().out
    assert "demo passed" in out
    assert "FAIL" not in out

"""Warm-up: staging asks the predict function to load a newly published model before users ask for it."""

from __future__ import annotations

import base64
import inspect
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from bigpickle.loading import save_model
from bigpickle.local.events import load_event
from bigpickle.local.runtime import predict_handler, stage_handler
from bigpickle.staging import StageResult, lambda_invoker
from bigpickle.warmup import is_warmup_event, request_warmups, warmup_event
from botocore.stub import Stubber

from tests.helpers import BUCKET, publish_model, s3_put_event, upload_model


def test_the_sample_warmup_event_makes_the_predict_function_load_the_model(
    lambda_env: Path, context: Any, trained: dict[str, Any]
) -> None:
    manifest = publish_model(lambda_env, "iris", trained["iris"][0])
    handler = predict_handler()
    event = load_event("warmup")
    assert is_warmup_event(event) and not is_warmup_event(load_event("health"))

    answer = handler(event, context)
    health = handler(load_event("health"), context)

    assert answer["status"] == "ready" and answer["version"] == manifest.version
    assert json.loads(health["body"])["status"] == "ready"  # loaded by the warm-up, not by a request


def test_a_warmup_for_a_model_that_is_not_staged_reports_why_instead_of_raising(lambda_env: Path, context: Any) -> None:
    answer = predict_handler()(warmup_event("ghost"), context)

    assert answer["status"] == "failed" and answer["error"]["code"] == "model_not_found"


def test_only_published_results_request_an_asynchronous_invoke_of_the_predict_function() -> None:
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    results = [
        StageResult("b", "models/iris/model.pkl", "published", "iris", "v2", 10),
        StageResult("b", "models/iris/model.pkl", "already_published", "iris", "v2", 10),
        StageResult("b", "models/x/README", "skipped"),
    ]
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 202},
            {
                "FunctionName": "bigpickle-predict",
                "InvocationType": "Event",
                "Payload": json.dumps(warmup_event("iris", "v2")).encode(),
            },
        )

        requested = request_warmups(lambda_invoker("bigpickle-predict", client), results)

        stub.assert_no_pending_responses()
    assert requested == ["iris"]


def test_a_failed_warmup_invoke_is_logged_and_never_fails_the_publish(
    moto_s3: Any, lambda_env: Path, context: Any, monkeypatch: pytest.MonkeyPatch, trained: dict[str, Any]
) -> None:
    monkeypatch.setenv("PREDICT_FUNCTION_NAME", "no-such-function")  # moto answers ResourceNotFound
    upload_model(moto_s3, trained["iris"][0], "models/iris/model.pkl")

    result = stage_handler()(s3_put_event(BUCKET, "models/iris/model.pkl"), context)

    assert result["results"][0]["status"] == "published"


def test_the_stage_handler_warms_the_predict_function_after_a_publish(
    moto_s3: Any, lambda_env: Path, context: Any, monkeypatch: pytest.MonkeyPatch, trained: dict[str, Any]
) -> None:
    monkeypatch.setenv("PREDICT_FUNCTION_NAME", "bigpickle-predict")
    upload_model(moto_s3, trained["iris"][0], "models/iris/model.pkl")
    stage = stage_handler()
    sent: list[dict[str, Any]] = []
    handler_module = inspect.unwrap(stage).__globals__
    handler_module["function"] = replace(handler_module["function"], warmup_invoke=sent.append)  # the invoke seam

    staged = stage(s3_put_event(BUCKET, "models/iris/model.pkl"), context)["results"][0]
    again = stage(s3_put_event(BUCKET, "models/iris/model.pkl"), context)["results"][0]

    assert (staged["status"], again["status"]) == ("published", "already_published")
    assert sent == [warmup_event("iris", staged["version"])]  # one warm-up, for the publish only
    answer = predict_handler()(sent[0], context)
    assert (answer["status"], answer["version"]) == ("ready", staged["version"])


def test_a_bpk_uploaded_to_s3_is_staged_like_any_model_and_served_mapped(
    moto_s3: Any,
    lambda_env: Path,
    context: Any,
    monkeypatch: pytest.MonkeyPatch,
    trained: dict[str, Any],
    tmp_path: Path,
) -> None:
    model = trained["iris"][0]
    local = tmp_path / "model.bpk"
    save_model(model, local, "bigpickle")
    moto_s3.put_object(Bucket=BUCKET, Key="models/iris/model.bpk", Body=local.read_bytes())

    staged = stage_handler()(s3_put_event(BUCKET, "models/iris/model.bpk"), context)["results"][0]
    monkeypatch.setenv("MODEL_MMAP", "on")
    answer = predict_handler()(load_event("predict-single"), context)

    assert staged["status"] == "published"
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["model_version"] == staged["version"]
    event = load_event("predict-single")
    body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"]
    rows = np.asarray(json.loads(body)["instances"])
    assert json.loads(answer["body"])["predictions"] == model.predict(rows).tolist()

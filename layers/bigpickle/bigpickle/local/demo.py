"""`make demo`: the whole pipeline on this machine, on embedded defaults.

train -> real S3 server on 127.0.0.1 -> upload -> stage handler (S3 event from events/) -> a folder as
EFS -> predict handler behind a local HTTP port -> real HTTP requests -> answers checked against the
in-process model. Exits 0 only if every check held; stops everything it started.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bigpickle.local.apigw import ApiGatewayBridge
from bigpickle.local.context import LocalLambdaContext
from bigpickle.local.events import load_event
from bigpickle.local.runtime import predict_handler, stage_handler
from bigpickle.local.s3server import LocalS3Server
from bigpickle.local.samples import iris_forest

PREDICT_EVENTS = ("predict-single", "predict-batch", "predict-by-feature-name")
OTHER_EVENTS = ("metadata", "list-models", "health", "bad-request", "malformed-json")


def send(base_url: str, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Replay an API Gateway sample event as a real HTTP request."""
    body = event.get("body") or ""
    data = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    method = event["requestContext"]["http"]["method"]
    request = urllib.request.Request(
        base_url + event["rawPath"], data=data or None, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def request_rows(event: dict[str, Any], feature_names: list[str]) -> np.ndarray:
    body = event["body"]
    payload = json.loads(base64.b64decode(body) if event.get("isBase64Encoded") else body)
    rows = payload["instances"]
    if isinstance(rows[0], dict):
        rows = [[row[n] for n in feature_names] for row in rows]
    return np.asarray(rows, dtype=np.float64)


def replay(base_url: str, name: str) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """Send events/<name>.json over HTTP and print the request and the answer."""
    event = load_event(name)
    status, answer = send(base_url, event)
    method = event["requestContext"]["http"]["method"]
    print(f"   {method} {event['rawPath']}  ({name})\n     -> {status} {json.dumps(answer)}")
    return event, status, answer


def run(workdir: Path) -> int:
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"   {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    print("1. training a RandomForestClassifier on the iris dataset (ships with scikit-learn)")
    model, _ = iris_forest()
    feature_names = list(model.feature_names_in_)

    with LocalS3Server(workdir / "s3") as s3:
        print(f"2. S3 server (SeaweedFS weed mini) listening on {s3.endpoint_url}")
        os.environ.update(s3.env())
        os.environ.update({"MODELS_ROOT": str(workdir / "efs"), "MODEL_NAME": "iris"})

        put_event = load_event("s3-put")
        record = put_event["Records"][0]["s3"]
        bucket, key = record["bucket"]["name"], record["object"]["key"]
        client = s3.client()
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key=key, Body=pickle.dumps(model, protocol=5))
        print(f"3. uploaded s3://{bucket}/{key}")

        result = stage_handler()(put_event, LocalLambdaContext(function_name="bigpickle-stage"))
        print(f"4. stage handler (events/s3-put.json) -> {json.dumps(result)}")
        check(result["results"][0]["status"] == "published", "model published to the EFS stand-in")
        again = stage_handler()(put_event, LocalLambdaContext(function_name="bigpickle-stage"))
        check(again["results"][0]["status"] == "already_published", "a duplicate S3 event is a no-op")

        bridge = ApiGatewayBridge(predict_handler()).start_background()
        print(f"5. predict handler serving on {bridge.url} (HTTP API payload 2.0 events)")
        try:
            for name in PREDICT_EVENTS:
                event, status, answer = replay(bridge.url, name)
                expected = model.predict(request_rows(event, feature_names)).tolist()
                check(
                    status == 200 and answer.get("predictions") == expected,
                    f"{name}: predictions equal the in-process model's {expected}",
                )
            for name in OTHER_EVENTS:
                _, status, _ = replay(bridge.url, name)
                wanted = 400 if name in ("bad-request", "malformed-json") else 200
                check(status == wanted, f"{name}: HTTP {wanted}")
        finally:
            bridge.stop()
    print("6. stopped the HTTP bridge and the S3 server")
    if failures:
        print(f"demo FAILED: {len(failures)} check(s) did not hold")
        return 1
    print("demo passed: every prediction served over HTTP equals the in-process model's")
    return 0


def main() -> int:
    # Handler logs and metrics are JSON lines on stdout; keep the walkthrough readable unless asked.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with tempfile.TemporaryDirectory(prefix="bigpickle-demo-") as workdir:
        return run(Path(workdir))


if __name__ == "__main__":
    sys.exit(main())

"""`make local-api` (sam local start-api in the local Lambda image) answered over real HTTP: every route of
the README's API table, bodies however they are sent, unknown routes, the documented errors; Ctrl-C stops
SAM and its containers. docs/local.md lists where SAM's local gateway differs from API Gateway's HTTP API."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bigpickle.local.events import load_event
from bigpickle.local.s3server import free_port

from tests.infra.conftest import REPO

from .conftest import running_containers

READY_SECONDS = 300
STOP_SECONDS = 90
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]


@dataclass
class LocalApi:
    url: str
    process: subprocess.Popen[str]
    containers_before: set[str]
    log: Path

    def events(self) -> list[dict[str, Any]]:
        """The payload-2.0 events SAM's gateway built so far (`--debug` logs each one as a Python dict)."""
        marker = "Constructed Event Version 2.0 to invoke Lambda. Event: "
        lines = self.log.read_text().splitlines()
        return [ast.literal_eval(line.split(marker, 1)[1]) for line in lines if marker in line]

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read())

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the whole process group (make, the wrapper, SAM), as a terminal sends it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=STOP_SECONDS)


@pytest.fixture(scope="module")
def local_api(lambda_image: str, sam_build: Path, staged_models: Path) -> Iterator[LocalApi]:
    port = free_port()
    command = [
        "make", "--no-print-directory", "local-api", f"PORT={port}", f"MODELS_DIR={staged_models}",
        f"LOCAL_BUILD_DIR={sam_build}", "SAM_ARGS=--debug",
    ]  # fmt: skip
    log = staged_models.parent / "local-api.log"
    before = set(running_containers())
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, text=True,
        )  # fmt: skip
    api = LocalApi(f"http://127.0.0.1:{port}", process, before, log)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                api.request("GET", "/health")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"make local-api did not serve on port {port}:\n{log.read_text()[-4000:]}")
                time.sleep(1)
        yield api
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def predict_body(rows: list[list[float]], **extra: Any) -> bytes:
    return json.dumps({"instances": rows, **extra}).encode()


def test_given_the_local_api_then_every_route_of_the_api_table_answers(
    local_api: LocalApi, trained: dict[str, tuple[Any, Any]]
) -> None:
    import numpy as np

    model = trained["iris"][0]
    expected = model.predict(np.array(IRIS_ROWS)).tolist()

    named = local_api.request("POST", "/v1/models/iris:predict", predict_body(IRIS_ROWS))
    default = local_api.request("POST", "/predict", predict_body(IRIS_ROWS[2:], probabilities=True))
    listing = local_api.request("GET", "/v1/models")
    metadata = local_api.request("GET", "/v1/models/iris")
    health = local_api.request("GET", "/health")
    openapi = local_api.request("GET", "/openapi.json")

    assert named[0] == 200 and named[2]["predictions"] == expected
    assert default[0] == 200 and default[2]["predictions"] == expected[2:]
    assert default[2]["probabilities"] == model.predict_proba(np.array(IRIS_ROWS[2:])).tolist()
    assert listing[0] == 200 and [m["name"] for m in listing[2]["models"]] == ["iris"]
    assert metadata[0] == 200 and metadata[2]["name"] == "iris"
    assert health[0] == 200 and health[2]["status"] == "ready"
    assert openapi[0] == 200 and openapi[2]["openapi"].startswith("3.1")
    assert named[1]["Content-Type"] == "application/json"


@pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream", "text/plain", None])
def test_given_any_content_type_then_the_body_reaches_the_handler_whole(
    local_api: LocalApi, content_type: str | None, trained: dict[str, tuple[Any, Any]]
) -> None:
    # API Gateway base64-encodes bodies of non-text types (isBase64Encoded); SAM's local gateway never does
    # for an HTTP API (docs/local.md). Either way the handler must see the same bytes.
    import numpy as np

    headers = {"content-type": content_type} if content_type else {}
    status, _, answer = local_api.request("POST", "/v1/models/iris:predict", predict_body(IRIS_ROWS), headers)

    assert status == 200, answer
    assert answer["predictions"] == trained["iris"][0].predict(np.array(IRIS_ROWS)).tolist()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/nope", None, 404, "route_not_found"),
        ("DELETE", "/v1/models", None, 405, "method_not_allowed"),
        ("POST", "/v1/models/nope:predict", predict_body(IRIS_ROWS), 404, None),
        ("POST", "/v1/models/iris:predict", b'{"instances": [[5.1, 3.5,', 400, None),
        ("POST", "/v1/models/iris:predict", predict_body([[5.1, 3.5, 1.4]]), 400, None),
        ("POST", "/v1/models/iris:predict", predict_body([[0.0] * 4] * 10_001), 413, "too_many_instances"),
    ],
)
def test_given_a_bad_request_then_the_documented_error_comes_back_as_json(
    local_api: LocalApi, method: str, path: str, body: bytes | None, status: int, code: str | None
) -> None:
    answered, headers, answer = local_api.request(method, path, body)

    assert answered == status, answer
    assert set(answer["error"]) == {"code", "message"}
    assert code is None or answer["error"]["code"] == code
    assert headers["Content-Type"] == "application/json"


def test_where_sams_gateway_differs_from_api_gateway_the_handler_answers_the_same(
    local_api: LocalApi, trained: dict[str, tuple[Any, Any]]
) -> None:
    """The differences docs/local.md lists, seen in the event SAM built for one request (API Gateway's own
    format is the one of events/predict-single.json)."""
    body = predict_body(IRIS_ROWS[:1])
    status, _, answer = local_api.request(
        "POST", "/v1/models/iris:predict?trace=1", body, {"Content-Type": "application/octet-stream", "X-Probe": "a"}
    )
    [event] = [e for e in local_api.events() if e["rawQueryString"] == "trace=1"]
    api_gateway = load_event("predict-single")

    assert status == 200 and answer["predictions"] == [0]
    assert event["version"] == api_gateway["version"] == "2.0"
    assert event["routeKey"] == api_gateway["routeKey"] == "$default"
    assert event["rawPath"] == event["requestContext"]["http"]["path"] == "/v1/models/iris:predict"
    # Header names as the client sent them (API Gateway lower-cases them), plus SAM's forwarding headers.
    assert event["headers"]["Content-Type"] == "application/octet-stream" and event["headers"]["X-Probe"] == "a"
    assert all(name == name.lower() for name in api_gateway["headers"])
    assert {"X-Forwarded-Proto", "X-Forwarded-Port"} <= set(event["headers"])
    # A non-text body arrives as text (API Gateway would base64-encode it).
    assert event["isBase64Encoded"] is False and event["body"] == body.decode()
    # No authorizer ran: the template's AWS_IAM auth is not enforced locally.
    assert "authorizer" not in event["requestContext"] or not event["requestContext"]["authorizer"]


def test_given_the_local_api_when_interrupted_then_sam_and_its_containers_stop(local_api: LocalApi) -> None:
    assert set(running_containers()) - local_api.containers_before  # a warm predict container served above

    local_api.interrupt()

    assert set(running_containers()) - local_api.containers_before == set()

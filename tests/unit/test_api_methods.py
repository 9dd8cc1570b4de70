"""HTTP methods as a client sees them through the local bridge: every method reaches the API, a path the
API serves answers another method with 405 JSON and an `Allow` header naming the methods its OpenAPI
document declares, an unknown path answers 404 JSON, and HEAD gets headers without a body."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bigpickle.config import Settings
from bigpickle.local.apigw import ApiGatewayBridge
from bigpickle.serving import create_app

from tests.helpers import publish_model


@pytest.fixture
def bridge(models_root: Path, settings: Settings, trained: dict[str, Any]) -> Iterator[ApiGatewayBridge]:
    publish_model(models_root, "iris", trained["iris"][0])
    bridge = ApiGatewayBridge(create_app(settings).resolve).start_background()
    yield bridge
    bridge.stop()


def send(bridge: ApiGatewayBridge, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    host, port = bridge.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/health", "GET"),
        ("DELETE", "/v1/models/iris", "GET"),
        ("PUT", "/v1/models", "GET"),
        ("GET", "/v1/models/iris:predict", "POST"),
        ("PATCH", "/predict", "POST"),
        ("OPTIONS", "/openapi.json", "GET"),
        ("PROPFIND", "/v1/models/iris:predict", "POST"),
    ],
)
def test_a_method_a_path_does_not_serve_answers_405_json_with_allow(
    bridge: ApiGatewayBridge, method: str, path: str, allow: str
) -> None:
    status, headers, body = send(bridge, method, path)

    assert status == 405
    assert headers["allow"] == allow
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "method_not_allowed"
    assert f"{method} is not allowed on {path}" in error["message"]


@pytest.mark.parametrize("method", ["GET", "TRACE", "DELETE"])
def test_a_path_the_api_does_not_serve_answers_404_json_whatever_the_method(
    bridge: ApiGatewayBridge, method: str
) -> None:
    status, headers, body = send(bridge, method, "/v2/models")

    assert status == 404
    assert "allow" not in headers
    assert json.loads(body)["error"]["code"] == "route_not_found"


def test_head_gets_the_headers_of_the_answer_and_no_body(bridge: ApiGatewayBridge) -> None:
    status, headers, body = send(bridge, "HEAD", "/health")

    assert status == 405
    assert headers["allow"] == "GET"
    assert int(headers["content-length"]) > 0
    assert body == b""


def test_the_declared_methods_still_answer(bridge: ApiGatewayBridge) -> None:
    status, _, body = send(bridge, "GET", "/v1/models/iris")

    assert status == 200
    assert json.loads(body)["name"] == "iris"

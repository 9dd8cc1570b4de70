"""Request bodies the parsers could read two ways: compressed bodies are refused with 415, and a repeated key
is a 400 whichever parsing path (simdjson for large numeric bodies, orjson for the rest) the body takes."""

from __future__ import annotations

import base64
import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from bigpickle.config import Settings
from bigpickle.errors import BadRequestError
from bigpickle.local.events import load_event
from bigpickle.local.runtime import predict_handler
from bigpickle.serving.validation import SIMDJSON_MIN_BYTES, RequestLimits, RequestValidator

from tests.helpers import publish_model


def test_a_gzip_body_is_415_saying_to_send_it_uncompressed(
    lambda_env: Path, context: Any, trained: dict[str, Any]
) -> None:
    publish_model(lambda_env, "iris", trained["iris"][0])
    event = copy.deepcopy(load_event("predict-single"))
    event["headers"]["content-encoding"] = "gzip"
    event["body"] = base64.b64encode(gzip.compress(b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}')).decode()
    event["isBase64Encoded"] = True

    response = predict_handler()(event, context)

    assert response["statusCode"] == 415
    error = json.loads(response["body"])["error"]
    assert error["code"] == "unsupported_media_type"
    assert "Content-Encoding 'gzip' is not supported: send the JSON body uncompressed" in error["message"]


@pytest.mark.parametrize("size", ["small", "large"])
def test_a_repeated_instances_key_is_a_400_on_both_parsing_paths(size: str) -> None:
    validator = RequestValidator(RequestLimits.from_settings(Settings.from_env({})))
    body = b'{"instances": [[1.0, 2.0]], "instances": [[3.0, 4.0]]}'
    if size == "large":  # padded to where the simdjson path is tried first
        body = body.ljust(SIMDJSON_MIN_BYTES, b" ")

    with pytest.raises(BadRequestError, match="repeats the key 'instances'"):
        validator.parse(body)

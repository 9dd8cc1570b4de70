"""The stage function's Lambda invokes (continuations, warm-ups) cannot hang: a Lambda API that does not
answer fails within bounded time, with a message that names the missing endpoint."""

from __future__ import annotations

import inspect
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bigpickle.config import Settings
from bigpickle.local.runtime import stage_handler
from bigpickle.staging import LAMBDA_CLIENT_CONFIG, LambdaUnreachableError, StageResult, lambda_invoker
from bigpickle.warmup import request_warmups
from botocore.config import Config

SHORT = Config(connect_timeout=0.5, read_timeout=0.5, retries={"mode": "standard", "total_max_attempts": 2})
# Standard-mode retries sleep at most 2**(attempt - 1) s before each retry (botocore's exponential backoff).
MAX_BACKOFF_SECONDS = 1 + 2


def worst_case_seconds(config: Config) -> float:
    attempts = config.retries["total_max_attempts"]
    return attempts * (config.connect_timeout + config.read_timeout) + MAX_BACKOFF_SECONDS


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def silent_endpoint(monkeypatch: pytest.MonkeyPatch, aws_credentials: None) -> Iterator[str]:
    """A Lambda endpoint that accepts connections and never answers (a route that goes nowhere)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", url)
    yield url
    stop.set()
    thread.join(5)
    for connection in held:
        connection.close()
    server.close()


@pytest.fixture
def refused_endpoint(monkeypatch: pytest.MonkeyPatch, aws_credentials: None) -> str:
    """A Lambda endpoint nothing listens on."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", url)
    return url


def test_given_an_endpoint_that_never_answers_then_the_invoke_fails_in_bounded_time_naming_the_endpoint(
    silent_endpoint: str,
) -> None:
    invoke = lambda_invoker("bigpickle-stage", config=SHORT)

    started = time.monotonic()
    with pytest.raises(LambdaUnreachableError) as raised:
        invoke({"Records": []})
    seconds = time.monotonic() - started

    assert seconds <= worst_case_seconds(SHORT)
    assert silent_endpoint in raised.value.message
    assert "CreateLambdaEndpoint=true" in raised.value.message and "NAT" in raised.value.message


def test_given_no_endpoint_then_the_default_client_fails_fast_and_says_what_is_missing(refused_endpoint: str) -> None:
    invoke = lambda_invoker("bigpickle-predict:live")

    started = time.monotonic()
    with pytest.raises(LambdaUnreachableError) as raised:
        invoke({"source": "bigpickle.warmup"})

    assert time.monotonic() - started <= worst_case_seconds(LAMBDA_CLIENT_CONFIG)
    assert refused_endpoint in raised.value.message and "interface endpoint" in raised.value.message


def test_the_default_client_gives_up_before_a_continuation_misses_its_window() -> None:
    checkpoint_seconds = Settings.from_env({}).stage_checkpoint_seconds

    assert LAMBDA_CLIENT_CONFIG.retries["mode"] == "standard"
    assert LAMBDA_CLIENT_CONFIG.connect_timeout <= 5 and LAMBDA_CLIENT_CONFIG.read_timeout <= 15
    assert worst_case_seconds(LAMBDA_CLIENT_CONFIG) < 0.75 * checkpoint_seconds


def test_an_unreachable_lambda_api_costs_the_warmup_only_a_log_line(
    refused_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    published = [StageResult("b", "models/iris/model.pkl", "published", "iris", "v2", 10)]

    requested = request_warmups(lambda_invoker("bigpickle-predict:live", config=SHORT), published)

    assert requested == []
    assert any("CreateLambdaEndpoint" in str(getattr(r, "error", "")) for r in caplog.records)


def test_the_stage_handlers_warmup_invoker_names_the_missing_endpoint(
    refused_endpoint: str, lambda_env: Any, context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREDICT_FUNCTION_NAME", "bigpickle-predict:live")
    warmup_invoke = inspect.unwrap(stage_handler()).__globals__["function"].warmup_invoke  # the module's invoker

    with pytest.raises(LambdaUnreachableError) as raised:
        warmup_invoke({"source": "bigpickle.warmup"})

    assert refused_endpoint in raised.value.message

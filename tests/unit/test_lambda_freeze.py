"""Loads on Lambda, where an execution environment is frozen between invocations: a load moves on only
while an invocation runs, every wait ends before the invocation's deadline, and a load longer than one
request's wait still completes within a bounded number of requests or warm-ups (docs/loading.md "Loads and
the Lambda freeze"). The predict handler runs in a real child process, SIGSTOPped between invocations."""

from __future__ import annotations

import inspect
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from bigpickle.loading import ModelRegistry
from bigpickle.loading.capacity import MemoryBudget
from bigpickle.loading.registry import ANSWER_MARGIN_SECONDS, RETRY_AFTER_SECONDS
from bigpickle.local.events import load_event
from bigpickle.local.runtime import predict_handler
from bigpickle.store import ModelStore
from bigpickle.warmup import PROVISIONED_CONCURRENCY, warmup_event

from tests.helpers import publish_model
from tests.lambda_process import predict_environment

V1, V2 = "20261126T100000Z-one", "20261126T110000Z-two"
LOAD_SECONDS = 1.2  # running time the throttled load needs
FREEZE_SECONDS = 1.5  # longer than the whole load: had the load run while frozen, the next call would find it
SLACK_SECONDS = 1.0  # scheduling on a shared machine, on top of any wait


def status(invocation: Any) -> int:
    return invocation.answer["statusCode"]


def body(invocation: Any) -> dict[str, Any]:
    return json.loads(invocation.answer["body"])


def requests_until_served(environment: Any, bound: int) -> list[Any]:
    """Predict requests, the environment frozen FREEZE_SECONDS between them, until one is answered 200."""
    answers = []
    for _ in range(bound + 1):
        answers.append(environment.invoke(load_event("predict-single")))
        if status(answers[-1]) == 200:
            break
        time.sleep(FREEZE_SECONDS)
    return answers


def test_a_cold_load_longer_than_a_request_may_wait_is_finished_by_a_bounded_number_of_retries(
    lambda_env: Path, trained: dict[str, Any]
) -> None:
    publish_model(lambda_env, "iris", trained["iris"][0], V1)
    wait = 0.4
    needed = math.ceil(LOAD_SECONDS / wait)
    bound = needed + 2  # the requests that lend the load its time, plus one to spare for scheduling

    with predict_environment({V1: LOAD_SECONDS}, request_wait_seconds=wait) as environment:
        answers = requests_until_served(environment, bound)

    *not_ready, served = answers
    assert status(served) == 200 and body(served)["model_version"] == V1
    assert len(answers) <= bound
    # Frozen, the load made no progress: more than one request was needed although each freeze outlasted it.
    assert len(not_ready) >= needed - 1 >= 1
    for answer in not_ready:
        assert status(answer) == 503 and body(answer)["error"]["code"] == "model_not_ready"
        assert answer.answer["headers"]["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert "retry now" in body(answer)["error"]["message"]
        assert answer.seconds < wait + SLACK_SECONDS


def test_a_request_never_waits_into_the_invocation_timeout(lambda_env: Path, trained: dict[str, Any]) -> None:
    publish_model(lambda_env, "iris", trained["iris"][0], V1)
    timeout = ANSWER_MARGIN_SECONDS + 0.5  # far less than the request wait and the load

    with predict_environment({V1: 2 * timeout}, request_wait_seconds=20) as environment:
        answer = environment.invoke(load_event("predict-single"), timeout_seconds=timeout)

    assert status(answer) == 503
    assert answer.seconds < timeout, "an invocation that outlives its timeout loses the environment and its load"


def test_one_warmup_with_time_to_spare_loads_what_no_request_could(lambda_env: Path, trained: dict[str, Any]) -> None:
    publish_model(lambda_env, "iris", trained["iris"][0], V1)

    with predict_environment({V1: LOAD_SECONDS}, request_wait_seconds=0.2) as environment:
        warmed = environment.invoke(warmup_event("iris"), timeout_seconds=60)
        time.sleep(FREEZE_SECONDS)
        served = environment.invoke(load_event("predict-single"))

    assert warmed.answer["status"] == "ready" and warmed.answer["version"] == V1
    assert status(served) == 200 and served.seconds < SLACK_SECONDS


def test_warmups_shorter_than_the_load_hand_it_on_and_a_bounded_number_finish_it(
    lambda_env: Path, trained: dict[str, Any]
) -> None:
    publish_model(lambda_env, "iris", trained["iris"][0], V1)
    timeout = ANSWER_MARGIN_SECONDS + 0.5  # each warm-up may lend the load 0.5 s
    bound = math.ceil(LOAD_SECONDS / 0.5) + 2
    answers = []

    with predict_environment({V1: LOAD_SECONDS}) as environment:
        for _ in range(bound):
            answers.append(environment.invoke(warmup_event("iris"), timeout_seconds=timeout))
            if answers[-1].answer["status"] == "ready":
                break
            time.sleep(FREEZE_SECONDS)
        served = environment.invoke(load_event("predict-single"))

    assert [a.answer["status"] for a in answers[:-1]] == ["loading"] * (len(answers) - 1)
    assert answers[-1].answer["status"] == "ready" and 2 <= len(answers) <= bound
    assert all(a.seconds < timeout for a in answers)
    assert status(served) == 200


def test_a_hot_swap_is_finished_by_a_bounded_number_of_requests_each_answered_by_the_old_version(
    lambda_env: Path, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_REFRESH_SECONDS", "0")  # every request notices a new version
    publish_model(lambda_env, "iris", trained["iris"][0], V1)
    swap_wait = 0.3
    needed = math.ceil(LOAD_SECONDS / swap_wait)
    bound = needed + 2
    versions = []

    with predict_environment({V2: LOAD_SECONDS}, swap_wait_seconds=swap_wait) as environment:
        first = environment.invoke(load_event("predict-single"))
        publish_model(lambda_env, "iris", trained["iris"][0], V2)
        for _ in range(bound + 1):
            time.sleep(FREEZE_SECONDS)
            answer = environment.invoke(load_event("predict-single"))
            assert status(answer) == 200 and answer.seconds < swap_wait + SLACK_SECONDS
            versions.append(body(answer)["model_version"])
            if versions[-1] == V2:
                break

    assert body(first)["model_version"] == V1
    assert versions[-1] == V2 and set(versions[:-1]) == {V1}
    assert needed - 1 <= len(versions) - 1 <= bound, versions


@pytest.mark.parametrize(("initialization", "state"), [(PROVISIONED_CONCURRENCY, "ready"), ("on-demand", "not_loaded")])
def test_a_provisioned_instance_loads_model_name_during_init_and_an_on_demand_one_does_not(
    lambda_env: Path, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch, initialization: str, state: str
) -> None:
    publish_model(lambda_env, "iris", trained["iris"][0], V1)
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", initialization)

    handler = predict_handler()  # init only: no invocation yet
    registry = inspect.unwrap(handler).__globals__["registry"]

    assert registry.state("iris") == (state, V1 if state == "ready" else None)


def test_the_registry_hands_out_a_load_whatever_fails_after_the_loader_returns(
    models_root: Path, trained: dict[str, Any]
) -> None:
    publish_model(models_root, "iris", trained["iris"][0], V1)

    def failing_bookkeeping(loaded: Any) -> None:
        raise RuntimeError("metrics backend down")

    registry = ModelRegistry(
        ModelStore(models_root), budget=MemoryBudget(limit=None, baseline=0), on_loaded=failing_bookkeeping
    )

    loaded = registry.get("iris", until_loaded=True)

    assert loaded.manifest.version == V1
    assert registry.state("iris") == ("ready", V1)
    assert registry.get("iris") is loaded

"""What the copy retries and what it leaves to botocore: a part's body that fails mid-read is reopened at
most `RetryPolicy.attempts` times; a GET that failed is not tried again (botocore already retried it);
a failure while the copy is stopping anyway is no failure. On moto S3 and a temp folder."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bigpickle.config import Settings
from bigpickle.errors import TransferError
from bigpickle.staging import StageOptions, stage_object
from bigpickle.store import ModelStore
from bigpickle.transfer import RetryPolicy
from botocore.exceptions import ClientError

from tests.helpers import BUCKET, published_bytes, weights_pickle

KEY = "models/weights/model.pkl"


@pytest.fixture
def one_mib_parts(models_root: Path) -> Settings:
    return Settings.from_env({"MODELS_ROOT": str(models_root), "STAGE_PART_SIZE_MIB": "1", "STAGE_CONCURRENCY": "2"})


class DroppingBody:
    """A body whose connection drops at its first read; `before_drop` runs first."""

    def __init__(self, before_drop: Any = None) -> None:
        self.before_drop = before_drop

    def readinto(self, _view: memoryview) -> int:
        if self.before_drop is not None:
            self.before_drop()
        raise ConnectionResetError("connection reset by peer")

    def close(self) -> None:
        pass


class GetCountingClient:
    """Wraps the moto client; counts GETs and answers each with `answer(kwargs)` when given."""

    def __init__(self, client: Any, answer: Any = None) -> None:
        self._client = client
        self.answer = answer
        self.gets = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.gets += 1
        response = self._client.get_object(**kwargs)
        if self.answer is not None:
            response["Body"].close()
            return self.answer(response)
        return response


def test_given_every_read_of_a_part_drops_then_it_is_fetched_attempts_times_and_the_error_says_so(
    moto_s3: Any, store: ModelStore, one_mib_parts: Settings
) -> None:
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=weights_pickle(1)[: 512 * 1024])  # one part
    client = GetCountingClient(moto_s3, answer=lambda response: {**response, "Body": DroppingBody()})
    backoffs: list[float] = []
    options = StageOptions(retry=RetryPolicy(attempts=3, sleep=backoffs.append))

    with pytest.raises(TransferError, match=r"part 0 .* failed 3 times in a row, the last time with ConnectionReset"):
        stage_object(client, store, one_mib_parts, BUCKET, KEY, options=options)

    assert client.gets == 3
    assert len(backoffs) == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (500, "InternalError"), (400, "RequestTimeout"), (403, "RequestTimeTooSkewed")],
)
def test_given_a_get_that_failed_after_botocores_retries_then_the_copy_does_not_retry_it(
    moto_s3: Any, store: ModelStore, one_mib_parts: Settings, status: int, code: str
) -> None:
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=weights_pickle(1)[: 512 * 1024])

    def fail(_response: Any) -> Any:
        raise ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    client = GetCountingClient(moto_s3, answer=fail)
    backoffs: list[float] = []

    with pytest.raises(TransferError, match=f"a GET failed after botocore's own retries: ClientError.*{code}"):
        stage_object(
            client, store, one_mib_parts, BUCKET, KEY, options=StageOptions(retry=RetryPolicy(sleep=backoffs.append))
        )

    assert client.gets == 1
    assert backoffs == []
    assert store.current_version("weights") is None


def test_given_a_part_drops_while_the_copy_is_stopping_then_it_checkpoints_instead_of_failing(
    moto_s3: Any, store: ModelStore, one_mib_parts: Settings
) -> None:
    data = weights_pickle(3)
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
    stop_asked = threading.Event()  # the body asks for the stop...
    stop_seen = threading.Event()  # ...and drops only once the copy has seen it

    def should_stop() -> bool:
        if stop_asked.is_set():
            stop_seen.set()
            return True
        return False

    def drop_after_the_stop() -> None:
        stop_asked.set()
        stop_seen.wait(timeout=10)
        time.sleep(0.2)  # the feeder sets `stopping` right after should_stop answers

    client = GetCountingClient(moto_s3, answer=lambda response: {**response, "Body": DroppingBody(drop_after_the_stop)})
    stopping = StageOptions(should_stop=should_stop, retry=RetryPolicy(attempts=5, sleep=lambda _s: None))

    result = stage_object(client, store, one_mib_parts, BUCKET, KEY, options=stopping)

    assert result.status == "checkpointed"
    assert store.current_version("weights") is None
    resumed = stage_object(moto_s3, store, one_mib_parts, BUCKET, KEY)
    assert resumed.status == "published"
    assert published_bytes(store) == data

"""The staging engine against the real local S3 server, with faults injected by a TCP proxy in between:
parallel parts reassemble exactly, faults are retried per part, corruption and replacement are caught,
a killed run resumes, duplicates publish once, memory stays within the budget."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from bigpickle.config import Settings
from bigpickle.errors import IntegrityError
from bigpickle.local.faultproxy import Fault, FaultProxy
from bigpickle.local.s3server import LocalS3Server
from bigpickle.staging import StageOptions, stage_object
from bigpickle.store import ModelStore
from bigpickle.transfer import RetryPolicy, TransferConfig
from bigpickle.units import KiB, MiB
from botocore.config import Config

from tests.helpers import BUCKET, published_bytes, weights_pickle

pytestmark = pytest.mark.integration

KEY = "models/weights/model.pkl"
NO_WAIT = RetryPolicy(attempts=4, sleep=lambda _s: None)


@pytest.fixture
def small_parts(models_root: Path) -> Settings:
    return Settings.from_env({"MODELS_ROOT": str(models_root), "STAGE_PART_SIZE_MIB": "1", "STAGE_CONCURRENCY": "4"})


@pytest.fixture
def proxy(s3_server: LocalS3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def via_proxy(proxy: FaultProxy, s3_server: LocalS3Server) -> Any:
    """A client that talks to the real server through the fault proxy; stalls hit a 1 s read timeout."""
    return boto3.client(
        "s3",
        endpoint_url=proxy.url,
        region_name="us-east-1",
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        config=Config(s3={"addressing_style": "path"}, read_timeout=1, connect_timeout=2, retries={"max_attempts": 3}),
    )


def test_given_a_multi_part_object_when_staged_in_parallel_then_the_file_and_sha256_are_exact(
    real_s3: Any, store: ModelStore, small_parts: Settings
) -> None:
    data = weights_pickle(12)  # 12 parts of 1 MiB, fetched 4 at a time, finished out of order
    real_s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
    reports: list[Any] = []

    result = stage_object(real_s3, store, small_parts, BUCKET, KEY, options=StageOptions(progress=reports.append))

    assert result.status == "published"
    assert published_bytes(store) == data
    assert store.read_manifest("weights").sha256 == hashlib.sha256(data).hexdigest()
    assert [r.done for r in reports] == sorted(r.done for r in reports)
    assert reports[-1].done == len(data) and reports[-1].percent == 100.0
    assert not list((store.model_dir("weights") / "incoming").glob("*/*"))


@pytest.mark.parametrize(
    "fault",
    [
        Fault("drop", after=300 * KiB),  # connection closed mid-body
        Fault("stall", after=300 * KiB, seconds=3),  # stream stops; the 1 s read timeout fires
        Fault("status", status=503),  # SlowDown; botocore's own retry
    ],
    ids=["dropped-mid-body", "stalled", "503-slowdown"],
)
def test_given_a_network_fault_when_staging_then_the_part_is_retried_and_the_copy_is_exact(
    real_s3: Any, via_proxy: Any, proxy: FaultProxy, store: ModelStore, small_parts: Settings, fault: Fault
) -> None:
    data = weights_pickle(6, seed=1)
    real_s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
    via_proxy.head_bucket(Bucket=BUCKET)  # the connection exists; the fault hits the copy, not the setup
    proxy.arm(fault)

    result = stage_object(via_proxy, store, small_parts, BUCKET, KEY, options=StageOptions(retry=NO_WAIT))

    assert proxy.fired == [fault.kind]
    assert result.status == "published"
    assert published_bytes(store) == data


class RangeRecordingClient:
    """The real client, noting the Range of every GET."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.ranges: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **kwargs: Any) -> Any:
        self.ranges.append(kwargs["Range"])
        return self._client.get_object(**kwargs)


def test_given_a_part_larger_than_a_buffer_dropped_midway_then_only_its_unwritten_rest_is_fetched_again(
    real_s3: Any, via_proxy: Any, proxy: FaultProxy, store: ModelStore, small_parts: Settings
) -> None:
    data = weights_pickle(8, seed=5)
    real_s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
    client = RangeRecordingClient(via_proxy)
    client.head_bucket(Bucket=BUCKET)
    # one GET per 4 MiB part, streamed through 1 MiB buffers; the drop comes inside the part's third MiB
    config = TransferConfig(part_size=4 * MiB, buffer_size=1 * MiB, concurrency=2, memory_budget=32 * MiB)
    proxy.arm(Fault("drop", after=2 * MiB + 300 * KiB))

    result = stage_object(client, store, small_parts, BUCKET, KEY, options=StageOptions(retry=NO_WAIT, config=config))

    assert proxy.fired == ["drop"]
    assert result.status == "published"
    assert published_bytes(store) == data
    part_ranges = {f"bytes={start}-{min(start + 4 * MiB, len(data)) - 1}" for start in range(0, len(data), 4 * MiB)}
    reopened = [r for r in client.ranges if r not in part_ranges]
    assert set(client.ranges) - set(reopened) == part_ranges
    assert len(reopened) == 1
    assert reopened[0] in {f"bytes={start + 2 * MiB}-{start + 4 * MiB - 1}" for start in (0, 4 * MiB)}


def test_given_a_flipped_byte_then_the_s3_checksum_catches_it_and_nothing_is_published(
    real_s3: Any, via_proxy: Any, proxy: FaultProxy, store: ModelStore, small_parts: Settings
) -> None:
    old = weights_pickle(2, seed=2)
    real_s3.put_object(Bucket=BUCKET, Key=KEY, Body=old)
    current = stage_object(real_s3, store, small_parts, BUCKET, KEY)
    new = weights_pickle(4, seed=3)
    real_s3.put_object(Bucket=BUCKET, Key=KEY, Body=new, ChecksumAlgorithm="CRC32")
    via_proxy.head_bucket(Bucket=BUCKET)
    proxy.arm(Fault("flip", after=700 * KiB))

    with pytest.raises(IntegrityError, match=r"CRC32 of the copied bytes is .*, S3 says"):
        stage_object(via_proxy, store, small_parts, BUCKET, KEY)

    assert proxy.fired == ["flip"]
    assert store.current_version("weights") == current.version
    assert store.list_versions("weights") == [current.version]
    assert published_bytes(store) == old
    assert not list((store.model_dir("weights") / "incoming").glob("*/*")), "a corrupt copy must not be resumed"


class ReplacingClient:
    """The real client; just before the 3rd part is requested, someone uploads a new object to the key."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.gets = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **kwargs: Any) -> Any:
        self.gets += 1
        if self.gets == 3:
            self._client.put_object(Bucket=BUCKET, Key=KEY, Body=weights_pickle(1, seed=9))
        return self._client.get_object(**kwargs)


def test_given_the_object_is_replaced_mid_copy_then_staging_fails_cleanly_on_the_etag(
    real_s3: Any, store: ModelStore, small_parts: Settings
) -> None:
    real_s3.put_object(Bucket=BUCKET, Key=KEY, Body=weights_pickle(6, seed=4))

    with pytest.raises(IntegrityError, match="was replaced while copying: its ETag is no longer"):
        stage_object(ReplacingClient(real_s3), store, small_parts, BUCKET, KEY)

    assert store.current_version("weights") is None
    assert not list((store.model_dir("weights") / "incoming").glob("*/*"))


KILL_AT_HALF = """
import json, os, pathlib, signal, sys, time
from bigpickle.config import Settings
from bigpickle.local.s3server import LocalS3Server
from bigpickle.staging import StageOptions, stage_object
from bigpickle.store import ModelStore
from bigpickle.transfer import TransferConfig
from bigpickle.units import MiB
import boto3

def journaled_parts():
    for journal in pathlib.Path(root).rglob("*.journal"):
        return sum(end - start + 1 for start, end in json.loads(journal.read_text())["parts"])
    return 0

def kill_at_half(progress):
    # Checkpoints run on their own thread: wait until one has recorded parts, say how many, then die.
    if progress.percent >= 50:
        deadline = time.monotonic() + 30
        while not journaled_parts() and time.monotonic() < deadline:
            time.sleep(0.01)
        print(journaled_parts(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

root, bucket, key = sys.argv[1:4]
settings = Settings.from_env({"MODELS_ROOT": root})
# 4 buffers: workers run at most 4 parts ahead of the 50% mark; a checkpoint starts after every fed part
config = TransferConfig(part_size=1 * MiB, concurrency=2, memory_budget=24 * MiB, checkpoint_interval=0)
stage_object(boto3.client("s3"), ModelStore(root), settings, bucket, key,
             options=StageOptions(progress=kill_at_half, config=config))
"""


def test_given_a_run_sigkilled_halfway_then_nothing_is_exposed_and_the_next_run_resumes(
    real_s3: Any, store: ModelStore, models_root: Path
) -> None:
    data = weights_pickle(16, seed=5)
    real_s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)

    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_HALF, str(models_root), BUCKET, KEY],
        env=os.environ,
        check=False,
        stdout=subprocess.PIPE,
        text=True,
    )
    journaled = int(killed.stdout.split()[-1])  # parts the journal held when the run was killed

    assert killed.returncode == -9
    assert journaled >= 1
    assert store.current_version("weights") is None and store.list_versions("weights") == []
    config = TransferConfig(part_size=1 * MiB, concurrency=2)
    settings = Settings.from_env({"MODELS_ROOT": str(models_root)})
    result = stage_object(real_s3, store, settings, BUCKET, KEY, options=StageOptions(config=config))
    assert result.status == "published"
    assert result.resumed_bytes is not None and journaled * MiB <= result.resumed_bytes < len(data)
    assert published_bytes(store) == data
    assert store.read_manifest("weights").sha256 == hashlib.sha256(data).hexdigest()


DUPLICATE = """
import json, sys, boto3
from bigpickle.config import Settings
from bigpickle.staging import stage_object
from bigpickle.store import ModelStore
root, bucket, key = sys.argv[1:4]
settings = Settings.from_env({"MODELS_ROOT": root, "STAGE_PART_SIZE_MIB": "1", "STAGE_CONCURRENCY": "2"})
print(json.dumps(stage_object(boto3.client("s3"), ModelStore(root), settings, bucket, key).as_dict()))
"""


def test_given_two_stagers_for_the_same_version_at_once_then_exactly_one_publishes(
    real_s3: Any, store: ModelStore, models_root: Path
) -> None:
    data = weights_pickle(48, seed=6)
    real_s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
    command = [sys.executable, "-c", DUPLICATE, str(models_root), BUCKET, KEY]

    stagers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    statuses = sorted(json.loads(p.communicate(timeout=120)[0].splitlines()[-1])["status"] for p in stagers)

    assert statuses[0] in ("already_published", "in_progress") and statuses[1] == "published"
    assert len(store.list_versions("weights")) == 1
    assert published_bytes(store) == data


MEASURE_RSS = """
import json, sys, boto3
from bigpickle.config import Settings
from bigpickle.staging import stage_object
from bigpickle.store import ModelStore
def status(field):
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith(field + ":")).split()[1]) * 1024
root, bucket, key, budget, part, concurrency = sys.argv[1:7]
settings = Settings.from_env({"MODELS_ROOT": root, "STAGE_MEMORY_BUDGET_MIB": budget, "STAGE_PART_SIZE_MIB": part,
                              "STAGE_CONCURRENCY": concurrency})
client = boto3.client("s3")
client.head_bucket(Bucket=bucket)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # peak RSS starts again from here: imports are the interpreter's, not the copy's
baseline = status("VmRSS")
result = stage_object(client, ModelStore(root), settings, bucket, key)
print(json.dumps({"status": result.status, "growth": status("VmHWM") - baseline}))
"""


def stage_measuring_rss(models_root: Path, key: str, budget_mib: int, part_mib: int, concurrency: int) -> Any:
    """Stage in a fresh interpreter; its status and peak RSS growth over the imported library + client."""
    args = [str(models_root), BUCKET, key, str(budget_mib), str(part_mib), str(concurrency)]
    out = subprocess.run(
        [sys.executable, "-c", MEASURE_RSS, *args], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(("part_mib", "concurrency"), [(4, 16), (64, 4)], ids=["many-small-parts", "parts-over-budget"])
def test_given_a_40_mib_budget_then_staging_a_much_larger_object_stays_within_it(
    real_s3: Any, store: ModelStore, models_root: Path, part_mib: int, concurrency: int
) -> None:
    data = weights_pickle(160, seed=7)
    real_s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
    expected_sha256 = hashlib.sha256(data).hexdigest()
    del data

    measured = stage_measuring_rss(models_root, KEY, budget_mib=40, part_mib=part_mib, concurrency=concurrency)

    assert measured["status"] == "published"
    assert measured["growth"] < 40 * MiB, f"peak RSS grew {measured['growth'] / MiB:.1f} MiB"
    assert store.read_manifest("weights").sha256 == expected_sha256


def test_the_stage_command_runs_the_same_engine_with_a_progress_bar(
    real_s3: Any, store: ModelStore, models_root: Path
) -> None:
    data = weights_pickle(3, seed=8)
    real_s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)

    done = subprocess.run(
        [sys.executable, "-m", "bigpickle.cli", "stage", f"s3://{BUCKET}/{KEY}", "--models-root", str(models_root)],
        check=True,
        capture_output=True,
        text=True,
    )

    assert json.loads(done.stdout)["status"] == "published"
    assert "100.0%" in done.stderr and "MiB/s" in done.stderr
    assert published_bytes(store) == data

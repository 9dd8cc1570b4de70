"""The staging engine's own rules, on moto S3 and a temp folder: memory budget arithmetic, the resume
journal, disk full, direct I/O, checkpoint + continuation near the Lambda time limit, progress steps."""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from bigpickle.config import Settings
from bigpickle.errors import StagingError, StorageFullError
from bigpickle.loading.formats import write_bigpickle
from bigpickle.safety.rewriter import OUTPUT_BUFFER_BYTES
from bigpickle.staging import CONTINUATION_KEY, StageOptions, stage_event, stage_object
from bigpickle.store import ModelStore
from bigpickle.transfer import OSUtils, RetryPolicy, TransferConfig
from bigpickle.transfer.journal import Journal
from bigpickle.transfer.progress import ProgressTracker
from bigpickle.units import MiB

from tests.helpers import BUCKET, published_bytes, s3_put_event, weights_pickle

KEY = "models/weights/model.pkl"


@pytest.fixture
def one_mib_parts(models_root: Path) -> Settings:
    return Settings.from_env(
        {"MODELS_ROOT": str(models_root), "STAGE_PART_SIZE_MIB": "1", "STAGE_CONCURRENCY": "2", "KEEP_VERSIONS": "2"}
    )


# -- memory budget --


@pytest.mark.parametrize(
    ("budget_mib", "part_mib", "concurrency"), [(128, 8, 8), (128, 8, 64), (64, 16, 8), (40, 4, 16), (1024, 8, 32)]
)
def test_the_buffers_and_workers_a_budget_allows_fit_inside_it(
    budget_mib: int, part_mib: int, concurrency: int
) -> None:
    config = TransferConfig(part_size=part_mib * MiB, concurrency=concurrency, memory_budget=budget_mib * MiB)

    assert 1 <= config.workers <= concurrency
    assert config.buffers >= config.workers
    assert config.peak_buffer_bytes + 16 * MiB + config.workers * 2 * MiB <= budget_mib * MiB


@pytest.mark.parametrize(("budget_mib", "concurrency"), [(128, 4), (128, 8), (40, 4)])
def test_a_holding_sink_s_write_buffers_come_out_of_the_copy_s_pool(budget_mib: int, concurrency: int) -> None:
    # given staging's rewriter, which keeps OUTPUT_BUFFER_BYTES for its own writes of the bytes it holds
    config = TransferConfig(part_size=32 * MiB, concurrency=concurrency, memory_budget=budget_mib * MiB)

    # when the copy sizes its pool beside it
    buffers = config.buffers_beside(OUTPUT_BUFFER_BYTES)

    # then the pool and the rewriter's buffers together hold no more than the pool alone, one buffer per worker kept
    assert buffers >= config.workers
    assert buffers * config.buffer_bytes + OUTPUT_BUFFER_BYTES <= config.peak_buffer_bytes or buffers == config.workers
    assert config.buffers_beside(0) == config.buffers


def test_a_budget_too_small_for_one_buffer_is_refused_with_the_minimum() -> None:
    with pytest.raises(ValueError, match=r"cannot hold one 8 MiB buffer .* at least 26 MiB"):
        TransferConfig(part_size=64 * MiB, memory_budget=24 * MiB)


def test_parts_larger_than_a_buffer_cost_buffers_not_parts() -> None:
    config = TransferConfig(part_size=64 * MiB, concurrency=2, memory_budget=64 * MiB, buffer_size=8 * MiB)

    assert config.workers == 2
    assert config.peak_buffer_bytes == config.buffers * 8 * MiB <= 64 * MiB - 16 * MiB - 2 * 2 * MiB


# -- journal --


def test_a_journal_resumes_only_the_object_version_and_part_size_it_was_written_for(tmp_path: Path) -> None:
    identity = {"bucket": "b", "key": "k", "etag": '"e1"', "version_id": None, "size": 10, "part_size": 1}
    Journal(tmp_path / "model.pkl", identity).save([0, 1, 2, 7])

    assert Journal(tmp_path / "model.pkl", identity).load() == {0, 1, 2, 7}
    assert Journal(tmp_path / "model.pkl", {**identity, "etag": '"e2"'}).load() is None
    assert Journal(tmp_path / "model.pkl", {**identity, "part_size": 2}).load() is None
    assert Journal(tmp_path / "other.pkl", identity).load() is None


# -- disk full / file too large --


class FullDisk(OSUtils):
    """The file system fills up after `good_writes` parts (or refuses the file's size outright)."""

    def __init__(self, error: int, good_writes: int = 1) -> None:
        self.error = error
        self.good_writes = good_writes

    def allocate(self, fd: int, size: int) -> None:
        if self.error == errno.EFBIG:
            raise OSError(errno.EFBIG, "File too large")
        super().allocate(fd, size)

    def pwrite(self, fd: int, data: memoryview, offset: int) -> None:
        if self.good_writes <= 0:
            raise OSError(self.error, "No space left on device")
        self.good_writes -= 1
        super().pwrite(fd, data, offset)


@pytest.mark.parametrize(("error", "message"), [(errno.ENOSPC, "no space left"), (errno.EFBIG, "file too large")])
def test_given_the_disk_fills_up_then_the_error_says_so_the_copy_is_removed_and_current_serves(
    moto_s3: Any, store: ModelStore, one_mib_parts: Settings, error: int, message: str
) -> None:
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=weights_pickle(1))
    current = stage_object(moto_s3, store, one_mib_parts, BUCKET, KEY)
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=weights_pickle(4, seed=1))

    with pytest.raises(StorageFullError, match=f"cannot write .*model.pkl \\(\\d+ bytes\\): {message}"):
        stage_object(moto_s3, store, one_mib_parts, BUCKET, KEY, options=StageOptions(osutils=FullDisk(error)))

    assert store.current_version("weights") == current.version
    assert store.list_versions("weights") == [current.version]
    assert not list((store.model_dir("weights") / "incoming").glob("*/*"))


def test_given_a_write_fails_otherwise_then_it_is_not_retried_as_a_network_fault(
    moto_s3: Any, store: ModelStore, one_mib_parts: Settings
) -> None:
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=weights_pickle(4, seed=1))
    backoffs: list[float] = []
    options = StageOptions(osutils=FullDisk(errno.EIO), retry=RetryPolicy(sleep=backoffs.append))

    with pytest.raises(OSError) as raised:
        stage_object(moto_s3, store, one_mib_parts, BUCKET, KEY, options=options)

    assert raised.value.errno == errno.EIO
    assert backoffs == []
    assert store.current_version("weights") is None


# -- direct I/O --

# A .bpk upload is published as it came, so the copy writes every byte of it; a .pkl upload's array bytes
# are written once, by the rewriter (tests/unit/test_staging_resume.py).
BPK_KEY = "models/weights/model.bpk"


def weights_bpk(megabytes: int, seed: int = 0) -> bytes:
    """`weights_pickle`'s array in the bigpickle layout."""
    out = io.BytesIO()
    write_bigpickle(pickle.loads(weights_pickle(megabytes, seed)), out)
    return out.getvalue()


class DirectIO(OSUtils):
    """Direct I/O on any file system: the direct descriptor is a plain one (so this runs where O_DIRECT is
    refused) and every write is recorded by the descriptor it went through. `refuse`: direct writes fail
    with EINVAL, as on file systems that take O_DIRECT at open but not at write."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.direct_fds: set[int] = set()
        self.direct: list[tuple[int, int]] = []  # (offset, length) of each write, by descriptor kind
        self.cached: list[tuple[int, int]] = []

    def open_direct(self, path: Path) -> int | None:
        fd = os.open(path, os.O_WRONLY)
        self.direct_fds.add(fd)
        return fd

    def pwrite(self, fd: int, data: memoryview, offset: int) -> None:
        if fd in self.direct_fds:
            if self.refuse:
                raise OSError(errno.EINVAL, "Invalid argument")
            self.direct.append((offset, len(data)))
        else:
            self.cached.append((offset, len(data)))
        super().pwrite(fd, data, offset)


def test_given_direct_io_whole_blocks_bypass_the_page_cache_and_only_the_unaligned_tail_does_not(
    moto_s3: Any, store: ModelStore, one_mib_parts: Settings
) -> None:
    data = weights_bpk(3)
    assert len(data) % 4096  # the object ends mid-block
    moto_s3.put_object(Bucket=BUCKET, Key=BPK_KEY, Body=data)
    osutils = DirectIO()

    stage_object(moto_s3, store, one_mib_parts, BUCKET, BPK_KEY, options=StageOptions(osutils=osutils))

    assert all(offset % 4096 == 0 and length % 4096 == 0 for offset, length in osutils.direct)
    tail = len(data) - len(data) % 4096
    assert osutils.cached == [(tail, len(data) - tail)]
    assert sum(length for _, length in osutils.direct) == tail
    assert published_bytes(store) == weights_pickle(3)


def test_given_a_file_system_that_refuses_direct_writes_then_staging_writes_through_the_page_cache(
    moto_s3: Any, store: ModelStore, one_mib_parts: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    data = weights_bpk(3, seed=2)
    moto_s3.put_object(Bucket=BUCKET, Key=BPK_KEY, Body=data)
    osutils = DirectIO(refuse=True)

    stage_object(moto_s3, store, one_mib_parts, BUCKET, BPK_KEY, options=StageOptions(osutils=osutils))

    assert osutils.direct == []
    assert sum(length for _, length in osutils.cached) >= len(data)
    assert published_bytes(store) == weights_pickle(3, seed=2)
    assert "direct I/O refused" in caplog.text


def test_with_stage_direct_io_off_every_write_goes_through_the_page_cache(
    moto_s3: Any, store: ModelStore, models_root: Path
) -> None:
    data = weights_bpk(2, seed=3)
    moto_s3.put_object(Bucket=BUCKET, Key=BPK_KEY, Body=data)
    settings = Settings.from_env(
        {"MODELS_ROOT": str(models_root), "STAGE_PART_SIZE_MIB": "1", "STAGE_DIRECT_IO": "off"}
    )
    osutils = DirectIO()

    stage_object(moto_s3, store, settings, BUCKET, BPK_KEY, options=StageOptions(osutils=osutils))

    assert osutils.direct_fds == set()
    assert sum(length for _, length in osutils.cached) == len(data)
    assert published_bytes(store) == weights_pickle(2, seed=3)


# -- checkpoints off the copy's path --


class SlowSync(OSUtils):
    """The first fsync waits until every byte has been fed to the sinks (or `patience` runs out), as a
    disk that takes long to flush; `fail` makes it fail instead, as NFS reports a lost write."""

    def __init__(self, *, patience: float = 0.0, fail: bool = False) -> None:
        self.patience = patience
        self.fail = fail
        self.fed = threading.Event()
        self.first_sync_gave_up: bool | None = None  # True: feeding could not finish while it waited

    def fsync(self, fd: int) -> None:
        if self.first_sync_gave_up is None:
            if self.fail:
                self.first_sync_gave_up = False
                raise OSError(errno.EIO, "Input/output error")
            self.first_sync_gave_up = not self.fed.wait(self.patience)
        super().fsync(fd)


def test_a_checkpoint_waiting_for_the_disk_does_not_stop_the_copy(
    moto_s3: Any, store: ModelStore, one_mib_parts: Settings
) -> None:
    data = weights_pickle(8, seed=4)
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
    osutils = SlowSync(patience=10)
    config = TransferConfig(part_size=1 * MiB, concurrency=2, checkpoint_interval=0)

    def progress(report: Any) -> None:
        if report.done == report.total:
            osutils.fed.set()

    stage_object(
        moto_s3,
        store,
        one_mib_parts,
        BUCKET,
        KEY,
        options=StageOptions(osutils=osutils, config=config, progress=progress),
    )

    assert osutils.first_sync_gave_up is False  # every byte was fed while the first checkpoint's fsync waited
    assert published_bytes(store) == data


def test_a_checkpoint_whose_fsync_fails_fails_the_copy_and_nothing_is_published(
    moto_s3: Any, store: ModelStore, one_mib_parts: Settings
) -> None:
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=weights_pickle(4, seed=5))
    config = TransferConfig(part_size=1 * MiB, concurrency=2, checkpoint_interval=0)
    options = StageOptions(osutils=SlowSync(fail=True), config=config)

    with pytest.raises(OSError) as raised:
        stage_object(moto_s3, store, one_mib_parts, BUCKET, KEY, options=options)

    assert raised.value.errno == errno.EIO
    assert store.current_version("weights") is None


# -- time limit: checkpoint, continue, bounded --


class Clock:
    """A Lambda context whose remaining time runs out after `calls` questions."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:stage"

    def get_remaining_time_in_millis(self) -> int:
        self.calls -= 1
        return 900_000 if self.calls > 0 else 1_000


def test_near_the_time_limit_staging_checkpoints_and_a_continuation_finishes_it(
    moto_s3: Any, store: ModelStore, one_mib_parts: Settings
) -> None:
    data = weights_pickle(6)
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
    event = s3_put_event(BUCKET, KEY)
    invoked: list[dict[str, Any]] = []
    stage = functools.partial(
        stage_event,
        client=moto_s3,
        store=store,
        settings=one_mib_parts,
        invoke=invoked.append,
        records=[(BUCKET, KEY, None)],
    )

    first = stage(event, Clock(calls=3))

    assert [r.status for r in first] == ["checkpointed"]
    assert store.current_version("weights") is None
    assert len(invoked) == 1 and invoked[0][CONTINUATION_KEY] == {"count": 1}
    assert invoked[0]["Records"] == event["Records"]

    second = stage(invoked[0], Clock(calls=10**6))

    assert [r.status for r in second] == ["published"]
    # a .pkl upload resumes from the parts fed to the rewriter (with it, those are the durable ones)
    assert second[0].resumed_bytes and second[0].resumed_bytes >= 1 * MiB
    assert store.read_manifest("weights").sha256 == hashlib.sha256(data).hexdigest()
    assert len(invoked) == 1


def test_continuations_are_bounded(moto_s3: Any, store: ModelStore, one_mib_parts: Settings) -> None:
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=weights_pickle(3))
    event = {**s3_put_event(BUCKET, KEY), CONTINUATION_KEY: {"count": one_mib_parts.stage_max_continuations}}

    with pytest.raises(StagingError, match="did not finish within 9 invocations"):
        stage_event(
            event,
            Clock(calls=2),
            client=moto_s3,
            store=store,
            settings=one_mib_parts,
            invoke=lambda _p: None,
            records=[(BUCKET, KEY, None)],
        )


# -- retention --


def test_published_versions_beyond_keep_versions_are_removed_but_never_the_current_one(
    moto_s3: Any, store: ModelStore, one_mib_parts: Settings
) -> None:
    versions = []
    for seed in range(3):
        moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=weights_pickle(1, seed=seed))
        versions.append(stage_object(moto_s3, store, one_mib_parts, BUCKET, KEY).version)
    assert store.list_versions("weights") == sorted(versions)[-2:]  # KEEP_VERSIONS=2

    store.set_current("weights", sorted(versions)[-2])  # rolled back to the older kept version
    assert store.prune("weights", keep=1) == []
    assert store.list_versions("weights") == sorted(versions)[-2:]
    assert store.current_version("weights") == sorted(versions)[-2]


# -- progress --


def test_progress_is_reported_at_every_ten_percent_with_rate_and_eta() -> None:
    now = [0.0]
    reports: list[Any] = []
    tracker = ProgressTracker(100 * MiB, reports.append, clock=lambda: now[0])

    for _ in range(25):
        now[0] += 0.5
        tracker.tick(4 * MiB)

    assert [round(r.percent) for r in reports] == [12, 20, 32, 40, 52, 60, 72, 80, 92, 100]
    assert reports[0].mib_per_second == pytest.approx(8.0)
    assert reports[0].eta_seconds == pytest.approx(11.0)
    assert reports[-1].as_log()["eta_s"] == 0.0

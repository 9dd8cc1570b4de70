"""A rewritten upload's array bytes are written once (to model.bpk), and its copy still resumes: a run
checkpointed anywhere, in an array's bytes or in the opcodes around them, resumes without downloading what
it made durable and publishes the same file as an uninterrupted run; a journal that does not fit starts over."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from bigpickle.config import Settings
from bigpickle.safety.rewriter import PickleRewriter
from bigpickle.staging import StageOptions, StageResult, stage_object
from bigpickle.store import ModelStore
from bigpickle.transfer import OSUtils
from bigpickle.transfer.journal import JOURNAL_SUFFIX
from bigpickle.units import MiB

from tests.helpers import BUCKET


def array_pickle(protocol: int) -> bytes:
    """One 6 MiB float64 array, as numpy pickles it with `protocol` (its bytes in band)."""
    return pickle.dumps(np.random.default_rng(protocol).random(6 * MiB // 8), protocol=protocol)


def joblib_file() -> bytes:
    out = io.BytesIO()
    joblib.dump({"coef": np.random.default_rng(7).random(6 * MiB // 8), "name": "w"}, out)
    return out.getvalue()


def in_band_first() -> bytes:
    """Two MiB of bytes that are not an array (they stay in the stream), then a 4 MiB array."""
    return pickle.dumps((b"x" * (2 * MiB), np.random.default_rng(3).random(4 * MiB // 8)), protocol=5)


UPLOADS = {
    "protocol 5": ("models/weights/model.pkl", lambda: array_pickle(5)),
    "protocol 4": ("models/weights/model.pkl", lambda: array_pickle(4)),
    "joblib": ("models/weights/model.joblib", joblib_file),
}


@pytest.fixture
def settings(models_root: Path) -> Settings:
    return Settings.from_env({"MODELS_ROOT": str(models_root), "STAGE_PART_SIZE_MIB": "1", "STAGE_CONCURRENCY": "2"})


class RangeCountingClient:
    """The moto client; adds up the bytes every GET asks for."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.fetched = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        first, last = kwargs["Range"].removeprefix("bytes=").split("-")
        self.fetched += int(last) - int(first) + 1
        return self._client.get_object(**kwargs)


class WriteCountingOS(OSUtils):
    """Counts the bytes the copy writes into the upload file (the rewriter writes model.bpk by itself)."""

    def __init__(self) -> None:
        self.written = 0

    def pwrite(self, fd: int, data: memoryview, offset: int) -> None:
        self.written += len(data)
        super().pwrite(fd, data, offset)


def stop_after(fraction: float) -> StageOptions:
    """Options whose copy checkpoints once `fraction` of the object was fed to the sinks."""
    fed = [0.0]

    def progress(report: Any) -> None:
        fed[0] = report.done / report.total

    return StageOptions(should_stop=lambda: fed[0] >= fraction, progress=progress)


def published_file(store: ModelStore, result: StageResult) -> bytes:
    manifest = store.read_manifest("weights", result.version)
    return (store.version_dir("weights", result.version) / manifest.file).read_bytes()


def uninterrupted(moto_s3: Any, tmp_path: Path, key: str) -> bytes:
    settings = Settings.from_env({"MODELS_ROOT": str(tmp_path / "other"), "STAGE_PART_SIZE_MIB": "1"})
    store = ModelStore(settings.models_root)
    return published_file(store, stage_object(moto_s3, store, settings, BUCKET, key))


@pytest.mark.parametrize("upload", list(UPLOADS))
def test_given_a_copy_checkpointed_inside_an_array_when_resumed_then_it_publishes_the_same_file(
    moto_s3: Any, store: ModelStore, settings: Settings, tmp_path: Path, upload: str
) -> None:
    key, make = UPLOADS[upload]
    data = make()
    moto_s3.put_object(Bucket=BUCKET, Key=key, Body=data)

    first = stage_object(moto_s3, store, settings, BUCKET, key, options=stop_after(0.4))
    client = RangeCountingClient(moto_s3)
    second = stage_object(client, store, settings, BUCKET, key)

    assert first.status == "checkpointed"
    assert second.status == "published"
    assert second.resumed_bytes and 0.3 * len(data) < second.resumed_bytes < len(data)
    assert client.fetched == len(data) - second.resumed_bytes  # only what the first run had not made durable
    assert store.read_manifest("weights").sha256 == hashlib.sha256(data).hexdigest()
    assert store.read_manifest("weights").details["layout"]["rewritten"]
    assert published_file(store, second) == uninterrupted(moto_s3, tmp_path, key)


def test_given_a_copy_checkpointed_in_bytes_kept_in_the_stream_when_resumed_then_it_publishes_the_same_file(
    moto_s3: Any, store: ModelStore, settings: Settings, tmp_path: Path
) -> None:
    key, data = "models/weights/model.pkl", in_band_first()
    moto_s3.put_object(Bucket=BUCKET, Key=key, Body=data)

    first = stage_object(moto_s3, store, settings, BUCKET, key, options=stop_after(0.15))
    second = stage_object(moto_s3, store, settings, BUCKET, key)

    assert first.status == "checkpointed"
    assert second.resumed_bytes and second.resumed_bytes <= 2 * MiB  # the checkpoint was in the in-band bytes
    assert store.read_manifest("weights").sha256 == hashlib.sha256(data).hexdigest()
    assert published_file(store, second) == uninterrupted(moto_s3, tmp_path, key)


def _foreign(journal: dict[str, Any]) -> dict[str, Any]:
    return {**journal, "identity": {**journal["identity"], "etag": '"another upload"'}}


def _beyond_the_file(journal: dict[str, Any]) -> dict[str, Any]:
    return {**journal, "held": [[r[0], r[1], r[2] + 10**9] for r in journal["held"]]}


def _not_a_prefix(journal: dict[str, Any]) -> dict[str, Any]:
    return {**journal, "parts": [[1, 2]]}


@pytest.mark.parametrize(
    "edit", [_foreign, _beyond_the_file, _not_a_prefix, None], ids=lambda e: getattr(e, "__name__", "garbage")
)
def test_given_a_journal_that_does_not_fit_then_the_copy_starts_over_and_publishes_the_same_file(
    moto_s3: Any, store: ModelStore, settings: Settings, tmp_path: Path, edit: Any
) -> None:
    key, data = "models/weights/model.pkl", array_pickle(5)
    moto_s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    first = stage_object(moto_s3, store, settings, BUCKET, key, options=stop_after(0.4))
    journal = store.incoming_dir("weights", first.version) / ("model.pkl" + JOURNAL_SUFFIX)
    assert json.loads(journal.read_text())["held"]
    journal.write_text("{not json" if edit is None else json.dumps(edit(json.loads(journal.read_text()))))

    second = stage_object(moto_s3, store, settings, BUCKET, key)

    assert second.status == "published" and not second.resumed_bytes
    assert store.read_manifest("weights").sha256 == hashlib.sha256(data).hexdigest()
    assert published_file(store, second) == uninterrupted(moto_s3, tmp_path, key)


def test_the_array_bytes_of_a_rewritten_upload_are_not_written_to_the_upload_file(
    moto_s3: Any, store: ModelStore, settings: Settings
) -> None:
    key, data = "models/weights/model.pkl", array_pickle(5)
    moto_s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    osutils = WriteCountingOS()

    halfway = dataclasses.replace(stop_after(0.5), osutils=osutils)
    checkpointed = stage_object(moto_s3, store, settings, BUCKET, key, options=halfway)
    upload = store.incoming_dir("weights", checkpointed.version) / "model.pkl"
    allocated = upload.stat().st_blocks * 512
    stage_object(moto_s3, store, settings, BUCKET, key, options=StageOptions(osutils=osutils))

    assert checkpointed.status == "checkpointed"
    assert allocated < 64 * 1024  # a sparse file: the opcodes, not the array
    assert osutils.written < 64 * 1024 < len(data)
    assert store.read_manifest("weights").details["layout"]["rewritten"]


@pytest.mark.parametrize("upload", list(UPLOADS))
def test_every_byte_the_rewriter_holds_is_in_its_file_verbatim(upload: str, tmp_path: Path) -> None:
    key, make = UPLOADS[upload]
    data = make()
    rewriter = PickleRewriter(tmp_path / "model.bpk", "joblib" if key.endswith(".joblib") else "pickle")
    for start in range(0, len(data), 1000003):
        rewriter.update(data[start : start + 1000003])
    rewriter.finish()
    rewriter.flush()
    written = (tmp_path / "model.bpk").read_bytes()
    rewriter.close()

    assert sum(length for _, length, _ in rewriter.held) > 0.99 * 6 * MiB
    for start, length, at in rewriter.held:
        assert data[start : start + length] == written[at : at + length]


def test_given_the_rewriter_gives_up_after_holding_an_array_then_the_upload_is_published_whole(
    moto_s3: Any, store: ModelStore, settings: Settings
) -> None:
    key, out = "models/weights/model.joblib", io.BytesIO()
    big_endian = np.arange(512 * 1024, dtype=">f8")  # a byte order the rewriter does not map: it gives up
    joblib.dump([np.random.default_rng(1).random(512 * 1024), big_endian], out)
    data = out.getvalue()
    moto_s3.put_object(Bucket=BUCKET, Key=key, Body=data)

    result = stage_object(moto_s3, store, settings, BUCKET, key)

    layout = store.read_manifest("weights").details["layout"]
    assert not layout["rewritten"] and "does not map" in layout["reason"]
    assert published_file(store, result) == data  # the array bytes it held went back into the upload

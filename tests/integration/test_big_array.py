"""The original failure: one numpy array larger than 2**31 - 1 bytes in a pickle. Staged from the real
local S3 server with peak RSS under the default 128 MiB budget, and the sha256 of the bytes on disk
matches the upload; then the predict side loads it through the production path (restricted unpickler,
sha256 verified while reading). Needs ~2.2 GB of RAM for a moment and ~7 GB of disk; `make test` runs it,
and on its own:

    .venv/bin/pytest -m slow tests/integration/test_big_array.py
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bigpickle.store import ModelStore
from bigpickle.units import MiB

from tests.helpers import BUCKET, load_published
from tests.integration.test_staging_engine import stage_measuring_rss

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "models/huge-array/model.pkl"


def test_a_pickle_of_one_array_over_2_gib_stages_with_bounded_memory_and_the_right_sha256(
    real_s3: Any, store: ModelStore, models_root: Path, tmp_path: Path
) -> None:
    array = np.random.default_rng(0).random(2**31 // 8 + 4096)  # 2 GiB + 32 KiB of float64
    head, tail = array[:1000].copy(), array[-1000:].copy()
    nbytes = array.nbytes
    assert nbytes > 2**31 - 1
    source = tmp_path / "model.pkl"
    with open(source, "wb") as f:
        pickle.dump(array, f, protocol=5)  # in-band: one BYTEARRAY8 opcode of the whole buffer
    del array
    sha256 = hashlib.sha256()
    with open(source, "rb") as f:
        while chunk := f.read(8 * MiB):
            sha256.update(chunk)
    real_s3.upload_file(str(source), BUCKET, KEY)
    size = source.stat().st_size
    source.unlink()

    measured = stage_measuring_rss(models_root, KEY, budget_mib=128, part_mib=8, concurrency=8)

    print(f"staged {size} bytes; peak RSS grew {measured['growth'] / MiB:.1f} MiB")
    assert measured["status"] == "published"
    assert measured["growth"] < 128 * MiB
    manifest = store.read_manifest("huge-array")
    assert manifest.bytes == size and manifest.sha256 == sha256.hexdigest()
    assert manifest.details["pickle_protocol"] == 5
    layout = manifest.details["layout"]
    assert manifest.format == "bigpickle" and layout["buffer_bytes"] == nbytes  # the array, out of band
    assert store.model_path(manifest).stat().st_size == layout["file_bytes"]

    loaded = load_published(store, "huge-array")

    assert loaded.nbytes > 2**31 - 1
    assert np.array_equal(loaded[:1000], head) and np.array_equal(loaded[-1000:], tail)

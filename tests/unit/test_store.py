"""The EFS layout: names cannot escape the root, publishing is atomic, the pointer decides what serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bigpickle.errors import InvalidModelNameError, ModelNotFoundError, ModelNotReadyError, StoreBusyError
from bigpickle.store import Manifest, ModelStore


def manifest(name: str = "iris", version: str = "v1", payload: bytes = b"model") -> Manifest:
    return Manifest(
        name=name,
        version=version,
        file="model.pkl",
        format="pickle",
        bytes=len(payload),
        sha256="0" * 64,
        staged_at="2026-11-26T12:00:00+00:00",
        bucket="b",
        key=f"models/{name}/m.pkl",
        etag='"abc"',
    )


def stage_files(store: ModelStore, m: Manifest, payload: bytes = b"model") -> None:
    incoming = store.prepare_incoming(m.name, m.version)
    (incoming / m.file).write_bytes(payload)


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "", "/etc", "x" * 129, ".hidden", "a\\b", "a b"])
def test_names_that_could_escape_the_root_are_rejected(store: ModelStore, name: str) -> None:
    with pytest.raises(InvalidModelNameError):
        store.model_dir(name)


def test_given_a_published_version_then_it_is_current_and_its_manifest_round_trips(store: ModelStore) -> None:
    m = manifest()
    stage_files(store, m)

    store.publish(m)

    assert store.current_version("iris") == "v1"
    assert store.read_manifest("iris") == m
    assert store.model_path(m).read_bytes() == b"model"
    assert not store.incoming_dir("iris", "v1").exists()
    assert store.list_models() == ["iris"]


def test_given_two_versions_when_rolled_back_then_the_pointer_moves_and_nothing_is_deleted(store: ModelStore) -> None:
    for version in ("v1", "v2"):
        stage_files(store, manifest(version=version))
        store.publish(manifest(version=version))
    assert store.current_version("iris") == "v2"

    store.set_current("iris", "v1")

    assert store.read_manifest("iris").version == "v1"
    assert store.list_versions("iris") == ["v1", "v2"]


def test_pointing_at_an_unpublished_version_is_refused(store: ModelStore) -> None:
    with pytest.raises(ModelNotFoundError):
        store.set_current("iris", "v9")


def test_unknown_model_is_not_found_and_a_model_without_a_version_is_not_ready(store: ModelStore) -> None:
    with pytest.raises(ModelNotFoundError):
        store.read_manifest("ghost")
    store.prepare_incoming("iris", "v1")  # staging started, nothing published yet
    with pytest.raises(ModelNotReadyError):
        store.read_manifest("iris")


def test_a_pointer_to_a_missing_version_is_a_clear_not_ready(store: ModelStore, models_root: Path) -> None:
    (models_root / "iris").mkdir()
    (models_root / "iris" / "current").write_text('{"version": "v7"}')

    with pytest.raises(ModelNotReadyError, match="v7"):
        store.read_manifest("iris")


def test_publishing_without_the_model_file_fails_and_leaves_the_current_version(store: ModelStore) -> None:
    stage_files(store, manifest(version="v1"))
    store.publish(manifest(version="v1"))
    store.prepare_incoming("iris", "v2")  # no model file written

    with pytest.raises(FileNotFoundError):
        store.publish(manifest(version="v2"))

    assert store.current_version("iris") == "v1"


HOLD_LOCK = """
import sys, time
from bigpickle.store import ModelStore
with ModelStore(sys.argv[1]).lock_version("iris", "v1") as held:
    print("held" if held else "busy", flush=True)
    time.sleep(30)
"""


def test_a_version_lock_is_held_by_one_stager_across_processes_and_threads(store: ModelStore) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with store.lock_version("iris", "v1") as held:
            assert not held
        with store.lock_version("iris", "v2") as other_version:
            assert other_version
    finally:
        holder.kill()
        holder.wait()

    with store.lock_version("iris", "v1") as held, store.lock_version("iris", "v1") as same_process_again:
        assert held and not same_process_again


def test_incoming_files_survive_prepare_so_a_killed_copy_can_resume(store: ModelStore) -> None:
    incoming = store.prepare_incoming("iris", "v1")
    (incoming / "model.pkl").write_bytes(b"half a model")

    assert (store.prepare_incoming("iris", "v1") / "model.pkl").read_bytes() == b"half a model"


def test_pruning_removes_stale_incoming_copies_of_older_versions_nobody_is_staging(store: ModelStore) -> None:
    store.prepare_incoming("iris", "v0")  # a copy abandoned before v1 was published
    stage_files(store, manifest(version="v1"))
    store.publish(manifest(version="v1"))
    store.prepare_incoming("iris", "v2")  # a newer copy in progress

    store.prune("iris", keep=3)

    assert not store.incoming_dir("iris", "v0").exists()
    assert store.incoming_dir("iris", "v2").exists()


HOLD_MODEL_LOCK = """
import sys, time
from bigpickle.store import ModelStore
with ModelStore(sys.argv[1]).lock_model("iris"):
    print("held", flush=True)
    time.sleep(30)
"""


def test_a_change_waits_for_the_model_lock_another_process_holds_then_is_busy_which_a_retry_fixes(
    models_root: Path,
) -> None:
    impatient = ModelStore(models_root, lock_wait_seconds=0.3)
    stage_files(impatient, manifest(version="v1"))
    impatient.publish(manifest(version="v1"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_MODEL_LOCK, str(models_root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for change in (lambda: impatient.prune("iris", keep=1), lambda: impatient.set_current("iris", "v1")):
            with pytest.raises(StoreBusyError) as busy:
                change()
            assert busy.value.retryable
    finally:
        holder.kill()
        holder.wait()

    assert impatient.prune("iris", keep=1) == []  # the lock died with its holder

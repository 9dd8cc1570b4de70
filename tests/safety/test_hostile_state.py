"""Hostile state in allowlisted objects is refused at staging (trial load + audit, the model is never
published) and at load (load_verified's audit), and a load that kills the process is not tried again."""

from __future__ import annotations

import multiprocessing
import os
import resource
from pathlib import Path
from typing import Any

import pytest
from bigpickle.config import Settings
from bigpickle.errors import UnsafePickleError
from bigpickle.loading.quarantine import guarded
from bigpickle.safety.audit import ModelAuditError, audit_model
from bigpickle.safety.unpickler import load_verified
from bigpickle.staging import stage_object
from bigpickle.store import ModelStore

from tests.helpers import BUCKET
from tests.safety.hostile_state import HOSTILE_STATE, forged_dtype_view

CHILD_ADDRESS_SPACE = 8 << 30  # enough for this interpreter, far below what the bombs ask for
AUDITED = sorted(name for name, (_build, today) in HOSTILE_STATE.items() if today)
AT_LOAD = sorted(HOSTILE_STATE)  # the scanner refuses the rest (references, not calls; dtypes; allocation)


AT_STAGING = sorted(HOSTILE_STATE)


@pytest.mark.parametrize("name", AT_STAGING)
def test_hostile_state_is_refused_at_staging_and_never_published(
    name: str, moto_s3: Any, store: ModelStore, settings: Settings
) -> None:
    moto_s3.put_object(Bucket=BUCKET, Key="models/evil/model.pkl", Body=HOSTILE_STATE[name][0]())

    with pytest.raises(UnsafePickleError):
        stage_object(moto_s3, store, settings, BUCKET, "models/evil/model.pkl")

    assert store.current_version("evil") is None and store.list_versions("evil") == []


@pytest.mark.parametrize("name", AUDITED)
def test_hostile_state_is_refused_at_load_naming_the_object_and_invariant(name: str, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(HOSTILE_STATE[name][0]())

    with pytest.raises(ModelAuditError) as refused:
        load_verified(path, "pickle")

    assert refused.value.reasons[0].startswith("model")  # the path inside the object graph comes first


def _load_in_child(path: Path, conn: Any) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
    try:
        load_verified(path, "pickle")
        conn.send("loaded")
    except UnsafePickleError as exc:
        conn.send(f"refused: {exc.reasons}")
    except BaseException as exc:
        conn.send(f"failed: {type(exc).__name__}")
    os._exit(0)


@pytest.mark.parametrize("name", AT_LOAD)
def test_every_hostile_state_file_is_refused_by_the_unpickler_itself(name: str, tmp_path: Path) -> None:
    """The predict side's load alone (no trial load, no child of its own) refuses before anything runs."""
    path = tmp_path / "model.pkl"
    path.write_bytes(HOSTILE_STATE[name][0]())
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_load_in_child, args=(path, send), daemon=True)

    child.start()
    send.close()
    outcome = receive.recv() if receive.poll(20) else "hung"
    child.join(timeout=5)
    if child.is_alive():
        child.kill()
        child.join()

    assert outcome.startswith("refused"), f"{outcome} (exit code {child.exitcode})"


def test_a_dtype_that_claims_more_than_its_buffer_is_refused_by_the_audit() -> None:
    with pytest.raises(ModelAuditError, match=r"model\['coef_'\]: array of shape \(1, 1000\)"):
        audit_model({"coef_": forged_dtype_view()})


def test_a_load_that_never_returned_is_not_tried_again(tmp_path: Path) -> None:
    # given a load that died in the middle (its marker stays, as after a segfault)
    calls: list[Path] = []

    def dies(path: Path, fmt: str, **_options: Any) -> Any:
        calls.append(path)
        raise SystemExit  # stands in for the process dying: the marker is written before the load runs

    markers = tmp_path / "markers"
    model = tmp_path / "model.pkl"
    model.write_bytes(b"x")
    load = guarded(dies, markers)
    marker_left = guarded(lambda *a, **k: list(markers.iterdir()), markers)

    # when the same file is loaded again
    with pytest.raises(SystemExit):
        load(model, "pickle", sha256="abc")
    seen_while_loading = marker_left(tmp_path / "other.pkl", "pickle", sha256="abc")

    # then: a marker exists during a load, and one that vanished cleanly leaves none
    assert len(seen_while_loading) == 1 and not list(markers.iterdir())
    assert calls == [model]

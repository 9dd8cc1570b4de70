"""Specs of the recorded scan verdict (issue 12's cold start): staging scans the very stream it publishes and
records the key of that verdict; a load hashes that stream before unpickling it and skips the scan only when
it is that stream and the scanner, the allowlist and PICKLE_ALLOWLIST_EXTRA are the ones in force.
Anything else (no verdict, another key, MODEL_VERIFY=full, a stream changed since) is scanned again or
refused before a byte of it runs."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bigpickle.config import Settings
from bigpickle.errors import ModelIntegrityError, UnsafePickleError
from bigpickle.loading.formats import VERIFY_FULL, load_model_file
from bigpickle.safety import Allowlist
from bigpickle.safety.layout import MAGIC, TRAILER, index_bytes
from bigpickle.safety.scanner import verdict_key
from bigpickle.safety.uploads import check_bigpickle
from bigpickle.staging import stage_object
from bigpickle.store import ModelStore
from sklearn._loss.link import IdentityLink
from sklearn.neighbors import KNeighborsClassifier

from tests.helpers import BUCKET
from tests.safety.hostile_state import frame_desync


def bpk_of_stream(path: Path, stream: bytes) -> str:
    """A .bpk holding `stream` and no buffers (layout version 1); its stream digest, as staging records it."""
    index = index_bytes(1, 0, len(stream), [])
    path.write_bytes(stream + index + TRAILER.pack(len(stream), len(index), MAGIC))
    return hashlib.sha256(stream + index).hexdigest()


def load(path: Path, layout: dict[str, Any], **options: Any) -> Any:
    return load_model_file(path, "bigpickle", mmap=True, layout=layout, **options)


@pytest.fixture
def identity_link_untouched() -> Any:
    before = vars(IdentityLink).copy()
    yield
    assert vars(IdentityLink) == before, "a stream set state on an allowlisted class for the whole process"


def test_staging_records_the_verdict_on_the_stream_it_publishes(
    moto_s3: Any, store: ModelStore, settings: Settings
) -> None:
    # given a .pkl upload, staged (rewritten to model.bpk)
    X = np.random.default_rng(4).random((3000, 12))
    model = KNeighborsClassifier().fit(X, X[:, 0] > 0.5)
    moto_s3.put_object(Bucket=BUCKET, Key="models/knn/model.pkl", Body=pickle.dumps(model, protocol=5))
    stage_object(moto_s3, store, settings, BUCKET, "models/knn/model.pkl")

    # when the published file is checked as an uploaded .bpk would be
    manifest = store.read_manifest("knn")
    report, checked = check_bigpickle(store.model_path(manifest), Allowlist())

    # then the manifest's verdict key and digest are those of the stream in the file
    layout = manifest.details["layout"]
    assert report.safe and checked is not None
    assert layout["scanned_by"] == verdict_key(Allowlist()) == checked.details["layout"]["scanned_by"]
    assert layout["stream_sha256"] == checked.details["layout"]["stream_sha256"]
    assert np.array_equal(load(store.model_path(manifest), layout).predict(X), model.predict(X))


@pytest.mark.parametrize(
    "recorded",
    ["no verdict (staged before verdicts were recorded)", "a verdict under another PICKLE_ALLOWLIST_EXTRA"],
)
def test_a_stream_without_a_verdict_under_the_rules_in_force_is_scanned_at_load(
    recorded: str, tmp_path: Path, identity_link_untouched: None
) -> None:
    # given the scanner/loader desync stream, with its true digest in the manifest
    path = tmp_path / "model.bpk"
    layout: dict[str, Any] = {"stream_sha256": bpk_of_stream(path, frame_desync())}
    if "another" in recorded:
        layout["scanned_by"] = verdict_key(Allowlist(frozenset({("numpy", "nan_to_num")})))

    # when it is loaded, then the scanner refuses it before the unpickler runs the hidden opcodes
    with pytest.raises(UnsafePickleError, match="crosses the end of its frame"):
        load(path, layout)


def test_model_verify_full_scans_even_a_stream_with_a_verdict(tmp_path: Path, identity_link_untouched: None) -> None:
    # given the desync stream with a verdict key that matches (as a forged manifest would carry)
    path = tmp_path / "model.bpk"
    layout = {"stream_sha256": bpk_of_stream(path, frame_desync()), "scanned_by": verdict_key(Allowlist())}

    # when MODEL_VERIFY=full, then the stream is scanned all the same
    with pytest.raises(UnsafePickleError, match="crosses the end of its frame"):
        load(path, layout, verify=VERIFY_FULL)


def test_a_stream_changed_since_its_verdict_is_never_unpickled(tmp_path: Path, identity_link_untouched: None) -> None:
    # given a verdict and digest recorded for a harmless stream
    harmless = tmp_path / "harmless.bpk"
    layout = {
        "stream_sha256": bpk_of_stream(harmless, pickle.dumps({"weights": [1.0, 2.0]}, protocol=5)),
        "scanned_by": verdict_key(Allowlist()),
    }
    # and the file then replaced by the desync stream (damage, or a write that bypassed staging)
    bpk_of_stream(harmless, frame_desync())

    # when it is loaded, then the digest refuses it (503, re-stage or roll back) and nothing of it ran
    with pytest.raises(ModelIntegrityError, match="the manifest says"):
        load(harmless, layout)


def test_the_fail_fast_scanner_refuses_a_frame_crossing_before_the_unpickler_runs_what_follows(
    tmp_path: Path, identity_link_untouched: None
) -> None:
    # given the desync stream published as a plain .pkl (no verdict: scanned while it is read)
    path = tmp_path / "model.pkl"
    path.write_bytes(frame_desync())

    # when it is loaded, then the scanner refuses the length that crosses its frame as soon as bytes past the
    # frame arrive: before the unpickler, which re-reads after the frame, runs the hidden BUILD
    with pytest.raises(UnsafePickleError, match="crosses the end of its frame"):
        load_model_file(path, "pickle", sha256=hashlib.sha256(path.read_bytes()).hexdigest())

"""A crash never loops: a published file whose load kills the process (here: numpy building an object
scalar from raw bytes, a segfault) answers 503 `model_invalid` in the same execution environment instead
of being loaded, and killing it, again."""

from __future__ import annotations

import faulthandler
import hashlib
import json
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

from bigpickle.loading import quarantine
from bigpickle.local.events import load_event
from bigpickle.local.runtime import predict_handler
from bigpickle.store import Manifest, ModelStore

from tests.safety.hostile_state import object_scalar_from_raw_bytes

VERSION = "20261130T120000Z-crash"


def _publish_raw(root: Path, name: str, data: bytes) -> None:
    """Put bytes on EFS as if published (as a model staged before the trial load existed would be)."""
    store = ModelStore(root)
    path = store.prepare_incoming(name, VERSION) / "model.pkl"
    path.write_bytes(data)
    store.publish(
        Manifest(
            name=name,
            version=VERSION,
            file=path.name,
            format="pickle",
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            staged_at="2026-11-30T12:00:00+00:00",
            bucket="b",
            key=f"models/{name}/model.pkl",
            etag='"crash"',
        )
    )


def _metadata(name: str) -> dict[str, Any]:
    event = load_event("metadata")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/v1/models/{name}"
    return event


def _segfault(*_args: Any, **_options: Any) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _first_environment(path: Path, sha256: str) -> None:
    faulthandler.disable()  # the crash is expected: no traceback dump in the test output
    # The file's forged object dtype segfaulted numpy until the scanner learnt to refuse it; any load that
    # kills the process must not loop either: this environment's load, through the registry's guard, dies
    # of a signal.
    quarantine.guarded(_segfault)(path, "pickle", sha256=sha256)


def test_a_version_whose_load_killed_the_process_answers_503_model_invalid(lambda_env: Path, context: Any) -> None:
    # given a published file whose load segfaults, requested once by a process that dies of it
    _publish_raw(lambda_env, "crashy", object_scalar_from_raw_bytes())
    manifest = ModelStore(lambda_env).read_manifest("crashy")
    published = ModelStore(lambda_env).model_path(manifest)
    first = multiprocessing.get_context("fork").Process(target=_first_environment, args=(published, manifest.sha256))
    first.start()
    first.join(timeout=60)
    assert first.exitcode is not None and first.exitcode < 0  # killed by a signal, as Lambda would see it

    # when the same environment (same /tmp) is asked again
    answer = predict_handler()(_metadata("crashy"), context)

    # then it refuses without loading: 503 model_invalid, naming the file
    assert answer["statusCode"] == 503
    error = json.loads(answer["body"])["error"]
    assert error["code"] == "model_invalid"
    assert "killed this function the last time it was loaded" in error["message"]

"""A load that kills the process is never tried again by the same environment: a marker is written before
each load and removed after it, whatever its outcome, so a marker still present at the next load means the
last attempt died inside it (a segfault or an OOM kill). That version then answers 503 `model_invalid`
until a new version is published or the marker is removed.

The marker lives in the local temporary directory (/tmp in Lambda), which survives a crashed runtime only
for as long as Lambda keeps the execution environment; the staging-side trial load (safety.trial) is what
keeps such a model from being published at all. docs/security.md says why both exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bigpickle.errors import ModelNotReadyError
from bigpickle.loading.formats import load_model_file

MARKER_DIR = Path(tempfile.gettempdir()) / "bigpickle-loading"


class ModelInvalidError(ModelNotReadyError):
    """An earlier load of this exact file killed the process: it is not loaded again."""

    code = "model_invalid"


def _marker(path: Path, sha256: str | None, markers: Path) -> str:
    key = hashlib.sha256(f"{os.path.abspath(path)}\0{sha256}".encode()).hexdigest()[:32]
    return os.path.join(markers, f"{key}.loading")


def guarded(loader: Callable[..., Any], markers: Path = MARKER_DIR) -> Callable[..., Any]:
    """`loader` (registry.Loader signature) that refuses a file whose previous load never returned.

    The marker is made with one exclusive create (it is on every cold start's path: plain system calls,
    no pathlib round trips), and the folder only when that create finds it missing."""

    def load(path: Path, fmt: str, *, sha256: str | None = None, **options: Any) -> Any:
        marker = _marker(path, sha256, markers)
        try:
            _create(marker)
        except FileExistsError:
            raise ModelInvalidError(
                f"{Path(path).name} (sha256 {sha256}) killed this function the last time it was loaded; it is "
                "not loaded again. Publish a new version or roll back (docs/security.md)"
            ) from None
        except FileNotFoundError:
            os.makedirs(markers, exist_ok=True)
            _create(marker)
        try:
            return loader(path, fmt, sha256=sha256, **options)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(marker)

    return load


def _create(marker: str) -> None:
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # its name is all it says


# The registry's default loader.
guarded_load_model_file = guarded(load_model_file)

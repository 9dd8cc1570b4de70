"""Durable file writes: flush a path's metadata, replace a file so readers never see it half-written.

A leaf module (no bigpickle imports), so the copy's journal and the store share it without depending on
each other.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's metadata to stable storage (a rename is durable only after this)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write beside the target, fsync, rename: readers see the old content or the new, never a mix.
    `data` is the bytes, or a function that writes them to the file (a model too big to hold twice)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_path(path.parent)

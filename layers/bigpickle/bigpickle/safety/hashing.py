"""Hash a model file as it is read, so verifying it costs no second pass.

`HashingReader` wraps a binary file for `pickle.Unpickler`: every byte the unpickler reads is fed, in
order, to sinks (the sha256, and a fail-fast opcode scanner) before the unpickler sees it. It offers
`readinto`, so pickle still reads each large array with one call straight into the array's buffer
(1.0x the model's bytes), and on purpose no `peek`: without it the C unpickler cannot look ahead, so it
only ever executes bytes the scanner has already passed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from bigpickle.checksums import Sink
from bigpickle.errors import ModelIntegrityError
from bigpickle.units import KiB, MiB

READ_SIZE = 8 * MiB  # bounded reads when draining or hashing a whole file
MAX_LINE = 64 * KiB


class HashingReader:
    """A read-only view of `raw` that feeds what it returns to `sinks`."""

    def __init__(self, raw: BinaryIO, sinks: Sequence[Sink]) -> None:
        self.raw = raw
        self.sinks = list(sinks)
        self.name = getattr(raw, "name", "")
        self.bytes_read = 0

    def _feed(self, data: bytes | memoryview) -> None:
        self.bytes_read += len(data)
        for sink in self.sinks:
            sink.update(data)

    def read(self, size: int = READ_SIZE) -> bytes:
        # never "everything": an unbounded read of a many-GB model is the failure this project exists for
        data = self.raw.read(READ_SIZE if size is None or size < 0 else size)
        self._feed(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self.raw.readinto(buffer) or 0
        view = memoryview(buffer)
        self._feed(view.cast("B")[:n] if view.format != "B" or view.ndim != 1 else view[:n])
        return n

    def readline(self, size: int = MAX_LINE) -> bytes:
        data = self.raw.readline(MAX_LINE if size is None or size < 0 else min(size, MAX_LINE))
        self._feed(data)
        return data

    def drain(self) -> int:
        """Read what the unpickler left (bytes after STOP) through the sinks; the count read."""
        before = self.bytes_read
        while self.read(READ_SIZE):
            pass
        return self.bytes_read - before


def check_sha256(path: Path, expected: str | None, actual: str) -> None:
    if expected is not None and actual != expected:
        raise ModelIntegrityError(
            f"{path}: sha256 is {actual}, its manifest says {expected}; the file was corrupted or replaced "
            "after staging. Re-stage the model (upload it to S3 again) or roll back to another version."
        )


def hash_file(path: Path, sinks: Sequence[Sink] = ()) -> str:
    """sha256 of a file in bounded reads, feeding the same bytes to `sinks`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        reader = HashingReader(f, [digest, *sinks])
        reader.drain()
    return digest.hexdigest()

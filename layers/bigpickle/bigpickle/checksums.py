"""Running digests of a byte stream: the sha256 we record, and S3's full-object checksums we verify.

S3 returns one checksum per object with `ChecksumMode=ENABLED`. Only full-object values can be checked
against the bytes; a composite value (multipart upload, shown with a `-N` suffix) is a checksum of part
checksums and is skipped, as botocore does.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


def _crt() -> Any:
    """awscrt's checksums, imported on first use: only the stage function ships awscrt (its own layer), and
    the predict function, which imports this module for `Sink`, never computes a CRC32C or CRC64NVME."""
    try:
        from awscrt import checksums
    except ImportError as missing:  # never skip a check silently: S3's default checksum (CRC64NVME) needs this
        raise ImportError(
            "bigpickle needs awscrt to verify S3's CRC32C and CRC64NVME checksums (pip install awscrt; the "
            "stage function's layer ships it)"
        ) from missing
    return checksums


class Sink(Protocol):
    """Consumes the object's bytes in order."""

    def update(self, data: bytes | memoryview, /) -> None: ...


class _Crc:
    """A CRC with the hashlib interface (update / digest)."""

    def __init__(self, step: Callable[[Any, int], int], width_bytes: int) -> None:
        self._step = step
        self._width = width_bytes
        self._value = 0

    def update(self, data: bytes | memoryview) -> None:
        self._value = self._step(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")


CHECKSUM_FACTORIES: dict[str, Callable[[], Any]] = {
    "CRC32": lambda: _Crc(zlib.crc32, 4),
    # awscrt reads any buffer (a memoryview of a part buffer) without copying it
    "CRC32C": lambda: _Crc(_crt().crc32c, 4),
    "CRC64NVME": lambda: _Crc(_crt().crc64nvme, 8),
    "SHA1": hashlib.sha1,
    "SHA256": hashlib.sha256,
}


@dataclass
class ChecksumVerifier:
    """Computes one S3 checksum algorithm over the stream and compares it with the expected value."""

    algorithm: str
    expected: str

    def __post_init__(self) -> None:
        self._digest = CHECKSUM_FACTORIES[self.algorithm]()

    def update(self, data: bytes | memoryview) -> None:
        self._digest.update(data)

    @property
    def actual(self) -> str:
        return base64.b64encode(self._digest.digest()).decode()

    def matches(self) -> bool:
        return self.actual == self.expected


def full_object_checksum(head: Mapping[str, Any]) -> tuple[str, str] | None:
    """(algorithm, base64 value) of the first full-object checksum S3 reported (every one S3 has is computed)."""
    if head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    for algorithm in ("CRC64NVME", "CRC32C", "CRC32", "SHA256", "SHA1"):
        value = head.get(f"Checksum{algorithm}")
        if value and "-" not in value:
            return algorithm, value
    return None

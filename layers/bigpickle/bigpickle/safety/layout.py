"""The bigpickle file layout (`.bpk`): where its pickle stream and out-of-band buffers lie, read and checked
completely before anything trusts it.

    version 2 (what staging and `bigpickle convert` write; buffers first, so they stream to disk as read):
    [buffer 0][zeros to 64][buffer 1]...[zeros to 64][protocol-5 pickle stream, PROTO .. STOP][index][trailer]
    version 1 (`save_model(model, path, "bigpickle")`, from a model in memory):
    [protocol-5 pickle stream][zeros to 4096][buffer 0][zeros to 64][buffer 1]...[index][trailer]

    index   JSON {"format": "bigpickle", "version": 1|2, "stream_offset": S (v2), "pickle_bytes": N,
                  "buffers": [[offset, length, copied], ...]}   (buffers in the order the stream uses them)
    trailer the last 24 bytes: u64le index offset, u64le index length, b"BIGPKL01"

`copied` marks buffers an estimator copies out of the mapping when it is unpickled (scikit-learn's tree
nodes: `Tree.__setstate__` memcpys them), which a mapped load still pays for in anonymous memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from bigpickle.checksums import Sink
from bigpickle.formats import BIGPICKLE
from bigpickle.safety.hashing import READ_SIZE
from bigpickle.units import MiB

MAGIC = b"BIGPKL01"
TRAILER = struct.Struct("<QQ8s")
STREAM_ALIGN = 4096  # version 1: the first buffer starts on a page
BUFFER_ALIGN = 64  # cache-line / SIMD alignment for every array
MAX_INDEX_BYTES = 64 * MiB


class LayoutError(ValueError):
    """A file that does not have a valid bigpickle layout; the message says what is wrong."""


@dataclass(frozen=True)
class Layout:
    """Where a bigpickle file's parts are: its stream and each out-of-band buffer, in stream order."""

    version: int
    stream_offset: int
    pickle_bytes: int
    buffers: tuple[tuple[int, int, bool], ...]  # (offset, length, copied on unpickle)
    index_offset: int
    index_length: int

    @property
    def buffer_bytes(self) -> int:
        return sum(length for _, length, _ in self.buffers)

    @property
    def copied_bytes(self) -> int:
        return sum(length for _, length, copied in self.buffers if copied)

    @property
    def mapped_bytes(self) -> int:
        """What a mapped load leaves in the file's mapping (page cache, not anonymous memory)."""
        return self.buffer_bytes - self.copied_bytes

    def index(self) -> bytes:
        return index_bytes(self.version, self.stream_offset, self.pickle_bytes, self.buffers)


def index_bytes(version: int, stream_offset: int, pickle_bytes: int, buffers: Any) -> bytes:
    index: dict[str, Any] = {"format": BIGPICKLE, "version": version, "pickle_bytes": pickle_bytes}
    if version == 2:
        index["stream_offset"] = stream_offset
    index["buffers"] = [[offset, length, copied] for offset, length, copied in buffers]
    return json.dumps(index, separators=(",", ":")).encode()


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise LayoutError(f"the index's {what} is {value!r}, not a non-negative integer")
    return value


def _trailer(f: BinaryIO, size: int) -> tuple[int, int] | None:
    """(index offset, index length) from the bigpickle trailer at the end of `f`, or None without one."""
    if size < TRAILER.size:
        return None
    f.seek(size - TRAILER.size)
    index_offset, index_length, magic = TRAILER.unpack(f.read(TRAILER.size))
    return (index_offset, index_length) if magic == MAGIC else None


def ends_with_trailer(f: BinaryIO, size: int) -> bool:
    """Whether the file's bytes end as a bigpickle file does (one small read; the index is not checked)."""
    return _trailer(f, size) is not None


def read_layout(f: BinaryIO, size: int) -> Layout:
    """Read and check a bigpickle file's trailer and index (two small reads at the end of `f`, `size` bytes):
    the index is a JSON object of the schema above, every offset and length is an integer, every part lies
    inside the file before the index, and no two parts overlap. Raises LayoutError saying which rule broke."""
    if size < TRAILER.size:
        raise LayoutError(f"the file is {size} bytes, too short for a bigpickle trailer")
    trailer = _trailer(f, size)
    if trailer is None:
        raise LayoutError("the file does not end with the bigpickle trailer")
    index_offset, index_length = trailer
    if index_length > MAX_INDEX_BYTES or index_offset + index_length != size - TRAILER.size:
        raise LayoutError(f"the trailer puts the index at {index_offset} (+{index_length}), not just before it")
    f.seek(index_offset)
    raw = f.read(index_length)
    try:
        index = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise LayoutError(f"the index is not JSON ({exc})") from None
    if not isinstance(index, dict):
        raise LayoutError(f"the index is a JSON {type(index).__name__}, not an object")
    version = index.get("version")
    if index.get("format") != BIGPICKLE or version not in (1, 2):
        raise LayoutError(f"unsupported index {index.get('format')!r} version {version!r}")
    pickle_bytes = _int(index.get("pickle_bytes"), "pickle_bytes")
    stream_offset = _int(index.get("stream_offset"), "stream_offset") if version == 2 else 0
    entries = index.get("buffers")
    if not isinstance(entries, list):
        raise LayoutError("the index's buffers is not a list")
    buffers = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], bool)):
            raise LayoutError(f"buffer {i} is {entry!r}, not [offset, length, copied]")
        buffers.append((_int(entry[0], f"buffer {i} offset"), _int(entry[1], f"buffer {i} length"), entry[2]))
    parts = sorted([(stream_offset, pickle_bytes, "the stream"), *((o, n, f"buffer {i}") for i, (o, n, _) in
        enumerate(buffers))])  # fmt: skip
    end, previous = 0, "the start of the file"
    for offset, length, name in parts:
        if offset < end:
            raise LayoutError(f"{name} at {offset} (+{length}) overlaps {previous}")
        end, previous = offset + length, name
    if end > index_offset:
        raise LayoutError(f"{previous} ends at {end}, past the index at {index_offset}")
    if any(b[0] <= a[0] for a, b in itertools.pairwise(buffers)):
        raise LayoutError("the buffers are not in file order")
    return Layout(version, stream_offset, pickle_bytes, tuple(buffers), index_offset, index_length)


def hash_stream(f: BinaryIO, layout: Layout, sinks: Sequence[Sink] = ()) -> str:
    """The published file's `stream_sha256`: the sha256 of its stream (bounded reads, each also fed to `sinks`,
    a scanner) then of its index."""
    digest = hashlib.sha256()
    f.seek(layout.stream_offset)
    left = layout.pickle_bytes
    while left and (chunk := f.read(min(left, READ_SIZE))):
        digest.update(chunk)
        for sink in sinks:
            sink.update(chunk)
        left -= len(chunk)
    return finish_stream_hash(digest, f, layout)


def finish_stream_hash(digest: Any, f: BinaryIO, layout: Layout) -> str:
    """`stream_sha256` from a sha256 that already holds the stream (a load that read it through the
    unpickler): the index added, the hex digest."""
    f.seek(layout.index_offset)
    digest.update(f.read(layout.index_length))
    return digest.hexdigest()


def check_against_scan(layout: Layout, stream_bytes: int | None, oob_references: int) -> None:
    """The index agrees with the stream the scanner read: the stream ends where the scanner saw STOP, and
    it refers to exactly one buffer per index entry."""
    if stream_bytes != layout.pickle_bytes:
        raise LayoutError(
            f"the index says the stream is {layout.pickle_bytes} bytes; its STOP ends it at {stream_bytes}"
        )
    if oob_references != len(layout.buffers):
        raise LayoutError(
            f"the stream refers to {oob_references} out-of-band buffers; the index lists {len(layout.buffers)}"
        )

"""Model file formats: how each one's bytes become arrays, and the one step that turns a file into an object.

    format      extension      load memory (MODEL_MMAP=off)          MODEL_MMAP=on
    pickle      .pkl .pickle   1.0x for protocol 4/5, ~2.3x for 0-3   no effect
    joblib      .joblib        ~1.0x                                  joblib.load(mmap_mode="r")
    bigpickle   .bpk           1.0x (bounded readinto per buffer)     read-only views of an mmap: ~0

A "bigpickle" file is a protocol-5 pickle whose large array buffers travel out of band, stored after the
stream and aligned, so they can be mapped straight from EFS and handed to the unpickler as `buffers=`:

    [protocol-5 pickle stream, from offset 0 to STOP][zeros to 4096][buffer 0][zeros to 64][buffer 1]...
    [index: JSON {"format": "bigpickle", "version": 1, "pickle_bytes": N, "buffers": [[offset, length, copied], ...]}]
    [trailer, last 24 bytes: u64le index offset, u64le index length, b"BIGPKL01"]

Unlike a joblib file, the stream is one plain pickle (a scanner reads it to STOP and knows where the rest
lies), and the index says exactly which bytes are mapped, so the capacity guard can price a mapped load.
`copied` marks buffers an estimator copies out of the mapping when it is unpickled (scikit-learn's tree
nodes: `Tree.__setstate__` memcpys them), which a mapped load still pays for in anonymous memory.
"""

from __future__ import annotations

import contextlib
import json
import mmap as mmaplib
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bigpickle.errors import ModelLoadError
from bigpickle.safety.allowlist import Allowlist
from bigpickle.safety.unpickler import load_verified
from bigpickle.store import MODEL_FORMATS, model_format, write_file_atomically
from bigpickle.units import KiB, MiB

PICKLE = "pickle"
JOBLIB = "joblib"
BIGPICKLE = "bigpickle"

PICKLE_PROTOCOL = 5
STREAM_ALIGN = 4096  # the first buffer starts on a page: mapped arrays never share a page with the stream
BUFFER_ALIGN = 64  # cache-line / SIMD alignment for every array
OUT_OF_BAND_MIN_BYTES = 64 * KiB  # smaller buffers stay in the stream: mapping them saves nothing
IO_CHUNK = 64 * MiB  # bounded reads and writes: never ask a file for "everything"
MAGIC = b"BIGPKL01"
TRAILER = struct.Struct("<QQ8s")
MAX_INDEX_BYTES = 64 * MiB


# ---- file -> object (issue 6 owns this body: restricted unpickler, sha256 while reading) ----
def load_model_file(
    path: Path, fmt: str, *, mmap: bool = False, sha256: str | None = None, allowlist: Allowlist | None = None
) -> Any:
    """The one place a model file becomes an object. `mmap` maps large arrays read-only where the format allows.

    Only allowlisted globals are imported, the opcode scanner reads ahead of the unpickler, and the object
    is returned only when the file's sha256 equals `sha256` (the manifest's); bigpickle.safety does all three.
    """
    if fmt == BIGPICKLE:
        with contextlib.closing(oob_buffers(path, read_layout(path), mmap=mmap)) as buffers:
            return load_verified(path, fmt, sha256=sha256, buffers=buffers, allowlist=allowlist)
    return load_verified(path, fmt, sha256=sha256, mmap=mmap, allowlist=allowlist)


# ---- end of the file -> object step ----


@dataclass(frozen=True)
class Layout:
    """Where a bigpickle file's parts are: the stream's length and each out-of-band buffer."""

    pickle_bytes: int
    buffers: tuple[tuple[int, int, bool], ...]  # (offset, length, copied on unpickle)

    @property
    def buffer_bytes(self) -> int:
        return sum(length for _, length, _ in self.buffers)

    @property
    def copied_bytes(self) -> int:
        return sum(length for _, length, copied in self.buffers if copied)


def read_layout(path: Path) -> Layout:
    """Read and check a bigpickle file's index (two small reads at the end of the file)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size < TRAILER.size:
            raise ModelLoadError(f"{path} is too short to be a bigpickle file")
        f.seek(size - TRAILER.size)
        index_offset, index_length, magic = TRAILER.unpack(f.read(TRAILER.size))
        if magic != MAGIC or index_length > MAX_INDEX_BYTES or index_offset + index_length != size - TRAILER.size:
            raise ModelLoadError(f"{path} has no valid bigpickle trailer")
        f.seek(index_offset)
        index = json.loads(f.read(index_length))
    if index.get("format") != BIGPICKLE or index.get("version") != 1:
        raise ModelLoadError(f"{path}: unsupported bigpickle index {index.get('format')!r} v{index.get('version')!r}")
    layout = Layout(int(index["pickle_bytes"]), tuple((int(o), int(n), bool(c)) for o, n, c in index["buffers"]))
    end = layout.pickle_bytes
    for offset, length, _ in layout.buffers:
        if offset < end or length < 0 or offset + length > index_offset:
            raise ModelLoadError(f"{path}: buffer at {offset} (+{length}) overlaps the stream or another buffer")
        end = offset + length
    return layout


def oob_buffers(path: Path, layout: Layout, *, mmap: bool) -> Iterator[memoryview | np.ndarray]:
    """The out-of-band buffers in stream order, produced as the unpickler asks for them.

    Mapped: read-only views of one shared mapping (the arrays keep it alive). Read: one uninitialised
    byte array per buffer filled by bounded `readinto`, so each array is allocated once, never copied (1.0x).
    """
    if mmap:
        with open(path, "rb") as f:
            mapping = mmaplib.mmap(f.fileno(), 0, access=mmaplib.ACCESS_READ)
        view = memoryview(mapping)
        for offset, length, _ in layout.buffers:
            yield view[offset : offset + length]
        return
    with open(path, "rb", buffering=0) as f:
        for offset, length, _ in layout.buffers:
            buffer = np.empty(length, dtype=np.uint8)  # not zero-filled: readinto is the first touch
            target = memoryview(buffer)
            f.seek(offset)
            done = 0
            while done < length:
                n = f.readinto(target[done : done + IO_CHUNK])
                if not n:
                    raise ModelLoadError(f"{path} ends inside buffer at {offset} (+{length})")
                done += n
            yield buffer


class _BufferCollector(pickle.Pickler):
    """Pickler that sends large contiguous buffers out of band and notes which ones trees will copy."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file, protocol=PICKLE_PROTOCOL, buffer_callback=self._collect)
        self.buffers: list[pickle.PickleBuffer] = []
        self.copied: set[int] = set()

    def _collect(self, buffer: pickle.PickleBuffer) -> bool:
        if memoryview(buffer).nbytes < OUT_OF_BAND_MIN_BYTES:
            return True  # in band
        self.buffers.append(buffer)
        return False

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if cls.__name__ == "Tree" and cls.__module__.startswith("sklearn.tree"):
            reduced = obj.__reduce__()
            self.copied.update(v.ctypes.data for v in reduced[2].values() if isinstance(v, np.ndarray))
            return reduced
        return NotImplemented


def _pad(f: BinaryIO, align: int) -> None:
    f.write(b"\0" * (-f.tell() % align))


def _write_chunked(f: BinaryIO, data: memoryview) -> None:
    for start in range(0, data.nbytes, IO_CHUNK):
        f.write(data[start : start + IO_CHUNK])


def write_bigpickle(model: Any, f: BinaryIO) -> Layout:
    """Write `model` as a bigpickle file to a seekable binary file at offset 0 (no copy of any array)."""
    pickler = _BufferCollector(f)
    pickler.dump(model)
    pickle_bytes = f.tell()
    _pad(f, STREAM_ALIGN)
    entries = []
    for buffer in pickler.buffers:
        _pad(f, BUFFER_ALIGN)
        raw = buffer.raw()
        copied = np.frombuffer(raw, dtype=np.uint8).ctypes.data in pickler.copied
        entries.append((f.tell(), raw.nbytes, copied))
        _write_chunked(f, raw)
    index = json.dumps({"format": BIGPICKLE, "version": 1, "pickle_bytes": pickle_bytes, "buffers": entries}).encode()
    index_offset = f.tell()
    f.write(index)
    f.write(TRAILER.pack(index_offset, len(index), MAGIC))
    return Layout(pickle_bytes, tuple(entries))


def save_model(model: Any, path: Path, fmt: str) -> None:
    """Write `model` in `fmt` beside `path` and rename it into place (readers never see half a file)."""

    def write(f: BinaryIO) -> None:
        if fmt == BIGPICKLE:
            write_bigpickle(model, f)
        elif fmt == JOBLIB:
            import joblib

            joblib.dump(model, f)
        else:
            pickle.dump(model, f, protocol=PICKLE_PROTOCOL)

    write_file_atomically(path, write)


def format_of(path: Path) -> str:
    fmt = model_format(path.name)
    if fmt is None:
        raise ValueError(f"{path}: unknown model extension; use one of {', '.join(MODEL_FORMATS)}")
    return fmt


def pickle_protocol(path: Path) -> int | None:
    """The protocol a pickle stream declares (its PROTO opcode); None for protocols 0-1 and compressed files."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head[1] if len(head) == 2 and head[:1] == pickle.PROTO else None


def convert(source: Path, target: Path) -> dict[str, Any]:
    """Re-save a model in the format `target`'s extension names (.bpk: the zero-copy format)."""
    source_format, target_format = format_of(source), format_of(target)
    protocol = pickle_protocol(source)
    model = load_model_file(source, source_format, mmap=True)  # mapped where possible: one copy, the new file
    save_model(model, target, target_format)
    return {
        "source": str(source),
        "source_format": source_format,
        "source_protocol": protocol,
        "source_bytes": source.stat().st_size,
        "target": str(target),
        "target_format": target_format,
        "target_protocol": PICKLE_PROTOCOL,
        "target_bytes": target.stat().st_size,
    }

"""Model file formats: how each one's bytes become arrays, and the one step that turns a file into an object.

    format      extension      load memory (MODEL_MMAP=off)          MODEL_MMAP=on (the default)
    pickle      .pkl .pickle   1.0x for protocol 4/5, ~2.3x for 0-3   no effect
    joblib      .joblib        ~1.0x                                  joblib.load(mmap_mode="r")
    bigpickle   .bpk           1.0x (bounded readinto per buffer)     read-only views of an mmap: ~0

Staging rewrites every .pkl/.pickle/.joblib upload into the bigpickle layout (safety/rewriter.py); the
other two formats are loaded only when the rewriter could not prove an upload exact and published it as
it came. The layout itself (stream, aligned out-of-band buffers, index, trailer) is in safety/layout.py.

What a bigpickle load verifies (MODEL_VERIFY, docs/security.md "Integrity at load"): the stream and the
index are read through the sha256 and the fail-fast scanner, always; the buffers are hashed too only with
`verify="full"` (then the whole file's sha256 is checked before anything is unpickled).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap as mmaplib
import os
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bigpickle.durable import write_file_atomically
from bigpickle.errors import ModelIntegrityError, ModelLoadError, ModelNotReadyError
from bigpickle.formats import BIGPICKLE, JOBLIB, MODEL_FORMATS, model_format
from bigpickle.safety.allowlist import Allowlist
from bigpickle.safety.audit import audit_model
from bigpickle.safety.hashing import READ_SIZE, HashingReader, check_sha256, hash_file
from bigpickle.safety.layout import (
    BUFFER_ALIGN,
    MAGIC,
    STREAM_ALIGN,
    TRAILER,
    Layout,
    LayoutError,
    check_against_scan,
    finish_stream_hash,
    hash_stream,
    index_bytes,
)
from bigpickle.safety.layout import read_layout as read_layout_from
from bigpickle.safety.rewriter import OUT_OF_BAND_MIN_BYTES, rewrite_file
from bigpickle.safety.rewriter import file_checksum as file_checksum_of
from bigpickle.safety.scanner import PickleScanner, verdict_key
from bigpickle.safety.unpickler import RestrictedUnpickler, load_verified
from bigpickle.units import MiB

PICKLE_PROTOCOL = 5
IO_CHUNK = 64 * MiB  # bounded reads and writes: never ask a file for "everything"
VERIFY_STREAM = "stream"  # MODEL_VERIFY default: hash the stream and the index at load
VERIFY_FULL = "full"  # hash every byte before serving

__all__ = ["BUFFER_ALIGN", "MAGIC", "STREAM_ALIGN", "TRAILER", "Layout"]


# ---- file -> object ----
def load_model_file(
    path: Path,
    fmt: str,
    *,
    mmap: bool = False,
    sha256: str | None = None,
    allowlist: Allowlist | None = None,
    layout: Mapping[str, Any] | None = None,
    verify: str = VERIFY_STREAM,
) -> Any:
    """The one place a model file becomes an object. `mmap` maps large arrays read-only where the format allows.

    Only allowlisted globals are imported and the opcode scanner reads ahead of the unpickler. `sha256` is
    the manifest's digest of the file as uploaded; `layout` the manifest's `details["layout"]`, whose
    digests a bigpickle file published by staging is checked against instead.
    """
    if fmt == BIGPICKLE:
        digests = layout or {}
        return load_bigpickle(
            path,
            mmap=mmap,
            file_sha256=sha256,
            file_checksum=digests.get("file_checksum"),
            stream_sha256=digests.get("stream_sha256"),
            full=verify == VERIFY_FULL,
            allowlist=allowlist,
            scanned_by=digests.get("scanned_by"),
        )
    return load_verified(path, fmt, sha256=sha256, mmap=mmap, allowlist=allowlist)


class _Region:
    """`length` bytes of `f` from its current position, read in bounded pieces (what the unpickler reads)."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self.f = f
        self.left = length
        self.name = getattr(f, "name", "")

    def read(self, size: int = READ_SIZE) -> bytes:
        data = self.f.read(min(self.left, READ_SIZE if size is None or size < 0 else size))
        self.left -= len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")
        n = self.f.readinto(view[: self.left]) or 0
        self.left -= n
        return n

    def readline(self, size: int = -1) -> bytes:
        limit = self.left if size is None or size < 0 else min(size, self.left)
        data = self.f.readline(limit)
        self.left -= len(data)
        return data


def load_bigpickle(
    path: Path,
    *,
    mmap: bool,
    file_sha256: str | None,
    stream_sha256: str | None,
    full: bool,
    file_checksum: str | None = None,
    allowlist: Allowlist | None = None,
    scanned_by: str | None = None,
) -> Any:
    """Load a bigpickle file: its layout checked completely, its stream read once through the sha256 and a
    fail-fast scanner into the restricted unpickler, its buffers mapped (or read) as the stream asks.

    With `stream_sha256` (staging's digest of the stream then the index) only those bytes are hashed;
    without it, or with `full`, the whole file is checked first: against `file_checksum` (a rewritten
    file's, "ALGORITHM:hex") or else `file_sha256` (a file published as uploaded). When staging scanned
    this very stream under the rules and allowlist in force here (`scanned_by` is their `verdict_key`),
    the stream is hashed first and, if it is that stream, unpickled without scanning it again."""
    allowlist = (allowlist or Allowlist()).for_format(BIGPICKLE)
    if file_checksum and full:
        actual = file_checksum_of(path, file_checksum.split(":")[0])
        if actual != file_checksum:
            raise _damaged(path, f"its checksum is {actual}, the manifest says {file_checksum}", ModelIntegrityError)
    elif full or stream_sha256 is None:
        check_sha256(path, file_sha256, hash_file(path))  # names the version's path: model, version
    scanned = not full and stream_sha256 is not None and scanned_by == verdict_key(allowlist)
    with open(path, "rb") as f:  # one open for the layout, the stream and the mapping: every cold start pays it
        layout = _checked_layout(path, f)
        model = (_load_scanned if scanned else _load_scanning)(path, f, layout, stream_sha256, mmap, allowlist)
    return audit_model(model, allowlist)  # the post-load audit, as for every other format


def _load_scanned(
    path: Path, f: BinaryIO, layout: Layout, expected: str | None, mmap: bool, allowlist: Allowlist
) -> Any:
    """A stream staging scanned: hashed whole before the unpickler reads a byte of it (bounded reads), so
    what runs is the stream the verdict was given on."""
    _check_stream(path, hash_stream(f, layout), expected)
    f.seek(layout.stream_offset)
    with contextlib.closing(oob_buffers(f, layout, mmap=mmap)) as buffers:
        return RestrictedUnpickler(_Region(f, layout.pickle_bytes), allowlist, buffers=buffers).load()


def _load_scanning(
    path: Path, f: BinaryIO, layout: Layout, expected: str | None, mmap: bool, allowlist: Allowlist
) -> Any:
    """Any other stream: read once through the sha256 and the fail-fast scanner into the unpickler, which
    executes only what the scanner has passed; the layout is then held against what the scanner saw."""
    digest = hashlib.sha256()
    scanner = PickleScanner(BIGPICKLE, allowlist, fail_fast=True)
    f.seek(layout.stream_offset)
    reader = HashingReader(_Region(f, layout.pickle_bytes), [digest, scanner])
    try:
        with contextlib.closing(oob_buffers(f, layout, mmap=mmap)) as buffers:
            model = RestrictedUnpickler(reader, allowlist, buffers=buffers).load()
    except Exception as exc:  # a damaged stream reads as garbage: say so when its digest shows it
        reader.drain()
        _check_stream(path, finish_stream_hash(digest, f, layout), expected, exc)
        raise
    reader.drain()
    _check_stream(path, finish_stream_hash(digest, f, layout), expected)
    report = scanner.verdict()
    try:
        check_against_scan(layout, report.stream_bytes, report.oob_buffers)
    except LayoutError as exc:
        raise _damaged(path, str(exc)) from None
    return model


def _check_stream(path: Path, actual: str, expected: str | None, failure: Exception | None = None) -> None:
    """The stream and index's sha256 against the manifest's `stream_sha256`."""
    if expected is not None and actual != expected:
        raise _damaged(
            path, f"the stream and index hash to {actual}, the manifest says {expected}", ModelIntegrityError
        ) from failure


def _damaged(path: Path, what: str, error: type[ModelNotReadyError] = ModelLoadError) -> ModelNotReadyError:
    """503 naming the version's file (its folder names the model and the version) and what to do."""
    return error(
        f"{path}: {what}; the file was damaged after staging. Re-stage the model (upload it to S3 again) "
        "or roll back to another version."
    )


def read_layout(path: Path) -> Layout:
    """A bigpickle file's checked layout; a damaged one raises ModelIntegrityError (503) saying what to do."""
    with open(path, "rb") as f:
        return _checked_layout(path, f)


def _checked_layout(path: Path, f: BinaryIO) -> Layout:
    try:
        return read_layout_from(f, os.fstat(f.fileno()).st_size)
    except LayoutError as exc:
        raise _damaged(path, str(exc)) from None


def oob_buffers(f: BinaryIO, layout: Layout, *, mmap: bool) -> Iterator[memoryview | np.ndarray]:
    """The out-of-band buffers of the open file `f` in stream order, produced as the unpickler asks for them.

    Mapped: read-only views of one shared mapping (the arrays keep it alive). Read: one uninitialised
    byte array per buffer filled by bounded `preadinto`, so each array is allocated once, never copied (1.0x).
    """
    if mmap:
        if not layout.buffers:
            return
        view = memoryview(mmaplib.mmap(f.fileno(), 0, access=mmaplib.ACCESS_READ))
        for offset, length, _ in layout.buffers:
            yield view[offset : offset + length]
        return
    for offset, length, _ in layout.buffers:
        buffer = np.empty(length, dtype=np.uint8)  # not zero-filled: the read is the first touch
        target = memoryview(buffer)
        done = 0
        while done < length:
            n = os.preadv(f.fileno(), [target[done : done + IO_CHUNK]], offset + done)
            if not n:
                raise ModelLoadError(f"{f.name} ends inside buffer at {offset} (+{length})")
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
    index = index_bytes(1, 0, pickle_bytes, entries)
    index_offset = f.tell()
    f.write(index)
    f.write(TRAILER.pack(index_offset, len(index), MAGIC))
    return Layout(1, 0, pickle_bytes, tuple(entries), index_offset, len(index))


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


def convert(source: Path, target: Path, *, allowlist: Allowlist | None = None) -> dict[str, Any]:
    """Re-save a model in the format `target`'s extension names. To .bpk (the zero-copy format) a pickle or
    joblib file goes through staging's streaming rewriter: bounded reads, the model is never built, so
    converting needs no memory to hold it. Raises ValueError when the rewriter cannot prove the result exact."""
    source_format, target_format = format_of(source), format_of(target)
    protocol = pickle_protocol(source)
    details: dict[str, Any] = {}
    if target_format == BIGPICKLE and source_format != BIGPICKLE:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            report, result = rewrite_file(source, source_format, tmp, allowlist or Allowlist())
            report.raise_if_unsafe()
            if result.layout is None:
                raise ValueError(f"{source} cannot be rewritten exactly: {result.reason}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        details = result.details()
    else:
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
        **({"layout": details} if details else {}),
    }

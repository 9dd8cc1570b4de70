"""Staging's streaming rewriter: a `.pkl`/`.pickle`/`.joblib` upload becomes the mapped bigpickle layout as
its bytes arrive, at constant memory, without running the pickle or building the model.

It is the opcode scanner (one parse: what it writes is what the scanner validated) that also re-emits
every opcode it reads into a canonical protocol-5 stream: frames end between opcodes, large payloads sit
outside frames, memo slots are renumbered in order. Large array payloads leave the stream: their bytes go
to the file, aligned, and the stream refers to them with NEXT_BUFFER, so the predict function maps them.

    upload (how numpy and joblib write an array)                 rewritten stream
    protocol 5: _frombuffer(BYTEARRAY8|BINBYTES8 <bytes>, dtype,  _frombuffer(NEXT_BUFFER, dtype, shape, order)
                shape, order)                                     (the same call)
    protocols 3-4: _reconstruct(ndarray, (0,), b'b') + BUILD      _reconstruct(...) POP, then
                (1, shape, dtype, fortran, BINBYTES[8] <bytes>)   _frombuffer(NEXT_BUFFER, dtype, shape, 'F'|'C')
    joblib: NumpyArrayWrapper() + BUILD {shape, order, dtype,     _frombuffer(NEXT_BUFFER, dtype, shape, order)
                ...} then [padding] <bytes> outside the pickle    (object arrays: their nested pickle, inline)

Everything else passes through as read: arrays of objects, payloads under `min_out_of_band` bytes (kept in
band, as BYTEARRAY8 for joblib), and protocol 2's `_codecs.encode(str, 'latin1')` array bytes (kept in band:
exact, not mapped). Whenever the rewriter cannot show that the new stream builds the same objects (a memo
slot read after the rewrite removed its value, an array state it does not recognise in a joblib file, an
upload that uses out-of-band buffers itself), it gives up with a reason and staging publishes the upload as
it came; `reason` says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import pickletools
import struct
import sys
import tempfile
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bigpickle.checksums import CHECKSUM_FACTORIES
from bigpickle.formats import PICKLE
from bigpickle.osutils import FileWriter, OSUtils
from bigpickle.safety.allowlist import JOBLIB_ARRAY_WRAPPER, Allowlist
from bigpickle.safety.layout import BUFFER_ALIGN, MAGIC, TRAILER, Layout, index_bytes
from bigpickle.safety.scanner import MARK, PickleScanner, ScanReport, _array_layout, _Call, _dtype_layout, _Global
from bigpickle.units import KiB, MiB

OUT_OF_BAND_MIN_BYTES = 64 * KiB  # smaller array payloads stay in the stream: mapping them saves nothing
FRAME_TARGET = 64 * KiB  # the standard pickler's frame size
COPY_CHUNK = 8 * MiB
# The output file's page-aligned write buffers: filled in turn, all but the one filling may be under way at
# once. One write at a time left the feeder waiting for the disk (benchmarks/stage_bench.py, docs/staging.md).
WRITE_CHUNK = 4 * MiB
WRITE_BUFFERS = 4
OUTPUT_BUFFER_BYTES = WRITE_CHUNK * WRITE_BUFFERS  # the copy's own pool is smaller by as much (transfer.config)
PAGE = 4096  # buffers start on a page: aligned for numpy and for direct writes
# The published file's checksum: it guards against corruption (docs/security.md "Integrity at load"), and
# CRC64NVME (awscrt) runs at memory speed where sha256 would halve staging's throughput.
FILE_CHECKSUM = "CRC64NVME" if "CRC64NVME" in CHECKSUM_FACTORIES else "CRC32"
TREE = ("sklearn.tree._tree", "Tree")  # Tree.__setstate__ copies its node arrays out of any buffer
NUMPY_CORES = ("numpy._core", "numpy.core")
_NATIVE_ORDERS = ("|", "=", "<" if sys.byteorder == "little" else ">")

_NAMES = {ord(op.code.encode("latin-1")): op.name for op in pickletools.opcodes}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_CALLS = {"REDUCE": 1, "NEWOBJ": 1, "NEWOBJ_EX": 2}  # items above the callable on the stack


class _OutOfBand:
    """On the symbolic stack: a payload the rewritten stream reads with NEXT_BUFFER."""

    __slots__ = ()


OUT_OF_BAND = _OutOfBand()


def _int_op(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


def _tuple_op(items: tuple[int, ...]) -> bytes:
    body = b"".join(_int_op(i) for i in items)
    if not items:
        return b")"
    if len(items) <= 3:
        return body + b"\x85\x86\x87"[len(items) - 1 : len(items)]
    return b"(" + body + b"t"


def _text_op(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def _get_op(index: int) -> bytes:
    return b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)


@dataclass(frozen=True)
class RewriteResult:
    """What the rewrite produced: the layout written to `path`, or why the upload stays as it came."""

    layout: Layout | None
    reason: str | None = None
    file_checksum: str | None = None  # the whole published file, "ALGORITHM:hex" (MODEL_VERIFY=full)
    stream_sha256: str | None = None  # the stream then the index: what a load hashes by default
    file_bytes: int = 0
    in_band_bytes: int = 0  # large payloads kept in the stream (protocol 2 arrays, object arrays' bytes)

    def details(self) -> dict[str, Any]:
        """The manifest's `details["layout"]`."""
        if self.layout is None:
            return {"rewritten": False, "reason": self.reason}
        return {
            "rewritten": True,
            "version": self.layout.version,
            "file_checksum": self.file_checksum,
            "stream_sha256": self.stream_sha256,
            "file_bytes": self.file_bytes,
            "pickle_bytes": self.layout.pickle_bytes,
            "buffers": len(self.layout.buffers),
            "buffer_bytes": self.layout.buffer_bytes,
            "copied_bytes": self.layout.copied_bytes,
            "in_band_bytes": self.in_band_bytes,
        }


class _OutputFile:
    """The published file, written once, in order: bytes are gathered into page-aligned buffers that writer
    threads write around the page cache (O_DIRECT, where the file system allows it) while the next one
    fills, checksummed as they go. Staging never reads the file back, so caching it would only cost a
    copy per byte in the copy's critical path (measured: stage_bench.py, docs/staging.md)."""

    def __init__(self, path: Path) -> None:
        # Not truncated: a resumed copy reads the bytes an interrupted rewrite held from this file while the
        # new rewrite writes the same bytes over them; `finish` cuts the file to its length.
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.writer = FileWriter(OSUtils(), path, self.fd, direct=True)
        self.checksum = CHECKSUM_FACTORIES[FILE_CHECKSUM]()
        self.flushed = 0  # bytes handed to the writer thread
        self.fill = 0  # bytes gathered in the current buffer
        self.buffers = [mmap.mmap(-1, WRITE_CHUNK) for _ in range(WRITE_BUFFERS)]
        self.current = 0
        self.thread = ThreadPoolExecutor(max_workers=WRITE_BUFFERS - 1, thread_name_prefix="bigpickle-rewrite")
        self.pending: deque[Future[None]] = deque()  # the writes under way, oldest first

    @property
    def offset(self) -> int:
        return self.flushed + self.fill

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            n = min(len(view), WRITE_CHUNK - self.fill)
            self.buffers[self.current][self.fill : self.fill + n] = view[:n]
            self.fill += n
            view = view[n:]
            if self.fill == WRITE_CHUNK:
                self._flush()

    def pad(self, align: int) -> None:
        if self.offset % align:
            self.write(bytes(-self.offset % align))

    def _flush(self) -> None:
        if not self.fill:
            return
        data = memoryview(self.buffers[self.current])[: self.fill]
        self.checksum.update(data)
        self.pending.append(self.thread.submit(self.writer.write, data, self.flushed))
        while len(self.pending) >= WRITE_BUFFERS:  # the next buffer to fill is the oldest under way
            self.pending.popleft().result()  # a failed write fails the rewrite
        self.flushed += self.fill
        self.fill, self.current = 0, (self.current + 1) % WRITE_BUFFERS

    def write_gathered(self) -> None:
        """Wait for the writes under way and write the partial buffer where it goes, keeping it: it is
        written again, whole, when it fills. Every byte written so far is then in the file system."""
        while self.pending:
            self.pending.popleft().result()
        if self.fill:
            self.writer.write(memoryview(self.buffers[self.current])[: self.fill], self.flushed)

    def finish(self) -> str:
        """Write what is gathered, cut the file there, fsync; the file's checksum as "ALGORITHM:hex"."""
        self._flush()
        while self.pending:
            self.pending.popleft().result()
        os.ftruncate(self.fd, self.flushed)
        os.fsync(self.fd)
        return f"{FILE_CHECKSUM}:{self.checksum.digest().hex()}"

    def close(self) -> None:
        self.thread.shutdown(wait=True)
        self.writer.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def file_checksum(path: Path, algorithm: str = "") -> str:
    """The checksum `_OutputFile.finish` gives, of a file on disk (bounded reads): "ALGORITHM:hex"."""
    algorithm = algorithm or FILE_CHECKSUM
    checksum = CHECKSUM_FACTORIES[algorithm]()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(COPY_CHUNK):
            checksum.update(chunk)
    return f"{algorithm}:{checksum.digest().hex()}"


class _StreamOut:
    """The rewritten stream, spooled to a temp file: opcodes in frames that end between opcodes, large
    payloads outside any frame (as the standard pickler writes them)."""

    def __init__(self, spool: BinaryIO) -> None:
        self.spool = spool
        self.frame = bytearray()
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def op(self, raw: bytes) -> None:
        self.frame += raw
        if len(self.frame) >= FRAME_TARGET:
            self.commit()

    def commit(self) -> None:
        if self.frame:
            self._write(b"\x95" + struct.pack("<Q", len(self.frame)))
            self._write(self.frame)
            self.frame = bytearray()

    def unframed(self, data: bytes | memoryview) -> None:
        """A large payload's header or bytes: never inside a frame."""
        self.commit()
        self._write(data)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self.spool.write(data)
        self.sha256.update(data)
        self.bytes += len(data)


class PickleRewriter(PickleScanner):
    """A staging sink: the scanner, writing the bigpickle layout of what it reads to `target`.

    `update()` with every byte in order, `finish()` for the scan report, then `publish()` to complete the
    file (or learn why not); `close()` always. A resumed copy feeds every byte again: construct a new one.

    It is a holding sink of the copy (`bigpickle.transfer.HoldingSink`): `held` lists the upload's byte
    ranges whose bytes are in `target` verbatim (the out-of-band payloads), so the copy does not write them
    to the upload file; `flush()` hands them to the file system for a checkpoint; `restore()` writes them
    back into the upload when the upload is published as it came.
    """

    def __init__(
        self,
        target: Path,
        fmt: str = PICKLE,
        allowlist: Allowlist | None = None,
        *,
        min_out_of_band: int = OUT_OF_BAND_MIN_BYTES,
    ) -> None:
        super().__init__(fmt, allowlist)
        if min_out_of_band < 1:
            raise ValueError("min_out_of_band must be at least 1 byte")
        self.target = target
        self.min_out_of_band = min_out_of_band
        self.reason: str | None = None
        self._file = _OutputFile(target)
        self._spool = tempfile.TemporaryFile(dir=target.parent, prefix=f".{target.name}.stream.")  # noqa: SIM115
        self._out = _StreamOut(self._spool)
        # a copy that stops early (checkpoint, failure) drops the rewriter: its files close with it
        self._closer = weakref.finalize(self, _close_all, self._spool, self._file)
        self._buffers: list[tuple[int, int, bool]] = []
        self.held: list[list[int]] = []  # [offset in the upload, length, offset in target], merged, in order
        self.buffer_bytes = OUTPUT_BUFFER_BYTES
        self._raw_at = 0  # the upload offset of the next payload byte `_payload` gets
        self._maps: list[dict[int, int | None]] = [{}]  # input memo slot -> output slot (None: removed)
        self._next_slot = 0
        # id(call) -> (call, output slot, input slot) of memoized calls: dtypes and arrays are referred to
        self._slot_of: dict[int, tuple[Any, int, int]] = {}
        self._sink: str | None = None  # where the current payload goes: "buffer", "stream"
        self._left = 0  # payload bytes still to come
        self._drop = 0  # joblib padding bytes still to drop
        self._tail = b""  # opcodes to write after an in-band joblib array's bytes
        self._expect: list[str] = []  # what must follow a rewritten _reconstruct payload
        self._started = False
        self._in_band_bytes = 0
        self._numpy_core = "numpy._core"

    # -- giving up --

    def _give_up(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    # -- the scanner's hooks --

    def _opcode(self, code: int, raw: bytes, arg: Any, handler: Callable[[PickleScanner, Any], None]) -> None:
        if self.reason is not None:
            handler(self, arg)
            return
        name = _NAMES[code]
        if self._expect:
            self._after_reconstruct(name, arg, handler)
            return
        method = getattr(self, f"_re_{name.lower()}", None)
        if method is not None:
            method(name, raw, arg, handler)
        else:
            self._through(raw, arg, handler)

    def _payload(self, chunk: bytes | memoryview) -> None:
        if self.reason is not None or self._sink is None:
            return
        view = memoryview(chunk)
        if self._drop:
            dropped = min(self._drop, len(view))
            view, self._drop = view[dropped:], self._drop - dropped
            self._raw_at += dropped
        if not len(view):
            return
        if self._sink == "buffer":
            self._hold(len(view))
            self._file.write(view)
        else:
            self._out.unframed(view)
        self._raw_at += len(view)
        self._left -= len(view)
        if self._left == 0:
            self._payload_done()

    def _padding(self, length: int) -> None:
        self._drop = length

    def _hold(self, length: int) -> None:
        """Record that the next `length` payload bytes go to the file as they are."""
        last = self.held[-1] if self.held else None
        if last and last[0] + last[1] == self._raw_at and last[2] + last[1] == self._file.offset:
            last[1] += length
        else:
            self.held.append([self._raw_at, length, self._file.offset])

    # -- opcodes that change on the way out --

    def _re_proto(self, _name: str, _raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        if not self._started:  # a nested joblib pickle's PROTO goes: it is inline now
            self._out.unframed(b"\x80\x05")  # before the first frame, as the pickler writes it
            self._started = True
        handler(self, arg)

    def _re_frame(self, _name: str, _raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        handler(self, arg)  # framing is re-done

    def _re_stop(self, _name: str, raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        nested = bool(self._outer)
        handler(self, arg)
        if nested:  # the end of a joblib object array's pickle: its array is on the stack
            self._maps.pop()
        else:
            self._out.op(raw)
            self._out.commit()

    def _re_next_buffer(self, _name: str, _raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        self._give_up("the upload refers to out-of-band buffers it does not carry")
        handler(self, arg)

    _re_readonly_buffer = _re_next_buffer

    def _memo_slot(self, name: str, arg: Any) -> int:
        if name == "MEMOIZE":
            return len(self._memo)
        return int(arg[0]) if isinstance(arg, list) else arg

    def _re_memo_put(self, name: str, _raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        slot = self._memo_slot(name, arg)
        handler(self, arg)
        value = self._stack[-1]
        if value is OUT_OF_BAND or _is_wrapper_call(value):
            self._maps[-1][slot] = None  # gone from the rewritten stream; reading it gives up
            return
        self._out.op(b"\x94")
        self._maps[-1][slot] = self._next_slot
        if isinstance(value, _Call):
            self._slot_of[id(value)] = (value, self._next_slot, slot)
        self._next_slot += 1

    _re_put = _re_binput = _re_long_binput = _re_memoize = _re_memo_put

    def _re_memo_get(self, name: str, _raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        slot = self._memo_slot(name, arg)
        handler(self, arg)
        target = self._maps[-1].get(slot)
        if target is None:
            self._give_up(f"memo slot {slot} is read after the rewrite removed its value (offset {self._at})")
            return
        self._out.op(_get_op(target))

    _re_get = _re_binget = _re_long_binget = _re_memo_get

    def _re_global(self, name: str, raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        handler(self, arg)
        found = self._stack[-1] if self._stack else None
        if isinstance(found, _Global) and (found.module, found.name) == JOBLIB_ARRAY_WRAPPER:
            # the wrapper becomes None in the new stream; its NEWOBJ and BUILD are rewritten below
            self._out.op(b"00N" if name == "STACK_GLOBAL" else b"N")
            return
        if isinstance(found, _Global) and found.module.startswith("numpy.core."):
            self._numpy_core = "numpy.core"
        self._out.op(raw)

    _re_stack_global = _re_global

    def _re_inst(self, _name: str, raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        handler(self, arg)
        if _is_wrapper_call(self._stack[-1] if self._stack else None):
            self._give_up(f"a joblib array wrapper made by INST at offset {self._at}")
        self._out.op(raw)

    _re_obj = _re_inst

    def _re_call(self, name: str, raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        depth = _CALLS[name] + 1
        func = self._stack[-depth] if len(self._stack) >= depth else None
        if isinstance(func, _Global) and (func.module, func.name) == JOBLIB_ARRAY_WRAPPER:
            self._out.op(b"0" * (depth - 1))  # drop its arguments: None stands for the wrapper
        else:
            self._out.op(raw)
        handler(self, arg)

    _re_reduce = _re_newobj = _re_newobj_ex = _re_call

    def _re_build(self, _name: str, raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        target = self._stack[-2] if len(self._stack) >= 2 else None
        if not _is_wrapper_call(target):
            self._out.op(raw)
            handler(self, arg)
            return
        state = self._stack[-1]
        plan = self._joblib_plan(state)
        nested = len(self._outer)
        handler(self, arg)
        if plan is None:
            return
        self._out.op(b"00")  # the wrapper (None) and its state
        if len(self._outer) > nested:  # an object array: its nested pickle follows, inline from here
            self._maps.append({})
            return
        nbytes, head, tail = plan
        if nbytes >= self.min_out_of_band:
            self._out.op(head + b"\x97" + tail)  # NEXT_BUFFER
            self._begin_buffer(nbytes, self._at + (self._padding_then is not None))  # after the padding length
        else:
            self._out.op(head)
            self._out.unframed(b"\x96" + struct.pack("<Q", nbytes))  # BYTEARRAY8, as protocol 5 writes
            self._sink, self._left, self._tail = "stream", nbytes, tail
            if nbytes == 0:
                self._payload_done()

    # -- large payloads --

    def _bytes(self, name: str, raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        """A bytes payload: out of band when it is an array's and large enough, else through as read."""
        held = not self._skip  # short payloads come whole in `arg`; long ones follow through `_payload`
        length = len(arg) if held and isinstance(arg, bytes) else self._skip
        if length >= self.min_out_of_band:
            call = self._reconstruct_state(length) if name != "BYTEARRAY8" else None
            if call is not None:
                self._rewrite_reconstruct(call)
                self._expect = ["TUPLE", "BUILD"]
            elif self._frombuffer_argument():
                self._out.op(b"\x97")  # NEXT_BUFFER
            else:
                self._in_band_bytes += length
                self._through(raw, arg, handler)
                return
            self._begin_buffer(length, self._at - length if held else self._at)
            handler(self, arg)
            self._stack[-1] = OUT_OF_BAND
            if held:
                self._payload(arg)
            return
        self._through(raw, arg, handler)

    _re_short_binbytes = _re_binbytes = _re_binbytes8 = _re_bytearray8 = _bytes

    def _through(self, raw: bytes, arg: Any, handler: Callable[..., None]) -> None:
        """An opcode as read; a long payload after it follows outside any frame."""
        if self._skip:
            self._out.unframed(raw)
            self._sink, self._left = "stream", self._skip
        else:
            self._out.op(raw)
        handler(self, arg)

    def _begin_buffer(self, length: int, raw_at: int) -> None:
        """The next `length` payload bytes, from upload offset `raw_at` on, are an out-of-band buffer."""
        self._file.pad(PAGE)
        self._raw_at = raw_at
        copied = any(isinstance(v, _Call) and (v.func.module, v.func.name) == TREE for v in self._stack)
        self._buffers.append((self._file.offset, length, copied))
        self._sink, self._left = "buffer", length

    def _payload_done(self) -> None:
        if self._sink == "stream" and self._tail:
            self._out.op(self._tail)
        self._sink, self._tail = None, b""

    # -- recognising arrays --

    def _frombuffer_argument(self) -> bool:
        """Protocol 5: the payload is the first argument of numpy's `_frombuffer`."""
        if len(self._stack) < 2 or self._stack[-1] is not MARK:
            return False
        func = self._stack[-2]
        return isinstance(func, _Global) and func.name == "_frombuffer" and func.module in _modules("numeric")

    def _reconstruct_state(self, length: int) -> _Call | None:
        """Protocols 3-4: the payload ends the state tuple (1, shape, dtype, fortran, bytes) of an empty
        ndarray `_reconstruct` made, and its length is exactly what shape and dtype say."""
        if len(self._stack) < 6:
            return None
        call, mark, version, shape, dtype, fortran = self._stack[-6:]
        if not (
            isinstance(call, _Call)
            and call.func.name == "_reconstruct"
            and call.func.module in _modules("multiarray")
            and _is_empty_ndarray_args(call.args)
            and mark is MARK
            and version == 1
            and type(fortran) is bool
        ):
            return None
        expected = self._plain_array_bytes(shape, dtype)
        return call if expected == length else None

    def _plain_array_bytes(self, shape: Any, dtype: Any) -> int | None:
        """The byte size of a (shape, dtype) array whose dtype is memoized in the new stream, holds no
        objects and is in native byte order; None for anything else."""
        if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
            return None
        if not (isinstance(dtype, _Call) and id(dtype) in self._slot_of):
            return None
        itemsize, hasobject = _dtype_layout(dtype)
        state = dtype.state if isinstance(dtype.state, tuple) else ()
        if itemsize is None or hasobject or len(state) < 2 or state[1] not in _NATIVE_ORDERS:
            return None
        count = 1
        for dim in shape:
            count *= dim
        return count * itemsize

    def _frombuffer_head(self) -> bytes:
        return _text_op(f"{self._numpy_core}.numeric") + _text_op("_frombuffer") + b"\x93("

    def _frombuffer_tail(self, dtype: _Call, shape: tuple[int, ...], order: str) -> bytes:
        return _get_op(self._slot_of[id(dtype)][1]) + _tuple_op(shape) + _text_op(order) + b"tR"

    def _rewrite_reconstruct(self, call: _Call) -> None:
        """Drop the state built so far and the empty array, call `_frombuffer` instead; the array takes the
        memo slot the empty one had, so later references find it."""
        _, _, _, shape, dtype, fortran = self._stack[-6:]
        self._out.op(b"10" + self._frombuffer_head() + b"\x97" + self._frombuffer_tail(dtype, shape, "FC"[not fortran]))
        if id(call) in self._slot_of:
            self._maps[-1][self._slot_of[id(call)][2]] = self._next_slot
            self._out.op(b"\x94")
            self._next_slot += 1

    def _after_reconstruct(self, name: str, arg: Any, handler: Callable[..., None]) -> None:
        """After a rewritten `_reconstruct` payload the standard pickler writes [memo] TUPLE [memo] BUILD
        (in a new frame);
        the new stream already holds the array, so these are read, not written."""
        if name in _MEMO_PUTS:
            slot = self._memo_slot(name, arg)
            handler(self, arg)
            self._maps[-1][slot] = None
            return
        if name == "FRAME":  # the pickler frames what follows a large payload anew
            handler(self, arg)
            return
        if name == self._expect[0]:
            self._expect.pop(0)
            handler(self, arg)
            return
        self._give_up(f"{name} at offset {self._at} follows an array's bytes where its state should end")
        handler(self, arg)

    def _joblib_plan(self, state: Any) -> tuple[int, bytes, bytes] | None:
        """(bytes, call head, call tail) for the array a joblib wrapper's state describes; None (giving up)
        when it is not a plain ndarray this rewriter can express as `_frombuffer`."""
        if not isinstance(state, dict):
            self._give_up(f"a joblib array wrapper at offset {self._at} has no dict state")
            return None
        subclass, shape, order, dtype = (state.get(k) for k in ("subclass", "shape", "order", "dtype"))
        if not (isinstance(subclass, _Global) and (subclass.module, subclass.name) == ("numpy", "ndarray")):
            self._give_up(f"a joblib array at offset {self._at} is not a plain numpy.ndarray")
            return None
        if _array_layout(state)[1]:  # object dtype: its nested pickle is inlined
            return 0, b"", b""
        nbytes = self._plain_array_bytes(shape, dtype)
        if nbytes is None or order not in ("C", "F"):
            self._give_up(
                f"the joblib array at offset {self._at} has a shape, dtype or order this rewriter does not map"
            )
            return None
        return nbytes, self._frombuffer_head(), self._frombuffer_tail(dtype, shape, order)

    # -- the result --

    def finish(self) -> ScanReport:
        report = super().finish()
        if report.safe and self.reason is None and (self._sink is not None or self._expect):
            self._give_up("the stream ends inside an array")
        return report

    def publish(self) -> RewriteResult:
        """Complete the file after `finish()`: stream, index, trailer, fsync. When the upload is unsafe or
        could not be rewritten, the file is removed and the result says why."""
        if not self.report.safe:
            self._give_up("the upload was refused by the scanner")
        if self.reason is not None:
            self.close()
            self.target.unlink(missing_ok=True)
            return RewriteResult(None, self.reason)
        self._out.commit()
        self._file.pad(BUFFER_ALIGN)
        stream_offset = self._file.offset
        self._spool.seek(0)
        while chunk := self._spool.read(COPY_CHUNK):
            self._file.write(chunk)
        index = index_bytes(2, stream_offset, self._out.bytes, self._buffers)
        index_offset = self._file.offset
        self._file.write(index)
        self._file.write(TRAILER.pack(index_offset, len(index), MAGIC))
        self._out.sha256.update(index)
        checksum = self._file.finish()
        layout = Layout(2, stream_offset, self._out.bytes, tuple(self._buffers), index_offset, len(index))
        result = RewriteResult(
            layout,
            file_checksum=checksum,
            stream_sha256=self._out.sha256.hexdigest(),
            file_bytes=self._file.offset,
            in_band_bytes=self._in_band_bytes,
        )
        self.close()
        return result

    def flush(self) -> None:
        """Hand every byte of `held` to the file system (a checkpoint then fsyncs `target`)."""
        self._file.write_gathered()

    def restore(self, upload: Path) -> None:
        """Write the bytes of `held` back into `upload` at their offsets, and fsync it: the copy did not
        write them there, and the upload is published (or refused) as it came."""
        if not self.held:
            return
        self.flush()
        with open(self.target, "rb", buffering=0) as source, open(upload, "r+b", buffering=0) as dest:
            for start, length, at in self.held:
                source.seek(at)
                dest.seek(start)
                left = length
                while left and (chunk := source.read(min(left, COPY_CHUNK))):
                    dest.write(chunk)
                    left -= len(chunk)
            os.fsync(dest.fileno())

    def close(self) -> None:
        self._closer()


def _close_all(*files: Any) -> None:
    for f in files:
        f.close()


def _modules(submodule: str) -> tuple[str, ...]:
    return tuple(f"{core}.{submodule}" for core in NUMPY_CORES)


def _is_wrapper_call(value: Any) -> bool:
    return isinstance(value, _Call) and (value.func.module, value.func.name) == JOBLIB_ARRAY_WRAPPER


def _is_empty_ndarray_args(args: Any) -> bool:
    """`(numpy.ndarray, (0,), b'b')`: what `ndarray.__reduce__` gives `_reconstruct`."""
    return (
        isinstance(args, tuple)
        and len(args) == 3
        and isinstance(args[0], _Global)
        and (args[0].module, args[0].name) == ("numpy", "ndarray")
        and args[1] == (0,)
        and args[2] == b"b"
    )


def rewrite_file(
    source: Path, fmt: str, target: Path, allowlist: Allowlist | None = None, **options: Any
) -> tuple[ScanReport, RewriteResult]:
    """Rewrite a local file (what `bigpickle convert` runs): the same streaming rewriter, bounded reads."""
    rewriter = PickleRewriter(target, fmt, allowlist, **options)
    try:
        with open(source, "rb") as f:
            while chunk := f.read(COPY_CHUNK):
                rewriter.update(chunk)
        report = rewriter.finish()
        return report, rewriter.publish()
    finally:
        rewriter.close()

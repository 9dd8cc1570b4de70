"""An incremental pickle opcode scanner: fed a file's bytes in order, it learns what the pickle would do
without doing it.

It never builds an object and never imports anything. It keeps a symbolic stack and memo (short
strings, small ints, tuples and dicts, globals and the calls made with them) so that names computed on
the stack (STACK_GLOBAL after memo games) are resolved or refused, and it steps over large byte payloads
(BINBYTES8, BYTEARRAY8, BINUNICODE8, joblib's raw array bytes) by counting them, so a many-GB model
costs memory proportional to its opcodes, not its arrays.

What it refuses: any global outside the allowlist, a call or STACK_GLOBAL whose target is not a named
global, BUILD applied to a global (it would set attributes on a class or function for the whole process),
persistent ids, the copyreg extension registry, malformed or truncated streams, and bytes after STOP
(except the bigpickle format's out-of-band tail).
"""

from __future__ import annotations

import hashlib
import pickletools
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bigpickle.errors import UnsafePickleError
from bigpickle.formats import BIGPICKLE, JOBLIB, PICKLE
from bigpickle.safety import allowlist as _allowlist_module
from bigpickle.safety.allowlist import JOBLIB_ARRAY_WRAPPER, Allowlist, canonical
from bigpickle.units import KiB

SMALL_PAYLOAD = 4 * KiB  # payloads up to this are kept (names, versions); larger ones are only counted
MAX_LINE = 64 * KiB  # text arguments (GLOBAL names) longer than this are refused
MAX_STACK = 1 << 20
MAX_SMALL_CONTAINER = 256  # tuples/dicts tracked item by item up to this size
# What one opcode can make at most besides its payload (one object, or one item of a container, or a memo
# slot): the allocation bound of a stream is its payloads, this per opcode, and what calls allocate.
ALLOCATION_PER_OPCODE = 128
FEED = 64 * KiB  # bytes parsed per step when not skipping a payload
TRAILING_ALLOWED = {BIGPICKLE}  # formats whose files carry data after the pickle's STOP


class _Opaque:
    """A value the scanner does not track (a float, a list, a large payload...)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<opaque>"


class _Mark:
    __slots__ = ()


OPAQUE = _Opaque()
MARK = _Mark()


@dataclass(frozen=True)
class _Payload:
    """A byte payload the scanner counted without keeping it."""

    length: int


@dataclass(eq=False)
class _Global:
    module: str
    name: str


@dataclass(eq=False)
class _Call:
    func: _Global
    args: Any
    state: Any = None


@dataclass
class ScanReport:
    """What a pickle imports and whether it may be loaded."""

    format: str
    bytes: int = 0
    protocol: int | None = None
    opcodes: int = 0
    globals: set[str] = field(default_factory=set)
    forbidden: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    sklearn_version: str | None = None
    numpy_spellings: set[str] = field(default_factory=set)
    oob_buffers: int = 0
    trailing_bytes: int = 0
    stream_bytes: int | None = None  # where the outermost STOP ends the pickle
    allocation_bytes: int = 0  # what loading it allocates at most, from the stream's own contents

    @property
    def safe(self) -> bool:
        return not self.forbidden and not self.problems

    @property
    def numpy_major(self) -> str | None:
        """The numpy major line the pickle was written by ("1.x", "2.x"): numpy 1 pickles name numpy.core,
        numpy 2 pickles numpy._core. A line, not a version: nothing finer can be read from the stream."""
        if not self.numpy_spellings:
            return None
        return "/".join(sorted(self.numpy_spellings))

    def details(self) -> dict[str, Any]:
        """The manifest's `details` (the keys loading relies on)."""
        return {
            "pickle_protocol": self.protocol,
            "globals": sorted(self.globals),
            "sklearn_version": self.sklearn_version,
            "numpy_major": self.numpy_major,
            "pickle_opcodes": self.opcodes,
            "oob_buffers": self.oob_buffers,
            "allocation_bytes": self.allocation_bytes,
            "scan_verdict": "safe" if self.safe else "refused",
        }

    def reasons(self) -> list[str]:
        found = [f"imports {g}, which is not on the allowlist" for g in sorted(self.forbidden)]
        return found + self.problems

    def raise_if_unsafe(self) -> ScanReport:
        if not self.safe:
            raise UnsafePickleError(self.reasons(), forbidden=sorted(self.forbidden))
        return self


class _Fatal(Exception):
    """The stream cannot be followed any further."""


# Argument layouts, by pickletools' argument names.
_FIXED = {"uint1": "<B", "uint2": "<H", "int4": "<i", "uint4": "<I", "uint8": "<Q", "float8": ">d"}
_COUNTED = {
    "long1": "<B", "long4": "<i", "string1": "<B", "string4": "<i", "bytes1": "<B", "bytes4": "<I",
    "bytes8": "<Q", "bytearray8": "<Q", "unicodestring1": "<B", "unicodestring4": "<I", "unicodestring8": "<Q",
}  # fmt: skip
_LINES = {"stringnl_noescape_pair": 2}


class PickleScanner:
    """A staging sink: `update()` with every byte in order, then `finish()` for the report.

    With `fail_fast`, the first refusal raises from `update()`: reading through a scanner this way
    (safety.hashing) stops the unpickler before it executes the bytes the scanner objected to.
    """

    def __init__(self, fmt: str = PICKLE, allowlist: Allowlist | None = None, *, fail_fast: bool = False) -> None:
        self.report = ScanReport(format=fmt)
        self.allowlist = (allowlist or Allowlist()).for_format(fmt)
        self.fail_fast = fail_fast
        self._joblib = fmt == JOBLIB
        self._pending = bytearray()
        self._offset = 0  # absolute offset of _pending[0]
        self._skip = 0  # payload bytes still to step over
        self._padding_then: int | None = None  # joblib: a padding-length byte, then this many array bytes
        self._stack: list[Any] = []
        self._memo: dict[int, Any] = {}
        self._outer: list[tuple[list[Any], dict[int, Any]]] = []  # joblib: streams nested in object arrays
        self._frame_end = 0
        self._done = False
        self._dead = False
        self._payload_bytes = 0  # every counted argument: what the load allocates for bytes and strings
        self._call_bytes = 0  # what calls allocate from their arguments (bytes(n), bytearray(n))
        self._hooked = type(self)._opcode is not PickleScanner._opcode  # a subclass re-emits each opcode

    # -- feeding --

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self.report.bytes += len(view)
        if self._dead:
            return
        i, n = 0, len(view)
        while i < n and not self._dead:
            if self._done:
                self._trailing(n - i)
                return
            if self._skip and not self._pending:
                take = min(self._skip, n - i)
                self._payload(view[i : i + take])
                self._skip -= take
                self._offset += take
                i += take
                continue
            take = min(FEED, n - i)
            self._pending += view[i : i + take]
            i += take
            self._parse_pending()

    def finish(self) -> ScanReport:
        """The report, once every byte was fed; a stream without STOP is refused as truncated."""
        if not self._dead and not self._done:
            self._refuse("the pickle is truncated: it ends before its STOP opcode")
        self.report.allocation_bytes = (
            self._payload_bytes + self._call_bytes + ALLOCATION_PER_OPCODE * (self.report.opcodes + len(self._memo))
        )
        return self.report

    def verdict(self) -> ScanReport:
        return self.finish().raise_if_unsafe()

    # -- parsing --

    def _parse_pending(self) -> None:
        buf, pos, step = self._pending, 0, self._step
        try:
            while pos < len(buf) and not self._done:
                if not self._skip and self._padding_then is None:  # the common case first
                    new = step(buf, pos)
                    if new < 0:
                        self._incomplete(pos, len(buf))
                        if len(buf) - pos > MAX_LINE + 32:
                            raise _Fatal(f"an argument at offset {self._offset + pos} is longer than {MAX_LINE} bytes")
                        break
                    pos = new
                elif self._skip:
                    take = min(self._skip, len(buf) - pos)
                    self._payload(bytes(buf[pos : pos + take]))
                    self._skip -= take
                    pos += take
                elif self._padding_then is not None:
                    self._padding(buf[pos])
                    self._skip = buf[pos] + self._padding_then
                    self._padding_then = None
                    pos += 1
        except _Fatal as exc:
            self._dead = True
            self._refuse(str(exc))
        if self._done and not self._dead:
            self._trailing(len(buf) - pos)
            pos = len(buf)
        self._offset += pos
        del buf[:pos]

    def _step(self, buf: bytearray, pos: int) -> int:
        """Handle the opcode at `pos`; the offset after it, or -1 when its argument is not all here yet.
        The hot path of every load (the stream is scanned each time a model is loaded): kept flat."""
        code = buf[pos]
        spec = _OPS.get(code)
        report = self.report
        if spec is None or (not report.opcodes and code != 0x80):
            raise _Fatal(self._not_an_opcode(code, pos))
        kind, unpack, size, handler = spec
        p = pos + 1
        stop = p  # where the opcode's bytes end for the frame check (a large payload included)
        arg: Any = None
        if kind == _FIXED_ARG:
            p += size
            if p > len(buf):
                return -1
            (arg,) = unpack(buf, pos + 1)
            stop = p
        elif kind == _COUNTED_ARG:
            if p + size > len(buf):
                return -1
            (length,) = unpack(buf, p)
            if length < 0:
                raise _Fatal(f"negative length {length} at offset {self._offset + pos}")
            p += size
            if length <= SMALL_PAYLOAD:
                if p + length > len(buf):
                    return -1
                arg = bytes(buf[p : p + length])
                p += length
                stop = p
            else:  # counted, never held
                self._skip = length
                stop = p + length
            self._payload_bytes += length
        elif kind == _LINES_ARG:
            lines = []
            for _ in range(size):
                nl = buf.find(b"\n", p)
                if nl < 0:
                    return -1
                lines.append(bytes(buf[p:nl]))
                p = nl + 1
            arg = lines
            stop = p
        offset = self._offset
        if offset + pos < self._frame_end < offset + stop:
            self._frame_crossed(pos, stop)
        report.opcodes += 1
        self._at = offset + p
        if self._hooked:
            self._opcode(code, bytes(buf[pos:p]), arg, handler)
        else:
            handler(self, arg)
        if len(self._stack) > MAX_STACK:
            raise _Fatal(f"the stack grew past {MAX_STACK} items")
        return p

    def _opcode(self, code: int, raw: bytes, arg: Any, handler: Callable[[PickleScanner, Any], None]) -> None:
        """Run one opcode's handler; `raw` is the opcode as read (a large payload follows through `_payload`).
        A hook: the rewriter (safety.rewriter) re-emits the stream from here."""
        handler(self, arg)

    def _payload(self, chunk: bytes | memoryview) -> None:
        """A piece of a large payload the scanner steps over (a hook, like `_opcode`)."""

    def _padding(self, length: int) -> None:
        """joblib: the padding-length byte before an array's bytes (a hook, like `_opcode`)."""

    def _incomplete(self, pos: int, end: int) -> None:
        """The opcode at `pos` waits for more bytes, yet bytes past its frame's end are here: it crosses it.
        Refused now, not once its argument is complete: an unpickler reading through a fail-fast scanner
        re-reads after the frame, and would run what the scanner still holds as this argument."""
        if self._offset + pos < self._frame_end < self._offset + end:
            self._frame_crossed(pos, end)

    def _frame_crossed(self, pos: int, end: int) -> None:
        """The standard pickler ends a frame between two opcodes, and writes a large payload outside any
        frame. An opcode that straddles a frame's end is read one way here and another way by an unpickler
        that re-reads after the frame (CPython's, from a file without `peek`): refuse it."""
        raise _Fatal(
            f"the opcode at offset {self._offset + pos} crosses the end of its frame at offset {self._frame_end} "
            "(the standard pickler never writes this; unpicklers would read it differently)"
        )

    def _not_an_opcode(self, code: int, pos: int) -> str:
        if not self.report.opcodes:
            return (
                f"not a pickle of protocol 2 or later: it starts with byte 0x{code:02x} "
                "(a compressed joblib file? save with compress=0; a protocol 0/1 pickle? re-save with protocol 5)"
            )
        return f"byte 0x{code:02x} at offset {self._offset + pos} is not a pickle opcode"

    # -- verdicts --

    def _refuse(self, reason: str) -> None:
        self.report.problems.append(reason)
        if self.fail_fast:
            self._dead = True
            self.report.raise_if_unsafe()

    def _trailing(self, count: int) -> None:
        if count <= 0:
            return
        first = self.report.trailing_bytes == 0
        self.report.trailing_bytes += count
        if first and self.report.format not in TRAILING_ALLOWED:
            self._refuse("bytes follow the pickle's STOP opcode; a model file is exactly one pickle")

    def _global(self, module: str, name: str) -> _Global:
        module, name = canonical(module, name)
        dotted = f"{module}.{name}"
        self.report.globals.add(dotted)
        for spelling, version in (("numpy.core.", "1.x"), ("numpy._core.", "2.x")):
            if dotted.startswith(spelling):
                self.report.numpy_spellings.add(version)
        if not self.allowlist.allows(module, name) and dotted not in self.report.forbidden:
            self.report.forbidden.add(dotted)
            if self.fail_fast:
                self._dead = True
                self.report.raise_if_unsafe()
        return _Global(module, name)

    # -- the symbolic stack --

    def _pop(self) -> Any:
        if not self._stack:
            raise _Fatal(f"stack underflow at offset {self._at}")
        value = self._stack.pop()
        if value is MARK:
            raise _Fatal(f"an opcode at offset {self._at} consumed a MARK")
        return value

    def _pop_mark(self) -> list[Any]:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i] is MARK:
                items = self._stack[i + 1 :]
                del self._stack[i:]
                return items
        raise _Fatal(f"no MARK on the stack at offset {self._at}")

    def _top(self) -> Any:
        if not self._stack or self._stack[-1] is MARK:
            raise _Fatal(f"stack underflow at offset {self._at}")
        return self._stack[-1]

    def _call(self, func: Any, args: Any) -> None:
        if not isinstance(func, _Global):
            self._refuse(f"offset {self._at}: calls an object that is not a named global (a stack or memo trick)")
            self._stack.append(OPAQUE)
            return
        if not self.allowlist.may_call(func.module, func.name) and self.allowlist.allows(func.module, func.name):
            # references, not calls: a ufunc or type a model keeps as an attribute is never run while loading
            self._refuse(f"offset {self._at}: calls {func.module}.{func.name}, which a model may only reference")
        problem = self._call_problem(func, args)
        if problem:
            self._refuse(f"offset {self._at}: {problem}")
        self._stack.append(_Call(func, args))

    def _call_problem(self, func: _Global, args: Any) -> str | None:
        """What a call would allocate or build that its arguments do not bound, or an array its buffer
        does not cover."""
        callee = (func.module, func.name)
        first = args[0] if isinstance(args, tuple) and args else None
        if callee in _SIZED_BUILDERS and type(first) is int:
            self._call_bytes += max(first, 0)
        if callee in _CONTAINER_BUILDERS and isinstance(first, _Call):
            return (
                f"{func.name}() of what {first.func.module}.{first.func.name} returns: "
                "an allocation the stream's contents do not bound"
            )
        numpy_core = func.module.startswith(("numpy.core.", "numpy._core."))
        if numpy_core and func.name == "_reconstruct" and not (isinstance(args, tuple) and args[1:2] == ((0,),)):
            return "numpy _reconstruct with a shape other than (0,), which numpy never writes"
        if numpy_core and func.name == "_frombuffer":
            if not (isinstance(args, tuple) and len(args) == 4):
                return "numpy _frombuffer without (buffer, dtype, shape, order)"
            return _covers(_length(args[0]), args[1], args[2], "_frombuffer")
        return None

    def _set_items(self, target: Any, items: list[Any]) -> None:
        if len(items) % 2:
            raise _Fatal(f"odd number of dict items at offset {self._at}")
        for key, value in zip(items[::2], items[1::2], strict=True):
            if key == "_sklearn_version" and isinstance(value, str) and self.report.sklearn_version is None:
                self.report.sklearn_version = value
            if isinstance(target, dict) and len(target) < MAX_SMALL_CONTAINER and isinstance(key, str | int):
                target[key] = value

    # -- opcode handlers --

    def op_proto(self, arg: int) -> None:
        if arg > 5:
            raise _Fatal(f"unknown pickle protocol {arg}")
        if self.report.protocol is None:
            self.report.protocol = arg

    def op_stop(self, _arg: None) -> None:
        if self._frame_end > self._at:
            raise _Fatal(f"the frame around STOP at offset {self._at - 1} extends past it, to {self._frame_end}")
        self._pop()
        if self._outer:  # the end of a joblib object array: back to the outer stream, which gets the array
            self._stack, self._memo = self._outer.pop()
            self._stack.append(OPAQUE)
            return
        self._done = True
        self.report.stream_bytes = self._at

    def op_frame(self, arg: int) -> None:
        if self._at - 9 < self._frame_end:
            raise _Fatal(f"a FRAME at offset {self._at - 9} begins inside the previous frame")
        self._frame_end = self._at + arg

    def op_int(self, arg: Any) -> None:
        if isinstance(arg, list):
            arg = arg[0]
        if isinstance(arg, bytes):
            text = arg.strip().rstrip(b"L")
            try:
                arg = int(text)
            except ValueError:
                raise _Fatal(f"bad integer at offset {self._at}") from None
        self._stack.append(arg)

    def op_long_bin(self, arg: bytes | None) -> None:
        self._stack.append(OPAQUE if arg is None else int.from_bytes(arg, "little", signed=True))

    def op_text(self, arg: bytes | None) -> None:
        if arg is None:
            self._stack.append(OPAQUE)
            return
        try:
            self._stack.append(arg.decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            self._stack.append(OPAQUE)

    def op_text_line(self, arg: list[bytes]) -> None:
        try:
            self._stack.append(arg[0].decode("raw-unicode-escape"))
        except UnicodeDecodeError:
            self._stack.append(OPAQUE)

    def op_py2_string(self, arg: bytes | None) -> None:
        try:  # the unpickler decodes protocol-2 strings as ASCII by default
            self._stack.append(OPAQUE if arg is None else arg.decode("ascii"))
        except UnicodeDecodeError:
            self._stack.append(OPAQUE)

    def op_bytes(self, arg: bytes | None) -> None:
        self._stack.append(_Payload(self._skip) if arg is None else arg)

    def op_opaque(self, _arg: Any) -> None:
        self._stack.append(OPAQUE)

    def op_none(self, _arg: None) -> None:
        self._stack.append(None)

    def op_true(self, _arg: None) -> None:
        self._stack.append(True)

    def op_false(self, _arg: None) -> None:
        self._stack.append(False)

    def op_next_buffer(self, _arg: None) -> None:
        self.report.oob_buffers += 1
        self._stack.append(OPAQUE)

    def op_noop(self, _arg: None) -> None:
        self._top()

    def op_append(self, _arg: None) -> None:
        self._pop()
        self._top()

    def op_appends(self, _arg: None) -> None:
        self._pop_mark()
        self._top()

    def op_from_mark(self, _arg: None) -> None:
        self._pop_mark()
        self._stack.append(OPAQUE)

    def op_empty_tuple(self, _arg: None) -> None:
        self._stack.append(())

    def _tuple(self, items: list[Any]) -> None:
        self._stack.append(tuple(items) if len(items) <= MAX_SMALL_CONTAINER else OPAQUE)

    def op_tuple(self, _arg: None) -> None:
        self._tuple(self._pop_mark())

    def op_tuple1(self, _arg: None) -> None:
        self._tuple([self._pop()])

    def op_tuple2(self, _arg: None) -> None:
        b, a = self._pop(), self._pop()
        self._tuple([a, b])

    def op_tuple3(self, _arg: None) -> None:
        c, b, a = self._pop(), self._pop(), self._pop()
        self._tuple([a, b, c])

    def op_empty_dict(self, _arg: None) -> None:
        self._stack.append({})

    def op_dict(self, _arg: None) -> None:
        target: dict[Any, Any] = {}
        self._set_items(target, self._pop_mark())
        self._stack.append(target)

    def op_setitem(self, _arg: None) -> None:
        value, key = self._pop(), self._pop()
        self._set_items(self._top(), [key, value])

    def op_setitems(self, _arg: None) -> None:
        items = self._pop_mark()
        self._set_items(self._top(), items)

    def op_pop(self, _arg: None) -> None:
        if not self._stack:
            raise _Fatal(f"stack underflow at offset {self._at}")
        self._stack.pop()

    def op_dup(self, _arg: None) -> None:
        self._stack.append(self._top())

    def op_mark(self, _arg: None) -> None:
        self._stack.append(MARK)

    def op_pop_mark(self, _arg: None) -> None:
        self._pop_mark()

    def op_get(self, arg: Any) -> None:
        index = int(arg[0]) if isinstance(arg, list) else arg
        if index not in self._memo:
            raise _Fatal(f"memo index {index} read before it was written (offset {self._at})")
        self._stack.append(self._memo[index])

    def op_put(self, arg: Any) -> None:
        index = int(arg[0]) if isinstance(arg, list) else arg
        self._memo[index] = self._top()

    def op_memoize(self, _arg: None) -> None:
        self._memo[len(self._memo)] = self._top()

    def op_ext(self, arg: int) -> None:
        self._refuse(f"offset {self._at}: uses the copyreg extension registry (code {arg})")
        self._stack.append(OPAQUE)

    def op_persid(self, _arg: Any) -> None:
        self._refuse(f"offset {self._at}: uses a persistent id, which no model needs")
        self._stack.append(OPAQUE)

    def op_binpersid(self, _arg: None) -> None:
        self._pop()
        self.op_persid(None)

    def op_global(self, arg: list[bytes]) -> None:
        try:
            module, name = (part.decode("utf-8") for part in arg)
        except UnicodeDecodeError:
            raise _Fatal(f"a GLOBAL name at offset {self._at} is not UTF-8") from None
        self._stack.append(self._global(module, name))

    def op_stack_global(self, _arg: None) -> None:
        name, module = self._pop(), self._pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            self._refuse(f"offset {self._at}: STACK_GLOBAL with a computed name, not two strings")
            self._stack.append(OPAQUE)
            return
        self._stack.append(self._global(module, name))

    def op_inst(self, arg: list[bytes]) -> None:
        self.op_global(arg)
        func = self._pop()
        self._call(func, tuple(self._pop_mark()))

    def op_obj(self, _arg: None) -> None:
        items = self._pop_mark()
        if not items:
            raise _Fatal(f"OBJ without a class at offset {self._at}")
        self._call(items[0], tuple(items[1:]))

    def op_reduce(self, _arg: None) -> None:
        args, func = self._pop(), self._pop()
        self._call(func, args)

    def op_newobj(self, _arg: None) -> None:
        self.op_reduce(None)

    def op_newobj_ex(self, _arg: None) -> None:
        _kwargs, args, cls = self._pop(), self._pop(), self._pop()
        self._call(cls, args)

    def op_build(self, _arg: None) -> None:
        state, target = self._pop(), self._top()
        if isinstance(target, _Global):
            self._refuse(
                f"offset {self._at}: BUILD sets state on the global {target.module}.{target.name} itself "
                "(would change a class or function for the whole process)"
            )
            return
        if isinstance(target, _Call):
            target.state = state
            callee = (target.func.module, target.func.name)
            problem = None
            if callee == ("numpy", "dtype"):
                problem = _dtype_problem(target)
            elif target.func.name == "_reconstruct" and isinstance(state, tuple) and len(state) == 5:
                problem = _covers(_length(state[4]), state[2], state[1], "an array's state")
            if problem:
                self._refuse(f"offset {self._at}: {problem}")
            if self._joblib and callee == JOBLIB_ARRAY_WRAPPER:
                self._joblib_array(state)

    def _joblib_array(self, state: Any) -> None:
        """joblib writes each array's bytes right after its wrapper, outside the pickle opcodes."""
        self._pop()
        if self._at < self._frame_end:
            raise _Fatal(f"a joblib array wrapper at offset {self._at} does not end its frame")
        itemsize, hasobject, count = _array_layout(state)
        if itemsize is None:
            raise _Fatal(f"cannot tell the size of the joblib array at offset {self._at}")
        if hasobject:  # a nested pickle follows, read by a fresh unpickler with the same find_class
            self._outer.append((self._stack, self._memo))
            self._stack, self._memo = [], {}
            return
        self._stack.append(OPAQUE)
        nbytes = count * itemsize
        self._payload_bytes += nbytes
        if isinstance(state, dict) and state.get("numpy_array_alignment_bytes") is not None:
            self._padding_then = nbytes
        else:
            self._skip = nbytes


def _dtype_layout(dtype: Any) -> tuple[int | None, bool]:
    """(itemsize, holds objects) of a pickled numpy.dtype(typestr, align, copy) + BUILD state."""
    if not (
        isinstance(dtype, _Call)
        and (dtype.func.module, dtype.func.name) == ("numpy", "dtype")
        and isinstance(dtype.args, tuple)
    ):
        return None, False
    typestr = dtype.args[0] if dtype.args else None
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    if not isinstance(typestr, str) or not typestr:
        return None, False
    hasobject = typestr[0] == "O"
    if len(state) >= 5:
        if state[2] not in (None, OPAQUE) and isinstance(state[2], tuple):  # sub-array (base, shape)
            hasobject |= _dtype_layout(state[2][0])[1]
        if isinstance(state[4], dict):
            for spec in state[4].values():
                if isinstance(spec, tuple) and spec:
                    hasobject |= _dtype_layout(spec[0])[1]
        elif state[4] not in (None,):
            return None, False
    code = typestr.lstrip("<>=|")
    digits = code[1:]
    if not code or code[0] not in "biufcOMmSUV" or not digits.isdigit():
        return None, hasobject
    size = int(digits) * (4 if code[0] == "U" else 1)  # 'U10' is ten 4-byte characters
    elsize = state[5] if len(state) >= 6 and isinstance(state[5], int) else -1
    if elsize > 0 and elsize != size:  # a state that contradicts its type string: where would numpy stop?
        return None, hasobject
    return size, hasobject


_SIZED_BUILDERS = {("builtins", "bytes"), ("builtins", "bytearray")}
_CONTAINER_BUILDERS = {("builtins", n) for n in ("set", "frozenset", "list", "tuple", "bytes", "bytearray", "dict")}
_OBJECT_FLAGS = 63  # numpy's flags for the object dtype; 1 (NPY_ITEM_REFCOUNT) marks any dtype holding objects


def _length(buffer: Any) -> int | None:
    if isinstance(buffer, bytes):
        return len(buffer)
    return buffer.length if isinstance(buffer, _Payload) else None


def _covers(length: int | None, dtype: Any, shape: Any, what: str) -> str | None:
    """An array from `length` bytes: its shape and dtype must need exactly that many (numpy checks the
    count, but trusts the dtype's item size: a forged one reads past the buffer)."""
    if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
        return f"{what} has a shape that is not a tuple of non-negative ints"
    itemsize, hasobject = _dtype_layout(dtype)
    if hasobject or length is None:  # objects come as a list; an out-of-band buffer is checked at load
        return None
    if itemsize is None:
        return f"{what} has a dtype whose item size cannot be told"
    count = 1
    for dim in shape:
        count *= dim
    if count * itemsize != length:
        return f"{what} needs {count * itemsize} bytes for its shape and dtype, its buffer has {length}"
    return None


def _dtype_problem(dtype: _Call) -> str | None:
    """A pickled numpy.dtype must be one numpy itself writes: exact ints, an element size that agrees with
    its type, subarray and fields inside it, objects only in the object dtype."""
    typestr = dtype.args[0] if isinstance(dtype.args, tuple) and dtype.args else None
    state = dtype.state
    if not isinstance(typestr, str) or not isinstance(state, tuple) or len(state) not in (8, 9):
        return "a numpy dtype whose arguments or state numpy never writes"
    _version, byteorder, sub, names, fields, elsize, alignment, flags = state[:8]
    if not all(type(v) is int for v in (_version, elsize, alignment, flags)):
        return "a numpy dtype state with a non-int element size, alignment or flags (non-canonical encoding)"
    if byteorder not in ("<", ">", "|", "="):
        return f"a numpy dtype with byte order {byteorder!r}"
    code = typestr.lstrip("<>=|")
    kind, digits = code[:1], code[1:]
    if (kind in "Mm") != (_version == 4 and len(state) == 9):  # only datetimes carry (version 4, unit metadata)
        return f"a numpy {typestr!r} dtype with a state of version {_version} and {len(state)} items"
    itemsize, hasobject = _dtype_layout(dtype)
    if kind == "O":
        return None if flags == _OBJECT_FLAGS and sub is None and fields is None else "a forged object dtype"
    if flags & 1 or hasobject:
        return "a numpy dtype holding objects inside a raw-bytes type (forged pointers)"
    if kind != "V":
        if sub is not None or names is not None or fields is not None:
            return f"a numpy {typestr!r} dtype with a subarray or fields"
        if elsize not in (-1, itemsize):
            return f"a numpy {typestr!r} dtype whose element size says {elsize}"
        return None
    if not digits.isdigit() or elsize != int(digits):
        return f"a numpy void dtype {typestr!r} whose element size says {elsize}"
    if sub is not None:
        base, shape = sub if isinstance(sub, tuple) and len(sub) == 2 else (None, None)
        if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
            return "a numpy subarray dtype without a shape of ints"
        count = 1
        for dim in shape:
            count *= dim
        if _dtype_layout(base)[0] is None or _dtype_layout(base)[0] * count != elsize:
            return "a numpy subarray dtype whose base and shape do not fill its element size"
    if fields is not None:
        if not isinstance(fields, dict) or not isinstance(names, tuple) or set(names) != set(fields):
            return "a numpy structured dtype whose names and fields disagree"
        for spec in fields.values():
            field_size = _dtype_layout(spec[0])[0] if isinstance(spec, tuple) and len(spec) in (2, 3) else None
            offset = spec[1] if field_size is not None else None
            if type(offset) is not int or offset < 0 or field_size is None or offset + field_size > elsize:
                return "a numpy structured dtype with a field outside its element size"
    return None


def _array_layout(state: Any) -> tuple[int | None, bool, int]:
    if not isinstance(state, dict):
        return None, False, 0
    shape = state.get("shape")
    if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
        return None, False, 0
    count = 1
    for dim in shape:
        count *= dim
    itemsize, hasobject = _dtype_layout(state.get("dtype"))
    return itemsize, hasobject, count


_HANDLERS: dict[str, Callable[[PickleScanner, Any], None]] = {
    "PROTO": PickleScanner.op_proto,
    "STOP": PickleScanner.op_stop,
    "FRAME": PickleScanner.op_frame,
    **dict.fromkeys(("INT", "BININT", "BININT1", "BININT2", "LONG"), PickleScanner.op_int),
    **dict.fromkeys(("LONG1", "LONG4"), PickleScanner.op_long_bin),
    **dict.fromkeys(("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"), PickleScanner.op_text),
    "UNICODE": PickleScanner.op_text_line,
    **dict.fromkeys(("SHORT_BINSTRING", "BINSTRING"), PickleScanner.op_py2_string),
    **dict.fromkeys(("SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8"), PickleScanner.op_bytes),
    **dict.fromkeys(
        (
            "STRING",
            "FLOAT",
            "BINFLOAT",
            "EMPTY_LIST",
            "EMPTY_SET",
        ),
        PickleScanner.op_opaque,
    ),
    "NONE": PickleScanner.op_none,
    "NEWTRUE": PickleScanner.op_true,
    "NEWFALSE": PickleScanner.op_false,
    "NEXT_BUFFER": PickleScanner.op_next_buffer,
    "READONLY_BUFFER": PickleScanner.op_noop,
    "APPEND": PickleScanner.op_append,
    **dict.fromkeys(("APPENDS", "ADDITEMS"), PickleScanner.op_appends),
    **dict.fromkeys(("LIST", "FROZENSET"), PickleScanner.op_from_mark),
    "EMPTY_TUPLE": PickleScanner.op_empty_tuple,
    "TUPLE": PickleScanner.op_tuple,
    "TUPLE1": PickleScanner.op_tuple1,
    "TUPLE2": PickleScanner.op_tuple2,
    "TUPLE3": PickleScanner.op_tuple3,
    "EMPTY_DICT": PickleScanner.op_empty_dict,
    "DICT": PickleScanner.op_dict,
    "SETITEM": PickleScanner.op_setitem,
    "SETITEMS": PickleScanner.op_setitems,
    "POP": PickleScanner.op_pop,
    "DUP": PickleScanner.op_dup,
    "MARK": PickleScanner.op_mark,
    "POP_MARK": PickleScanner.op_pop_mark,
    **dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), PickleScanner.op_get),
    **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), PickleScanner.op_put),
    "MEMOIZE": PickleScanner.op_memoize,
    **dict.fromkeys(("EXT1", "EXT2", "EXT4"), PickleScanner.op_ext),
    "PERSID": PickleScanner.op_persid,
    "BINPERSID": PickleScanner.op_binpersid,
    "GLOBAL": PickleScanner.op_global,
    "STACK_GLOBAL": PickleScanner.op_stack_global,
    "INST": PickleScanner.op_inst,
    "OBJ": PickleScanner.op_obj,
    "REDUCE": PickleScanner.op_reduce,
    "NEWOBJ": PickleScanner.op_newobj,
    "NEWOBJ_EX": PickleScanner.op_newobj_ex,
    "BUILD": PickleScanner.op_build,
}


_NO_ARG, _FIXED_ARG, _COUNTED_ARG, _LINES_ARG = range(4)


def _layout(op: pickletools.OpcodeInfo) -> tuple[int, Any, int]:
    """(argument kind, unpack_from of its fixed part, that part's size or the number of lines)."""
    if op.arg is None:
        return _NO_ARG, None, 0
    for kind, table in ((_FIXED_ARG, _FIXED), (_COUNTED_ARG, _COUNTED)):
        if op.arg.name in table:
            layout = struct.Struct(table[op.arg.name])
            return kind, layout.unpack_from, layout.size
    return _LINES_ARG, None, _LINES.get(op.arg.name, 1)


_OPS: dict[int, tuple[int, Any, int, Callable[[PickleScanner, Any], None]]] = {
    ord(op.code.encode("latin-1")): (*_layout(op), _HANDLERS[op.name]) for op in pickletools.opcodes
}


def _rules_digest() -> str:
    """The digest of the code that decides a verdict (this module and the allowlist's), read once at import:
    any change to either, even a comment, gives verdicts recorded before it another key."""
    digest = hashlib.sha256()
    for module in (sys.modules[__name__], _allowlist_module):
        with open(module.__file__ or "", "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


RULES_DIGEST = _rules_digest()


def verdict_key(allowlist: Allowlist) -> str:
    """What a recorded "safe" verdict on a stream holds for: these scanner and allowlist rules and this
    operator's PICKLE_ALLOWLIST_EXTRA. A load under another key scans the stream again."""
    extra = ",".join(sorted(f"{module}:{name}" for module, name in allowlist.extra))
    return hashlib.sha256(f"{RULES_DIGEST}\0{extra}".encode()).hexdigest()

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

import pickletools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bigpickle.errors import UnsafePickleError
from bigpickle.safety.allowlist import JOBLIB_ARRAY_WRAPPER, Allowlist, canonical
from bigpickle.units import KiB

SMALL_PAYLOAD = 4 * KiB  # payloads up to this are kept (names, versions); larger ones are only counted
MAX_LINE = 64 * KiB  # text arguments (GLOBAL names) longer than this are refused
MAX_STACK = 1 << 20
MAX_SMALL_CONTAINER = 256  # tuples/dicts tracked item by item up to this size
FEED = 64 * KiB  # bytes parsed per step when not skipping a payload
TRAILING_ALLOWED = {"bigpickle"}  # formats whose files carry data after the pickle's STOP


class _Opaque:
    """A value the scanner does not track (a float, a list, a large payload...)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<opaque>"


class _Mark:
    __slots__ = ()


OPAQUE = _Opaque()
MARK = _Mark()


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

    @property
    def safe(self) -> bool:
        return not self.forbidden and not self.problems

    @property
    def numpy_version(self) -> str | None:
        """numpy 1 pickles name numpy.core, numpy 2 pickles numpy._core."""
        if not self.numpy_spellings:
            return None
        return "/".join(sorted(self.numpy_spellings))

    def details(self) -> dict[str, Any]:
        """The manifest's `details` (the keys loading relies on)."""
        return {
            "pickle_protocol": self.protocol,
            "globals": sorted(self.globals),
            "sklearn_version": self.sklearn_version,
            "numpy_version": self.numpy_version,
            "pickle_opcodes": self.opcodes,
            "oob_buffers": self.oob_buffers,
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

    def __init__(self, fmt: str = "pickle", allowlist: Allowlist | None = None, *, fail_fast: bool = False) -> None:
        self.report = ScanReport(format=fmt)
        self.allowlist = (allowlist or Allowlist()).for_format(fmt)
        self.fail_fast = fail_fast
        self._joblib = fmt == "joblib"
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
        return self.report

    def verdict(self) -> ScanReport:
        return self.finish().raise_if_unsafe()

    # -- parsing --

    def _parse_pending(self) -> None:
        buf, pos = self._pending, 0
        try:
            while pos < len(buf) and not self._done:
                if self._skip:
                    take = min(self._skip, len(buf) - pos)
                    self._payload(bytes(buf[pos : pos + take]))
                    self._skip -= take
                    pos += take
                elif self._padding_then is not None:
                    self._padding(buf[pos])
                    self._skip = buf[pos] + self._padding_then
                    self._padding_then = None
                    pos += 1
                else:
                    new = self._step(buf, pos)
                    if new < 0:
                        if len(buf) - pos > MAX_LINE + 32:
                            raise _Fatal(f"an argument at offset {self._offset + pos} is longer than {MAX_LINE} bytes")
                        break
                    pos = new
        except _Fatal as exc:
            self._dead = True
            self._refuse(str(exc))
        if self._done and not self._dead:
            self._trailing(len(buf) - pos)
            pos = len(buf)
        self._offset += pos
        del buf[:pos]

    def _step(self, buf: bytearray, pos: int) -> int:
        """Handle the opcode at `pos`; the offset after it, or -1 when its argument is not all here yet."""
        code = buf[pos]
        spec = _OPS.get(code)
        if spec is None or (not self.report.opcodes and code != 0x80):
            raise _Fatal(self._not_an_opcode(code, pos))
        kind, unpack, size, handler = spec
        p = pos + 1
        end = len(buf)
        arg: Any = None
        if kind == _FIXED_ARG:
            if p + size > end:
                return -1
            (arg,) = unpack(buf, p)
            p += size
        elif kind == _COUNTED_ARG:
            if p + size > end:
                return -1
            (length,) = unpack(buf, p)
            if length < 0:
                raise _Fatal(f"negative length {length} at offset {self._offset + pos}")
            p += size
            if length <= SMALL_PAYLOAD:
                if p + length > end:
                    return -1
                arg = bytes(buf[p : p + length])
                p += length
            else:  # counted, never held
                self._skip = length
            self._check_frame(pos, p + (length if length > SMALL_PAYLOAD else 0))
        elif kind == _LINES_ARG:
            lines = []
            for _ in range(size):
                nl = buf.find(b"\n", p)
                if nl < 0:
                    return -1
                lines.append(bytes(buf[p:nl]))
                p = nl + 1
            arg = lines
        if kind != _COUNTED_ARG:
            self._check_frame(pos, p)
        self.report.opcodes += 1
        self._at = self._offset + p
        self._opcode(code, bytes(buf[pos:p]), arg, handler)
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

    def _check_frame(self, pos: int, end: int) -> None:
        """The standard pickler ends a frame between two opcodes, and writes a large payload outside any
        frame. An opcode that straddles a frame's end is read one way here and another way by an unpickler
        that re-reads after the frame (CPython's, from a file without `peek`): refuse it."""
        start, stop = self._offset + pos, self._offset + end
        if start < self._frame_end < stop:
            raise _Fatal(
                f"the opcode at offset {start} crosses the end of its frame at offset {self._frame_end} "
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

    def _push(self, value: Any) -> None:
        self._stack.append(value)

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
            self._push(OPAQUE)
            return
        if not self.allowlist.may_call(func.module, func.name) and self.allowlist.allows(func.module, func.name):
            # references, not calls: a ufunc or type a model keeps as an attribute is never run while loading
            self._refuse(f"offset {self._at}: calls {func.module}.{func.name}, which a model may only reference")
        self._push(_Call(func, args))

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
            self._push(OPAQUE)
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
        self._push(arg)

    def op_long_bin(self, arg: bytes | None) -> None:
        self._push(OPAQUE if arg is None else int.from_bytes(arg, "little", signed=True))

    def op_text(self, arg: bytes | None) -> None:
        if arg is None:
            self._push(OPAQUE)
            return
        try:
            self._push(arg.decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            self._push(OPAQUE)

    def op_text_line(self, arg: list[bytes]) -> None:
        try:
            self._push(arg[0].decode("raw-unicode-escape"))
        except UnicodeDecodeError:
            self._push(OPAQUE)

    def op_py2_string(self, arg: bytes | None) -> None:
        try:  # the unpickler decodes protocol-2 strings as ASCII by default
            self._push(OPAQUE if arg is None else arg.decode("ascii"))
        except UnicodeDecodeError:
            self._push(OPAQUE)

    def op_bytes(self, arg: bytes | None) -> None:
        self._push(OPAQUE if arg is None else arg)

    def op_opaque(self, _arg: Any) -> None:
        self._push(OPAQUE)

    def op_none(self, _arg: None) -> None:
        self._push(None)

    def op_true(self, _arg: None) -> None:
        self._push(True)

    def op_false(self, _arg: None) -> None:
        self._push(False)

    def op_next_buffer(self, _arg: None) -> None:
        self.report.oob_buffers += 1
        self._push(OPAQUE)

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
        self._push(OPAQUE)

    def op_empty_tuple(self, _arg: None) -> None:
        self._push(())

    def _tuple(self, items: list[Any]) -> None:
        self._push(tuple(items) if len(items) <= MAX_SMALL_CONTAINER else OPAQUE)

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
        self._push({})

    def op_dict(self, _arg: None) -> None:
        target: dict[Any, Any] = {}
        self._set_items(target, self._pop_mark())
        self._push(target)

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
        self._push(self._top())

    def op_mark(self, _arg: None) -> None:
        self._push(MARK)

    def op_pop_mark(self, _arg: None) -> None:
        self._pop_mark()

    def op_get(self, arg: Any) -> None:
        index = int(arg[0]) if isinstance(arg, list) else arg
        if index not in self._memo:
            raise _Fatal(f"memo index {index} read before it was written (offset {self._at})")
        self._push(self._memo[index])

    def op_put(self, arg: Any) -> None:
        index = int(arg[0]) if isinstance(arg, list) else arg
        self._memo[index] = self._top()

    def op_memoize(self, _arg: None) -> None:
        self._memo[len(self._memo)] = self._top()

    def op_ext(self, arg: int) -> None:
        self._refuse(f"offset {self._at}: uses the copyreg extension registry (code {arg})")
        self._push(OPAQUE)

    def op_persid(self, _arg: Any) -> None:
        self._refuse(f"offset {self._at}: uses a persistent id, which no model needs")
        self._push(OPAQUE)

    def op_binpersid(self, _arg: None) -> None:
        self._pop()
        self.op_persid(None)

    def op_global(self, arg: list[bytes]) -> None:
        try:
            module, name = (part.decode("utf-8") for part in arg)
        except UnicodeDecodeError:
            raise _Fatal(f"a GLOBAL name at offset {self._at} is not UTF-8") from None
        self._push(self._global(module, name))

    def op_stack_global(self, _arg: None) -> None:
        name, module = self._pop(), self._pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            self._refuse(f"offset {self._at}: STACK_GLOBAL with a computed name, not two strings")
            self._push(OPAQUE)
            return
        self._push(self._global(module, name))

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
            if self._joblib and (target.func.module, target.func.name) == JOBLIB_ARRAY_WRAPPER:
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
        self._push(OPAQUE)
        nbytes = count * itemsize
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
    **dict.fromkeys(("SHORT_BINBYTES", "BINBYTES", "BINBYTES8"), PickleScanner.op_bytes),
    **dict.fromkeys(
        (
            "STRING",
            "BYTEARRAY8",
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

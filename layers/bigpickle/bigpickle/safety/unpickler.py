"""The file -> object step with every check on: allowlisted globals only, the opcode scanner reading
ahead of the unpickler, and the file's sha256 compared with its manifest before the object is returned.

Three formats (loading/formats.py): a plain pickle, a joblib file (joblib's own unpickler, restricted
the same way, arrays read by joblib or mapped with `mmap_mode="r"`), and the bigpickle format (a
protocol-5 stream whose out-of-band `buffers=` the caller supplies).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bigpickle.errors import UnsafePickleError
from bigpickle.formats import BIGPICKLE, JOBLIB
from bigpickle.safety.allowlist import Allowlist, canonical
from bigpickle.safety.audit import audit_model
from bigpickle.safety.hashing import HashingReader, check_sha256, hash_file
from bigpickle.safety.scanner import PickleScanner


def find_allowed(allowlist: Allowlist, module: str, name: str) -> Any:
    """`find_class` for every unpickler here: import only what the allowlist names, exactly."""
    if not allowlist.allows(module, name):
        dotted = f"{module}.{name}"
        raise UnsafePickleError([f"imports {dotted}, which is not on the allowlist"], forbidden=[dotted])
    module, name = canonical(module, name)
    return getattr(importlib.import_module(module), name)


class RestrictedUnpickler(pickle.Unpickler):
    """The C unpickler with `find_class` limited to the allowlist; takes protocol-5 `buffers=`."""

    def __init__(self, file: Any, allowlist: Allowlist, *, buffers: Iterable[Any] | None = None) -> None:
        super().__init__(file, buffers=buffers)
        self.allowlist = allowlist

    def find_class(self, module: str, name: str) -> Any:
        return find_allowed(self.allowlist, module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(["uses a persistent id, which no model needs"])


@functools.cache
def _joblib_unpickler() -> type:
    from joblib.numpy_pickle import NumpyUnpickler

    class RestrictedNumpyUnpickler(NumpyUnpickler):
        """joblib's unpickler (pure Python) with the same `find_class`; joblib routes the nested pickles of
        object arrays through it too. Being Python, it can also refuse BUILD on a global it handed out."""

        dispatch = NumpyUnpickler.dispatch.copy()

        def __init__(self, path: Path, file: Any, allowlist: Allowlist, mmap_mode: str | None) -> None:
            super().__init__(str(path), file, ensure_native_byte_order=mmap_mode is None, mmap_mode=mmap_mode)
            self.allowlist = allowlist
            self._globals: list[Any] = []

        def find_class(self, module: str, name: str) -> Any:
            found = find_allowed(self.allowlist, module, name)
            self._globals.append(found)
            return found

        def persistent_load(self, pid: Any) -> Any:
            raise UnsafePickleError(["uses a persistent id, which no model needs"])

        def load_build(self) -> None:
            if len(self.stack) >= 2 and any(self.stack[-2] is g for g in self._globals):
                raise UnsafePickleError(["BUILD sets state on a global itself (a class or function)"])
            super().load_build()

        dispatch[pickle.BUILD[0]] = load_build

    return RestrictedNumpyUnpickler


def _load_stream(path: Path, file: Any, fmt: str, allowlist: Allowlist, mmap: bool, buffers: Any) -> Any:
    if fmt == JOBLIB:
        return _joblib_unpickler()(path, file, allowlist, "r" if mmap else None).load()
    return RestrictedUnpickler(file, allowlist, buffers=buffers).load()


def load_verified(
    path: Path,
    fmt: str,
    *,
    sha256: str | None = None,
    mmap: bool = False,
    buffers: Iterable[Any] | None = None,
    allowlist: Allowlist | None = None,
) -> Any:
    """Build the model in `path` or raise; the object is returned only after the sha256 matched.

    Pickle, and joblib read normally: one pass; the unpickler reads through a HashingReader feeding the
    sha256 and a fail-fast scanner. Mapped joblib and the bigpickle format: their arrays are mapped or
    read by the format code, not through the unpickler, so one bounded pass hashes and scans the whole
    file first (with a mapping it also warms the page cache the mapping then uses), then the load runs.
    Without `allowlist`, the built-in one: the caller brings the operator's extra pairs (its Settings).
    """
    allowlist = (allowlist or Allowlist()).for_format(fmt)
    scanner = PickleScanner(fmt, allowlist, fail_fast=True)
    if fmt == BIGPICKLE or (fmt == JOBLIB and mmap):
        check_sha256(path, sha256, hash_file(path, [scanner]))
        scanner.verdict()
        with open(path, "rb") as f:
            return audit_model(_load_stream(path, f, fmt, allowlist, mmap, buffers), allowlist)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        reader = HashingReader(f, [digest, scanner])
        model = _load_stream(path, reader, fmt, allowlist, mmap, buffers)
        reader.drain()
    scanner.verdict()
    check_sha256(path, sha256, digest.hexdigest())
    return audit_model(model, allowlist)

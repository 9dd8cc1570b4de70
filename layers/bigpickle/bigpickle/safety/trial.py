"""Staging's trial load: before a model is published, load it once, with every check on (scanner, allowlist,
post-load audit), in a child process under an address-space limit and a time limit. A model that crashes,
exhausts its memory budget, hangs or fails the audit there is refused, and never reaches the predict
function.

Children are forked from a fork server started once per process with every allowlisted module already
imported: a child starts in milliseconds, inherits no threads or locks from the stage function, and the
stage function itself never imports scikit-learn (its memory stays bounded). Each child fingerprints every
allowlisted class and function (the ids of their attributes, defaults and code) before and after the load,
so a stream that sets state on one of them for the whole process (the scanner/loader desync of issue 15)
is refused even when the scanner saw nothing wrong.

The child's budget is what it maps when it starts plus a multiple of the file's size: a 47-byte file that
asks for a GiB is refused, a model whose arrays are its bytes is not. A model larger than the stage
function can hold is not trial-loaded (the predict side's load marker, loading.quarantine, still keeps it
from crash-looping).
"""

from __future__ import annotations

import functools
import gc
import importlib
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigpickle.errors import UnsafePickleError
from bigpickle.formats import BIGPICKLE
from bigpickle.safety.allowlist import BASE, Allowlist
from bigpickle.safety.layout import read_layout
from bigpickle.units import MiB

BUDGET_PER_FILE_BYTE = 3  # the child may grow by this many bytes per byte of the file...
BUDGET_FLOOR = 256 * MiB  # ...and at least this much (small models' Python objects)
BASE_SECONDS = 30.0
SECONDS_PER_GIB = 60.0
LOADER_MODULE = "bigpickle.loading.formats"
Probe = Callable[[Any], Any]  # the loaded model -> something picklable learnt from it


@dataclass(frozen=True)
class TrialLimits:
    memory_bytes: int  # growth allowed over the child's address space when it starts, besides the mapping
    seconds: float
    mapping_bytes: int = 0  # the file's read-only mapping, when the load maps it (page cache, not memory)

    @classmethod
    def for_load(cls, path: Path, fmt: str, *, mmap: bool) -> TrialLimits:
        """The budget for loading `path` as the predict function will. Mapped, a bigpickle file's buffers that
        no estimator copies stay in the mapping (page cache): only the rest is priced per byte."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            mapped = read_layout(f, size).mapped_bytes if mmap and fmt == BIGPICKLE else 0
        return cls(
            max(BUDGET_FLOOR, BUDGET_PER_FILE_BYTE * (size - mapped)),
            BASE_SECONDS + SECONDS_PER_GIB * size / (1024 * MiB),
            size if mapped else 0,
        )

    def fits_in(self, function_memory_bytes: int | None) -> bool:
        """Can the stage function hold this trial (None: outside Lambda, the machine's memory)? A mapped load
        needs memory for what it does not map: the seed's 19 GB model of one array fits."""
        memory = function_memory_bytes or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return self.memory_bytes < memory // 2


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _allowlisted_objects(allowlist: Allowlist) -> list[tuple[str, Any]]:
    found = []
    for module, name in sorted(BASE | allowlist.extra):
        try:
            found.append((f"{module}.{name}", getattr(importlib.import_module(module), name)))
        except (ImportError, AttributeError):  # not installed here (pandas without the tabular runtime)
            continue
    return found


def _fingerprint(objects: list[tuple[str, Any]]) -> dict[str, int]:
    """`name.attribute` -> id of its value: what a BUILD on a global could replace for the whole process."""
    prints = {}
    for dotted, obj in objects:
        for attribute in ("__defaults__", "__kwdefaults__", "__code__"):
            if hasattr(obj, attribute):
                prints[f"{dotted}.{attribute}"] = id(getattr(obj, attribute))
        for attribute, value in getattr(obj, "__dict__", {}).items():
            prints[f"{dotted}.{attribute}"] = id(value)
    return prints


def _child(
    conn: Any,
    path: Path,
    fmt: str,
    allowlist: Allowlist,
    limits: TrialLimits,
    load: Mapping[str, Any],
    probe: Probe | None,
) -> None:
    gc.disable()  # the child is brief; a collection would only cost time
    try:
        # Imported before the limit (preloaded by the fork server): the libraries' own mappings are not the
        # model's allocation. Inside the try, so any failure is reported rather than waited out.
        load_model_file = importlib.import_module(LOADER_MODULE).load_model_file  # the predict side's own load
        objects = _allowlisted_objects(allowlist)
        before = _fingerprint(objects)
        limit = _address_space() + limits.memory_bytes + limits.mapping_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        model = load_model_file(path, fmt, allowlist=allowlist, **load)
        changed = sorted(key for key, value in _fingerprint(objects).items() if before.get(key) != value)
        if changed:
            raise UnsafePickleError([f"the load changed {', '.join(changed[:5])} for the whole process"])
        learnt = probe(model) if probe is not None else None
    except UnsafePickleError as exc:
        conn.send((exc.reasons, None))
    except MemoryError:
        reason = "the trial load ran out of its memory budget (an allocation the file's size does not explain)"
        conn.send(([reason], None))
    except BaseException as exc:
        conn.send(([f"the trial load failed: {type(exc).__name__}: {exc}"], None))
    else:
        conn.send(([], learnt))
    conn.close()
    os._exit(0)  # no exit handlers: the answer is sent


def start_fork_server() -> None:
    """Start the fork server now (it imports scikit-learn and the rest of the allowlist: seconds of CPU), so
    that it is ready by the time a copy is complete rather than after it. Returns at once."""
    _context()
    multiprocessing.forkserver.ensure_running()


@functools.cache
def _context() -> Any:
    """The fork server, with every allowlisted module (and the loader) imported once, before any child."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(sorted({LOADER_MODULE, __name__} | {module for module, _ in BASE}))
    return context


def trial_load(
    path: Path,
    fmt: str,
    allowlist: Allowlist,
    limits: TrialLimits | None = None,
    probe: Probe | None = None,
    *,
    mmap: bool = False,
    layout: Mapping[str, Any] | None = None,
) -> Any:
    """Load `path` in a limited child as the predict function will (`mmap`, and the manifest's `layout`
    digests and verdict: loading.load_model_file); raise UnsafePickleError with the reason if it does not
    load cleanly. Returns what `probe` (a module-level function: it crosses to the fork server by name)
    found out about the loaded model, or None without a probe."""
    limits = limits or TrialLimits.for_load(path, fmt, mmap=mmap)
    load = {"mmap": mmap, "layout": dict(layout) if layout else None}
    context = _context()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, path, fmt, allowlist, limits, load, probe), daemon=True)
    child.start()
    send.close()
    reasons: list[str] | None = None
    learnt = None
    if receive.poll(limits.seconds):
        try:
            reasons, learnt = receive.recv()
        except EOFError:  # the child died before it could answer
            reasons = None
    child.join(timeout=1 if reasons is not None else 0)
    if child.is_alive():
        child.kill()
        child.join()
        if reasons is None:
            raise UnsafePickleError([f"the trial load did not finish within {limits.seconds:.0f} s"])
    if reasons is None:
        code = child.exitcode or 0
        died = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        raise UnsafePickleError([f"the trial load killed its process ({died})"])
    if reasons:
        raise UnsafePickleError(reasons)
    return learnt

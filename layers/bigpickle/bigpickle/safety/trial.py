"""Staging's trial load: before a model is published, load it once, with every check on (scanner, allowlist,
post-load audit), in a forked child process under an address-space limit and a time limit. A model that
crashes, exhausts its memory budget, hangs or fails the audit there is refused, and never reaches the
predict function.

The child's budget is what the process already maps plus a multiple of the file's size: a 47-byte file
that asks for a GiB is refused, a model whose arrays are its bytes is not. A model larger than the stage
function can hold is not trial-loaded (the predict side's load marker, loading.quarantine, still keeps it
from crash-looping).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import resource
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigpickle.errors import UnsafePickleError
from bigpickle.safety.allowlist import Allowlist
from bigpickle.units import MiB

BUDGET_PER_FILE_BYTE = 3  # the child may grow by this many bytes per byte of the file...
BUDGET_FLOOR = 256 * MiB  # ...and at least this much (imports, small models' Python objects)
BASE_SECONDS = 30.0
SECONDS_PER_GIB = 60.0


@dataclass(frozen=True)
class TrialLimits:
    memory_bytes: int  # growth allowed over the parent's address space
    seconds: float

    @classmethod
    def for_file(cls, size: int) -> TrialLimits:
        return cls(max(BUDGET_FLOOR, BUDGET_PER_FILE_BYTE * size), BASE_SECONDS + SECONDS_PER_GIB * size / (1024 * MiB))


def fits_in(size: int, function_memory_bytes: int | None) -> bool:
    """Can the stage function hold a trial load of a file this big (None: no limit known, outside Lambda)?"""
    return function_memory_bytes is None or TrialLimits.for_file(size).memory_bytes < function_memory_bytes // 2


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _child(conn: Any, load: Any, path: Path, fmt: str, allowlist: Allowlist, limit: int) -> None:
    gc.disable()  # a collection would touch, and so copy, every object the parent holds; the child is brief
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        load(path, fmt, allowlist=allowlist)
    except UnsafePickleError as exc:
        conn.send(exc.reasons)
    except MemoryError:
        conn.send(["the trial load ran out of its memory budget (an allocation the file's size does not explain)"])
    except BaseException as exc:
        conn.send([f"the trial load failed: {type(exc).__name__}: {exc}"])
    else:
        conn.send([])
    conn.close()
    os._exit(0)  # no atexit handlers or finalizers inherited from the parent: the answer is sent


def trial_load(path: Path, fmt: str, allowlist: Allowlist, limits: TrialLimits | None = None) -> None:
    """Load `path` in a limited child; raise UnsafePickleError with the reason if it does not load cleanly."""
    from bigpickle.loading.formats import load_model_file  # the predict side's own load; imported before fork

    limits = limits or TrialLimits.for_file(path.stat().st_size)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(
        target=_child,
        args=(send, load_model_file, path, fmt, allowlist, _address_space() + limits.memory_bytes),
        daemon=True,
    )
    child.start()
    send.close()
    reasons: list[str] | None = None
    if receive.poll(limits.seconds):
        try:
            reasons = receive.recv()
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

"""The predict handler in a child process, run the way Lambda runs an execution environment: one invocation
at a time, and frozen (SIGSTOP) from the moment an invocation returns until the next one starts (SIGCONT).

A load's only progress is made while the child runs, so a design that relies on work continuing between
invocations fails here as it would on Lambda. Loads are throttled: each version named in `load_seconds`
needs that much *running* time (20 ms sleeps; a freeze lets at most one of them finish early).
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

LOAD_STEP_SECONDS = 0.02
REPLY_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Invocation:
    answer: Any
    seconds: float  # wall time from the invoke to the answer


def throttled(loader: Callable[..., Any], load_seconds: dict[str, float]) -> Callable[..., Any]:
    def load(path: Path, fmt: str, **options: Any) -> Any:
        steps = next((round(s / LOAD_STEP_SECONDS) for v, s in load_seconds.items() if v in str(path)), 0)
        for _ in range(steps):
            time.sleep(LOAD_STEP_SECONDS)
        return loader(path, fmt, **options)

    return load


def _serve(conn: Connection, load_seconds: dict[str, float], waits: dict[str, float]) -> None:
    from bigpickle.local.context import LocalLambdaContext
    from bigpickle.local.runtime import predict_handler

    handler = predict_handler()  # the module's init: what Lambda's Init phase runs
    registry = inspect.unwrap(handler).__globals__["registry"]  # the handler module's registry seams
    registry.loader = throttled(registry.loader, load_seconds)
    for name, seconds in waits.items():
        setattr(registry, name, seconds)
    conn.send("ready")
    while (request := conn.recv()) is not None:
        event, timeout_seconds = request
        conn.send(handler(event, LocalLambdaContext(timeout_seconds=timeout_seconds)))


class FrozenBetweenInvocations:
    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process, self.conn = process, conn
        self.frozen = False

    def invoke(self, event: dict[str, Any], *, timeout_seconds: float = 900.0) -> Invocation:
        """Thaw, invoke, wait for the answer, freeze again."""
        self._signal(signal.SIGCONT)
        started = time.monotonic()
        self.conn.send((event, timeout_seconds))
        if not self.conn.poll(REPLY_TIMEOUT_SECONDS):
            raise TimeoutError(f"no answer within {REPLY_TIMEOUT_SECONDS} s")
        answer = self.conn.recv()
        seconds = time.monotonic() - started
        self._signal(signal.SIGSTOP)
        return Invocation(answer, seconds)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process.pid is not None
        os.kill(self.process.pid, sig)
        self.frozen = sig == signal.SIGSTOP


@contextmanager
def predict_environment(load_seconds: dict[str, float], **waits: float) -> Iterator[FrozenBetweenInvocations]:
    """A predict execution environment in a child process (the caller's environment variables: MODELS_ROOT,
    MODEL_NAME, ...), initialised and frozen until its first invocation; stopped on exit."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(child, load_seconds, waits), daemon=True)
    process.start()
    try:
        if not parent.poll(REPLY_TIMEOUT_SECONDS):
            raise TimeoutError("the predict environment did not initialise")
        assert parent.recv() == "ready"
        environment = FrozenBetweenInvocations(process, parent)
        environment._signal(signal.SIGSTOP)
        yield environment
    finally:
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGCONT)
            parent.send(None)
            process.join(10)
        if process.is_alive():
            process.kill()
            process.join(10)

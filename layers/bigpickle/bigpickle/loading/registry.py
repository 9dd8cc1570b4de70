"""The models this container holds: each loaded once, swapped when its pointer moves, evicted LRU by memory.

A load runs on its own thread, but on Lambda that thread runs only while an invocation does: once the
handler returns, Lambda freezes the execution environment until the next invocation. So every invocation
that needs a loading model lends it time: an HTTP request waits up to `REQUEST_WAIT_SECONDS` (inside API
Gateway's 30 s) and the invocation's remaining time, then answers 503 + Retry-After: 1 ("retry now: your
retry carries the load on"); a warm-up waits its whole remaining time. While a new version loads, the
previous one keeps answering if memory allowed keeping both, and every request lends the new version's load
`SWAP_WAIT_SECONDS` first. docs/loading.md "Loads and the Lambda freeze" has the numbers.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigpickle.config import Settings
from bigpickle.errors import BigPickleError, ModelLoadError, ModelNotReadyError
from bigpickle.formats import PICKLE
from bigpickle.loading import heap
from bigpickle.loading.capacity import LoadCost, MemoryBudget, estimate_load, mib, process_rss
from bigpickle.loading.compat import check_versions
from bigpickle.loading.formats import load_model_file
from bigpickle.loading.quarantine import guarded, guarded_load_model_file
from bigpickle.observability import MetricUnit, logger, metrics, tracer
from bigpickle.safety.allowlist import Allowlist
from bigpickle.store import Manifest, ModelStore, validate_model_name
from bigpickle.units import MiB

REQUEST_WAIT_SECONDS = 25.0  # an HTTP request lends a load this long; HTTP API gives up at 30 s
SWAP_WAIT_SECONDS = 1.0  # each request lends a new version's load this long, then the old version answers
ANSWER_MARGIN_SECONDS = 2.0  # kept from an invocation's remaining time to answer after a wait
ASSUMED_LOAD_RATE = 200 * MiB  # bytes per second, only to tell a client how long a load may take
# A load moves on only while an invocation runs here, so the retry itself is what finishes it: retry at once.
RETRY_AFTER_SECONDS = 1

# (path, fmt, *, mmap, sha256, allowlist, layout) -> model; loading.load_model_file unless a test injects one
Loader = Callable[..., Any]


@dataclass(frozen=True)
class LoadedModel:
    manifest: Manifest
    model: Any
    load_seconds: float
    cost: LoadCost
    mmap: bool
    rss_growth: int  # measured resident-memory growth across the load (other threads may blur it)


@dataclass
class _Pending:
    version: str
    cost: LoadCost
    future: Future[LoadedModel]
    lent: float = 0.0  # seconds invocations have waited on this load: its progress, whatever the freezes


@dataclass
class _Slot:
    loaded: LoadedModel | None = None
    pending: _Pending | None = None
    checked_at: float = -math.inf
    # The last failed load (version, error): re-raised until the pointer moves or the refresh interval
    # passes, so a broken multi-GB file is not re-read by every request.
    failed: tuple[str, BigPickleError] | None = None


class ModelRegistry:
    """Named models in memory. `get` is the only way in; it loads, refreshes and evicts as needed."""

    def __init__(
        self,
        store: ModelStore,
        *,
        mmap: bool = False,
        refresh_seconds: float = 30,
        version_check: str = "strict",
        budget: MemoryBudget | None = None,
        allowlist: Allowlist | None = None,
        request_wait_seconds: float = REQUEST_WAIT_SECONDS,
        swap_wait_seconds: float = SWAP_WAIT_SECONDS,
        loader: Loader = guarded_load_model_file,
        on_loaded: Callable[[LoadedModel], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.mmap = mmap
        self.refresh_seconds = refresh_seconds
        self.version_check = version_check
        self.budget = budget or MemoryBudget(limit=None, baseline=process_rss())
        self.allowlist = allowlist  # None: the loader reads PICKLE_ALLOWLIST_EXTRA itself
        self.request_wait_seconds = request_wait_seconds
        self.swap_wait_seconds = swap_wait_seconds
        self.loader = loader
        self._on_loaded = on_loaded or record_load  # metrics, log, heap freeze, before the model is handed out
        self._clock = clock
        self._slots: OrderedDict[str, _Slot] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._invocation = threading.local()  # .remaining: seconds left in the current invocation

    @classmethod
    def from_settings(cls, settings: Settings, **seams: Any) -> ModelRegistry:
        return cls(
            ModelStore(settings.models_root),
            mmap=settings.model_mmap,
            refresh_seconds=settings.model_refresh_seconds,
            version_check=settings.model_version_check,
            budget=MemoryBudget(limit=settings.function_memory_bytes, baseline=process_rss()),
            allowlist=Allowlist(settings.pickle_allowlist_extra),
            **{"loader": guarded(functools.partial(load_model_file, verify=settings.model_verify)), **seams},
        )

    # -- serving --

    @contextmanager
    def invocation(self, remaining_seconds: Callable[[], float]) -> Iterator[None]:
        """Bound every wait inside the block by the invocation's remaining time (less a margin to answer):
        a wait that ran into Lambda's timeout would lose the environment and the load with it."""
        self._invocation.remaining = remaining_seconds
        try:
            yield
        finally:
            del self._invocation.remaining

    def _invocation_budget(self) -> float | None:
        remaining = getattr(self._invocation, "remaining", None)
        return None if remaining is None else max(0.0, remaining() - ANSWER_MARGIN_SECONDS)

    def get(self, name: str, *, until_loaded: bool = False) -> LoadedModel:
        """The current version of `name`, loading it if needed. A request lends a load at most the request
        wait (a new version's load `SWAP_WAIT_SECONDS`, then the previous version answers) and answers 503 +
        Retry-After; `until_loaded` (a warm-up) waits as long as the invocation lasts."""
        validate_model_name(name)
        now = self._clock()
        with self._lock:
            slot = self._slots.get(name)
            if slot and slot.loaded and not slot.pending and now - slot.checked_at < self.refresh_seconds:
                self._slots.move_to_end(name)
                return slot.loaded
            version = self.store.current_version(name)  # the one cheap read that notices a new version
            if version is None:
                self.store.read_manifest(name)  # raises 404 (never staged) or 503 (nothing published yet)
            slot = self._slots.setdefault(name, _Slot())
            self._slots.move_to_end(name)
            refreshed = now - slot.checked_at >= self.refresh_seconds
            if refreshed:
                slot.checked_at = now
            if slot.loaded and slot.loaded.manifest.version == version and not slot.pending:
                return slot.loaded
            if slot.failed and slot.failed[0] == version and not refreshed:
                raise slot.failed[1]
            slot.failed = None
            if slot.pending is None:
                slot.pending = self._start(name, version, slot)
            pending, previous = slot.pending, slot.loaded
        wait = self._wait_for(until_loaded=until_loaded, swapping=previous is not None)
        started = time.monotonic()
        try:
            return pending.future.result(timeout=wait)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                pending.lent += time.monotonic() - started
        if previous is not None and not until_loaded:
            return previous
        left = max(0.0, pending.cost.bytes / ASSUMED_LOAD_RATE - pending.lent)
        raise ModelNotReadyError(
            f"model {name!r} version {pending.version!r} is loading ({mib(pending.cost.bytes)} MiB, "
            f"{pending.lent:.0f} s of loading so far, about {left:.0f} s to go at {mib(ASSUMED_LOAD_RATE)} MiB/s); "
            "it loads while requests wait for it: retry now",
            retry_after_seconds=RETRY_AFTER_SECONDS,
        )

    def _wait_for(self, *, until_loaded: bool, swapping: bool) -> float | None:
        """How long this invocation lends a load (None: until it is done, outside Lambda's deadlines)."""
        budget = self._invocation_budget()
        if until_loaded:
            return budget
        wait = self.swap_wait_seconds if swapping else self.request_wait_seconds
        return wait if budget is None else min(wait, budget)

    def state(self, name: str) -> tuple[str, str | None]:
        """("ready" | "loading" | "not_loaded", version) without loading or reading anything."""
        with self._lock:
            return _state_of(self._slots.get(name))

    def published(self, name: str) -> tuple[Manifest, bool]:
        """The version of `name` staged now (without loading it) and whether its model file is there.
        Raises ModelNotFoundError when nothing is staged under that name."""
        manifest = self.store.read_manifest(name)
        return manifest, self.store.model_path(manifest).is_file()

    def list_models(self) -> dict[str, Any]:
        """Every staged or held model with its current and loaded versions, and the memory picture."""
        with self._lock:
            slots = dict(self._slots)
            held = self._held_bytes()
        models = []
        for name in sorted(set(self.store.list_models()) | set(slots)):
            slot = slots.get(name) or _Slot()
            state, _ = _state_of(slot)
            models.append(
                {
                    "name": name,
                    "current_version": self.store.current_version(name),
                    "state": state,
                    "loaded_version": slot.loaded.manifest.version if slot.loaded else None,
                    "loading_version": slot.pending.version if slot.pending else None,
                    "memory_bytes": slot.loaded.cost.bytes if slot.loaded else None,
                }
            )
        memory = {"limit_bytes": self.budget.limit, "baseline_bytes": self.budget.baseline, "models_bytes": held}
        return {"models": models, "memory": memory}

    # -- loading (called with the lock held, except the thread body) --

    def _held_bytes(self) -> int:
        return sum(
            (s.loaded.cost.bytes if s.loaded else 0) + (s.pending.cost.bytes if s.pending else 0)
            for s in self._slots.values()
        )

    def _start(self, name: str, version: str, slot: _Slot) -> _Pending:
        manifest = self.store.read_manifest(name, version)
        check_versions(manifest, self.version_check)
        path = self.store.model_path(manifest)
        try:
            cost = estimate_load(manifest, path, mmap=self.mmap)
        except OSError as exc:
            raise ModelLoadError(
                f"model {name!r} version {version!r} cannot be read: {exc}; re-stage it or roll back"
            ) from exc
        self._make_room(name, version, cost.bytes)
        if cost.legacy and manifest.format == PICKLE:
            logger.warning(
                "old pickle protocol: loading costs about 2.3x the model's bytes and ~10x the time; "
                "re-save it with `bigpickle convert IN OUT.bpk`",
                extra={"model": name, "version": version, "protocol": cost.protocol, "memory_bytes": cost.bytes},
            )
        future: Future[LoadedModel] = Future()
        thread = threading.Thread(
            target=self._load, args=(slot, manifest, path, cost, future), name=f"load-{name}", daemon=True
        )
        thread.start()
        return _Pending(version, cost, future)

    def _make_room(self, name: str, version: str, need: int) -> None:
        """Evict loaded models (this model's old version first, then least recently used) until `need` fits."""
        held = self._held_bytes()
        if self.budget.fits(need, held):
            return
        evictable = sorted((n for n, s in self._slots.items() if s.loaded), key=lambda n: n != name)
        freeable = sum(self._slots[n].loaded.cost.bytes for n in evictable)  # type: ignore[union-attr]
        if not self.budget.fits(need, held - freeable):
            raise self.budget.refuse(name, version, need, held - freeable)
        for victim in evictable:
            if self.budget.fits(need, held):
                break
            slot = self._slots[victim]
            held -= slot.loaded.cost.bytes  # type: ignore[union-attr]
            logger.info(
                "releasing a model to make room",
                extra={"model": victim, "version": slot.loaded.manifest.version, "for": name},  # type: ignore[union-attr]
            )
            slot.loaded = None
            if victim != name and not slot.pending:
                del self._slots[victim]
        heap.collect_released()

    def _load(self, slot: _Slot, manifest: Manifest, path: Path, cost: LoadCost, future: Future[LoadedModel]) -> None:
        """The load thread. Resolves `future` and clears `slot.pending` whatever fails: a request waiting on it
        must never wait on a load that has ended."""
        try:
            loaded = self._read(manifest, path, cost)
        except BaseException as exc:
            error = _load_error(manifest, exc)
            with self._lock:
                slot.pending, slot.failed = None, (manifest.version, error)
            future.set_exception(error)
            logger.exception(
                f"model {manifest.name!r} version {manifest.version!r} failed to load; re-stage it or roll back",
                extra={"model": manifest.name, "version": manifest.version, "error": error.message},
            )
            return
        try:
            self._on_loaded(loaded)
        except Exception:
            logger.exception("bookkeeping after a load failed; the model serves", extra={"model": manifest.name})
        finally:
            with self._lock:
                slot.loaded, slot.pending = loaded, None
            future.set_result(loaded)

    @tracer.capture_method
    def _read(self, manifest: Manifest, path: Path, cost: LoadCost) -> LoadedModel:
        log = {"model": manifest.name, "version": manifest.version, "bytes": manifest.bytes, "mmap": self.mmap}
        logger.info("loading model", extra={**log, "expected_memory_bytes": cost.bytes, "protocol": cost.protocol})
        rss_before, started = process_rss(), time.perf_counter()
        model = self.loader(
            path,
            manifest.format,
            mmap=self.mmap,
            sha256=manifest.sha256,
            allowlist=self.allowlist,
            layout=manifest.details.get("layout"),  # a published layout's own digests (loading/formats.py)
        )
        seconds = time.perf_counter() - started
        return LoadedModel(manifest, model, seconds, cost, self.mmap, process_rss() - rss_before)


def record_load(loaded: LoadedModel) -> None:
    """After a load, before the model is handed out: metrics, a log line, the heap frozen around the model."""
    manifest = loaded.manifest
    metrics.add_metric(name="ModelLoadSeconds", unit=MetricUnit.Seconds, value=loaded.load_seconds)
    metrics.add_metric(name="ModelBytes", unit=MetricUnit.Bytes, value=manifest.bytes)
    logger.info(
        "model loaded",
        extra={
            "model": manifest.name,
            "version": manifest.version,
            "seconds": round(loaded.load_seconds, 3),
            "rss_growth_bytes": loaded.rss_growth,
        },
    )
    heap.freeze_survivors()


def _load_error(manifest: Manifest, exc: BaseException) -> BigPickleError:
    if isinstance(exc, BigPickleError):
        return exc
    error = ModelLoadError(
        f"model {manifest.name!r} version {manifest.version!r} could not be loaded: {type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return error


def _state_of(slot: _Slot | None) -> tuple[str, str | None]:
    if slot and slot.pending:
        return "loading", slot.pending.version
    if slot and slot.loaded:
        return "ready", slot.loaded.manifest.version
    return "not_loaded", None

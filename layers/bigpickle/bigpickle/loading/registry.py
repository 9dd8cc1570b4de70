"""The models this container holds: each loaded once, swapped when its pointer moves, evicted LRU by memory.

A load runs on its own thread so an HTTP request can stop waiting before API Gateway's 30 s timeout and
answer 503 + Retry-After while the load goes on (a warm-up invoke waits for it instead). While a new
version loads, the previous one keeps answering if memory allowed keeping both.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

from bigpickle.config import Settings
from bigpickle.errors import BigPickleError, ModelLoadError, ModelNotReadyError
from bigpickle.loading import heap
from bigpickle.loading.capacity import LoadCost, MemoryBudget, estimate_load, mib, process_rss
from bigpickle.loading.compat import check_versions
from bigpickle.loading.formats import load_model_file
from bigpickle.observability import MetricUnit, logger, metrics, tracer
from bigpickle.safety.allowlist import Allowlist
from bigpickle.store import Manifest, ModelStore, validate_model_name
from bigpickle.units import MiB

REQUEST_WAIT_SECONDS = 20.0  # an HTTP request waits this long for a load; HTTP API gives up at 30 s
SWAP_WAIT_SECONDS = 1.0  # the request that notices a new version waits this long before the old one answers
ASSUMED_LOAD_RATE = 200 * MiB  # bytes per second, only to suggest a Retry-After
MAX_RETRY_AFTER_SECONDS = 30

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
    started: float
    future: Future[LoadedModel]


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
        loader: Loader = load_model_file,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.mmap = mmap
        self.refresh_seconds = refresh_seconds
        self.version_check = version_check
        self.budget = budget or MemoryBudget(limit=None, baseline=process_rss())
        self.allowlist = allowlist  # None: the loader reads PICKLE_ALLOWLIST_EXTRA itself
        self.request_wait_seconds = request_wait_seconds
        self._loader = loader
        self._clock = clock
        self._slots: OrderedDict[str, _Slot] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **seams: Any) -> ModelRegistry:
        return cls(
            ModelStore(settings.models_root),
            mmap=settings.model_mmap,
            refresh_seconds=settings.model_refresh_seconds,
            version_check=settings.model_version_check,
            budget=MemoryBudget(limit=settings.function_memory_bytes, baseline=process_rss()),
            allowlist=Allowlist(settings.pickle_allowlist_extra),
            **{"loader": functools.partial(load_model_file, verify=settings.model_verify), **seams},
        )

    # -- serving --

    def get(self, name: str, *, until_loaded: bool = False) -> LoadedModel:
        """The current version of `name`, loading it if needed. Waits for a load at most the request wait
        (or `until_loaded`: as long as it takes), then answers with the previous version or 503 + Retry-After."""
        validate_model_name(name)
        wait = None if until_loaded else self.request_wait_seconds
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
            started_now = slot.pending is None
            if started_now:
                slot.pending = self._start(name, version, slot, now)
            pending, previous = slot.pending, slot.loaded
        if previous is not None and wait is not None:
            wait = min(wait, SWAP_WAIT_SECONDS) if started_now else 0
        try:
            return pending.future.result(timeout=wait)
        except TimeoutError:
            if previous is not None:
                return previous
            elapsed = self._clock() - pending.started
            retry = min(MAX_RETRY_AFTER_SECONDS, max(1, math.ceil(pending.cost.bytes / ASSUMED_LOAD_RATE - elapsed)))
            raise ModelNotReadyError(
                f"model {name!r} version {pending.version!r} is loading ({mib(pending.cost.bytes)} MiB, "
                f"{elapsed:.0f} s so far); retry in {retry} s",
                retry_after_seconds=retry,
            ) from None

    def state(self, name: str) -> tuple[str, str | None]:
        """("ready" | "loading" | "not_loaded", version) without loading or reading anything."""
        with self._lock:
            return _state_of(self._slots.get(name))

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

    def _start(self, name: str, version: str, slot: _Slot, now: float) -> _Pending:
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
        if cost.legacy and manifest.format == "pickle":
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
        return _Pending(version, cost, now, future)

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

    @tracer.capture_method
    def _load(self, slot: _Slot, manifest: Manifest, path: Path, cost: LoadCost, future: Future[LoadedModel]) -> None:
        log = {"model": manifest.name, "version": manifest.version, "bytes": manifest.bytes, "mmap": self.mmap}
        logger.info("loading model", extra={**log, "expected_memory_bytes": cost.bytes, "protocol": cost.protocol})
        rss_before, started = process_rss(), time.perf_counter()
        try:
            model = self._loader(
                path,
                manifest.format,
                mmap=self.mmap,
                sha256=manifest.sha256,
                allowlist=self.allowlist,
                layout=manifest.details.get("layout"),  # a published layout's own digests (loading/formats.py)
            )
        except BaseException as exc:
            logger.exception(
                f"model {manifest.name!r} version {manifest.version!r} failed to load; re-stage it or roll back",
                extra=log,
            )
            error = exc
            if not isinstance(exc, BigPickleError):
                error = ModelLoadError(
                    f"model {manifest.name!r} version {manifest.version!r} could not be loaded: "
                    f"{type(exc).__name__}: {exc}"
                )
                error.__cause__ = exc
            with self._lock:
                slot.pending, slot.failed = None, (manifest.version, error)
            future.set_exception(error)
            return
        seconds = time.perf_counter() - started
        loaded = LoadedModel(manifest, model, seconds, cost, self.mmap, process_rss() - rss_before)
        metrics.add_metric(name="ModelLoadSeconds", unit=MetricUnit.Seconds, value=seconds)
        metrics.add_metric(name="ModelBytes", unit=MetricUnit.Bytes, value=manifest.bytes)
        logger.info("model loaded", extra={**log, "seconds": round(seconds, 3), "rss_growth_bytes": loaded.rss_growth})
        with self._lock:
            slot.loaded, slot.pending = loaded, None
        heap.freeze_survivors()
        future.set_result(loaded)


def _state_of(slot: _Slot | None) -> tuple[str, str | None]:
    if slot and slot.pending:
        return "loading", slot.pending.version
    if slot and slot.loaded:
        return "ready", slot.loaded.manifest.version
    return "not_loaded", None


def describe(loaded: LoadedModel) -> dict[str, Any]:
    """Metadata a client needs to call the model (GET /v1/models/{name})."""
    m, model = loaded.manifest, loaded.model
    feature_names = getattr(model, "feature_names_in_", None)
    classes = getattr(model, "classes_", None)
    return {
        "name": m.name,
        "version": m.version,
        "ready": True,
        "format": m.format,
        "bytes": m.bytes,
        "sha256": m.sha256,
        "staged_at": m.staged_at,
        "source": {"bucket": m.bucket, "key": m.key, "etag": m.etag, "version_id": m.version_id},
        "estimator": type(model).__name__,
        # Saved-with versions are read from the pickle at staging (manifest details), never by executing it.
        "sklearn_version": m.details.get("sklearn_version"),
        "runtime_sklearn_version": sklearn.__version__,
        "numpy_version": m.details.get("numpy_version"),
        "runtime_numpy_version": np.__version__,
        "n_features_in": getattr(model, "n_features_in_", None),
        "feature_names": None if feature_names is None else [str(n) for n in feature_names],
        "classes": None if classes is None else classes.tolist(),
        "supports_probabilities": hasattr(model, "predict_proba"),
        "load_seconds": round(loaded.load_seconds, 3),
        # What loading cost: an old pickle protocol shows here as ~2.3x the bytes.
        "load": {
            "pickle_protocol": loaded.cost.protocol,
            "mmap": loaded.mmap,
            "memory_bytes": loaded.cost.bytes,
            "mapped_bytes": loaded.cost.mapped_bytes,
            "rss_growth_bytes": loaded.rss_growth,
        },
    }

"""A published version -> a model in memory, held once per container. No HTTP.

`pickle.load` on a real file handle reads each large array with one `readinto` straight into the
array's buffer: 1.0x the model's bytes, where `pickle.loads(f.read())` costs 2.0x (DESIGN.md).
"""

from __future__ import annotations

import pickle
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sklearn

from bigpickle.errors import ModelLoadError
from bigpickle.observability import MetricUnit, logger, metrics
from bigpickle.store import Manifest, ModelStore


def load_model_file(path: Path, fmt: str) -> Any:
    """Build the model from its file; every read is bounded (pickle asks for frames and array sizes)."""
    if fmt == "joblib":
        import joblib  # imported lazily: only joblib-format models pay for it

        return joblib.load(path)
    with open(path, "rb") as f:
        return pickle.load(f)


@dataclass(frozen=True)
class LoadedModel:
    manifest: Manifest
    model: Any
    load_seconds: float


class ModelRegistry:
    """The models this container has loaded, by name."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedModel:
        loaded = self._models.get(name)
        if loaded is not None:
            return loaded
        with self._lock:
            loaded = self._models.get(name)
            if loaded is None:
                loaded = self._load(self.store.read_manifest(name))
                self._models[name] = loaded
            return loaded

    def is_loaded(self, name: str) -> bool:
        return name in self._models

    def _load(self, manifest: Manifest) -> LoadedModel:
        path = self.store.model_path(manifest)
        log = {"model": manifest.name, "version": manifest.version, "bytes": manifest.bytes, "path": str(path)}
        logger.info("loading model", extra=log)
        started = time.perf_counter()
        try:
            model = load_model_file(path, manifest.format)
        except Exception as exc:
            logger.exception("model failed to load; re-stage it or roll back", extra=log)
            raise ModelLoadError(
                f"model {manifest.name!r} version {manifest.version!r} could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        seconds = time.perf_counter() - started
        metrics.add_metric(name="ModelLoadSeconds", unit=MetricUnit.Seconds, value=seconds)
        metrics.add_metric(name="ModelBytes", unit=MetricUnit.Bytes, value=manifest.bytes)
        logger.info("model loaded", extra={**log, "seconds": round(seconds, 3)})
        return LoadedModel(manifest=manifest, model=model, load_seconds=seconds)


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
        "n_features_in": getattr(model, "n_features_in_", None),
        "feature_names": None if feature_names is None else [str(n) for n in feature_names],
        "classes": None if classes is None else classes.tolist(),
        "supports_probabilities": hasattr(model, "predict_proba"),
        "load_seconds": round(loaded.load_seconds, 3),
    }

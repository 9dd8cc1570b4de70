"""The HTTP answer for one model (GET /v1/models/{name}): what a client needs to call it."""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn

from bigpickle.loading import LoadedModel
from bigpickle.loading.compat import saved_numpy_major


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
        "numpy_major": saved_numpy_major(m),
        "runtime_numpy_version": np.__version__,
        "n_features_in": getattr(model, "n_features_in_", None),
        "feature_names": None if feature_names is None else [str(n) for n in feature_names],
        "classes": _labels(classes),
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


def _labels(classes: Any) -> Any:
    """`classes_` as JSON: a multi-output classifier (MultiOutputClassifier, ClassifierChain) has a list of class
    arrays, one per output."""
    if classes is None:
        return None
    if isinstance(classes, list):
        return [np.asarray(labels).tolist() for labels in classes]
    return np.asarray(classes).tolist()

"""Version safety: a model saved under other scikit-learn/numpy versions may unpickle into wrong answers.

The saved-with versions come from the manifest (read from the estimator state at staging, without
executing the pickle). scikit-learn is compared exactly (it warns on any difference); numpy by major
version, the line its pickles' module paths change on (numpy.core -> numpy._core).
"""

from __future__ import annotations

import numpy as np
import sklearn

from bigpickle.errors import ModelVersionMismatchError
from bigpickle.observability import logger
from bigpickle.store import Manifest

WARN = "warn"


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def saved_numpy_major(manifest: Manifest) -> str | None:
    """The numpy line ("1.x", "2.x") staging read from the pickle; older manifests named it numpy_version."""
    return manifest.details.get("numpy_major", manifest.details.get("numpy_version"))


def version_mismatches(manifest: Manifest) -> list[str]:
    """'scikit-learn 1.5.2 (saved) vs 1.9.1 (here)'-style lines, empty when the versions agree or are unknown."""
    found = []
    saved_sklearn = manifest.details.get("sklearn_version")
    if saved_sklearn and saved_sklearn != sklearn.__version__:
        found.append(f"scikit-learn {saved_sklearn} (saved) vs {sklearn.__version__} (here)")
    saved_numpy = saved_numpy_major(manifest)
    if saved_numpy and _major(saved_numpy) != _major(np.__version__):
        found.append(f"numpy {saved_numpy} (saved) vs {np.__version__} (here)")
    return found


def check_versions(manifest: Manifest, mode: str) -> None:
    """Refuse (503) a model saved under other library versions, or only log it when `mode` is "warn"."""
    mismatches = version_mismatches(manifest)
    if not mismatches:
        return
    message = f"model {manifest.name!r} version {manifest.version!r} was saved with {'; '.join(mismatches)}"
    if mode == WARN:
        logger.warning(f"{message}; loading anyway (MODEL_VERSION_CHECK=warn)")
        return
    raise ModelVersionMismatchError(
        f"{message}: re-save it under this function's versions, or set MODEL_VERSION_CHECK=warn"
    )

"""Re-point a model's `current` to another published version (what `bigpickle rollback` does)."""

from __future__ import annotations

from bigpickle.errors import ModelNotFoundError
from bigpickle.store import ModelStore


def rollback(store: ModelStore, name: str, version: str | None = None) -> tuple[str | None, str]:
    """Serve `version`, or the version published before the current one; returns (previous, now current).

    Version names start with the object's upload time, so their sorted order is publication order.
    Warm containers pick the change up within MODEL_REFRESH_SECONDS.
    """
    current = store.current_version(name)
    if version is None:
        versions = store.list_versions(name)
        older = [v for v in versions if current is None or v < current]
        if not older:
            raise ModelNotFoundError(f"model {name!r} has no version older than {current!r} to roll back to")
        version = older[-1]
    store.set_current(name, version)
    return current, version

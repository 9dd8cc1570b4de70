"""Re-point a model's `current` to another published version (what `bigpickle rollback` does)."""

from __future__ import annotations

from bigpickle.store import ModelStore


def rollback(store: ModelStore, name: str, version: str | None = None) -> tuple[str | None, str]:
    """Serve `version`, or the upload published before the current one; returns (previous, now current).

    Runs under the model's lock (retention cannot remove the target meanwhile) and holds until a newer
    upload arrives: a re-delivered event of an already-published version does not move `current` back.
    Warm containers pick the change up within MODEL_REFRESH_SECONDS.
    """
    return store.roll_back(name, version)

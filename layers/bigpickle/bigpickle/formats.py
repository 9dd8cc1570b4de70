"""The model file formats staging and loading share: their names and the file extensions that imply them.

How each format's bytes become an object is `bigpickle.loading.formats`; the bigpickle layout itself is
`bigpickle.safety.layout`. This module imports nothing of the package, so every layer may name a format.
"""

from __future__ import annotations

from pathlib import Path

PICKLE = "pickle"
JOBLIB = "joblib"
BIGPICKLE = "bigpickle"

MODEL_FORMATS = {".pkl": PICKLE, ".pickle": PICKLE, ".joblib": JOBLIB, ".bpk": BIGPICKLE}
KNOWN_FORMATS = frozenset(MODEL_FORMATS.values())


def extension_of(fmt: str) -> str:
    """The extension to give a file of `fmt` (the first one MODEL_FORMATS lists for it)."""
    return next(suffix for suffix, named in MODEL_FORMATS.items() if named == fmt)


def model_format(filename: str) -> str | None:
    """The serialisation format a file name implies, or None when it is not a model file."""
    return MODEL_FORMATS.get(Path(filename).suffix.lower())

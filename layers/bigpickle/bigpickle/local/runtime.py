"""Load a handler by file path, as the Lambda runtime does (with the layer already on sys.path)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]


def load_handler(path: Path | str, name: str = "lambda_handler") -> Handler:
    """Import `path` as a fresh module (its import-time code runs, like a cold start) and return `name`."""
    path = Path(path).resolve()
    module_name = f"bigpickle_handler_{path.parent.name}_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a handler from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def repo_root() -> Path:
    """The source checkout this library lives in (layers/bigpickle/bigpickle/local -> repo)."""
    return Path(__file__).resolve().parents[4]


def stage_handler() -> Handler:
    return load_handler(repo_root() / "functions" / "stage" / "app.py")


def predict_handler() -> Handler:
    return load_handler(repo_root() / "functions" / "predict" / "app.py")

"""The sample events in `events/`: the same files feed tests, the demo and `sam local invoke -e`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def events_dir() -> Path:
    """`BIGPICKLE_EVENTS_DIR`, else the repository's `events/` (found from this source checkout)."""
    configured = os.environ.get("BIGPICKLE_EVENTS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[4] / "events"


def load_event(name: str) -> dict[str, Any]:
    """Load `events/<name>.json` (the `.json` suffix is optional)."""
    filename = name if name.endswith(".json") else f"{name}.json"
    return json.loads((events_dir() / filename).read_text())

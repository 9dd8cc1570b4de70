"""`bigpickle inspect FILE`: what a model file would import and whether bigpickle would load it, found by
scanning its opcodes (nothing in it is executed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bigpickle.formats import BIGPICKLE, PICKLE, model_format
from bigpickle.safety.allowlist import Allowlist
from bigpickle.safety.hashing import hash_file
from bigpickle.safety.scanner import PickleScanner
from bigpickle.safety.uploads import check_bigpickle


def inspect_file(path: Path, allowlist: Allowlist | None = None) -> dict[str, Any]:
    fmt = model_format(path.name) or PICKLE
    if fmt == BIGPICKLE:  # its stream lies where the index says: the layout is checked, the stream scanned
        sha256 = hash_file(path)
        report, _ = check_bigpickle(path, allowlist or Allowlist())
        report.bytes = path.stat().st_size
    else:
        scanner = PickleScanner(fmt, allowlist)
        sha256 = hash_file(path, [scanner])
        report = scanner.finish()
    return {
        "file": str(path),
        "format": fmt,
        "bytes": report.bytes,
        "sha256": sha256,
        **report.details(),
        "verdict": "safe to load" if report.safe else "refused",
        "reasons": report.reasons(),
    }


def render(facts: dict[str, Any]) -> str:
    lines = [f"{key:16} {facts[key]}" for key in ("file", "format", "bytes", "sha256", "pickle_protocol")]
    lines += [f"{'sklearn_version':16} {facts['sklearn_version']}", f"{'numpy_major':16} {facts['numpy_major']}"]
    lines.append(f"globals ({len(facts['globals'])}):")
    lines += [f"  {name}" for name in facts["globals"]]
    lines.append(f"{'verdict':16} {facts['verdict']}")
    lines += [f"  - {reason}" for reason in facts["reasons"]]
    return "\n".join(lines)

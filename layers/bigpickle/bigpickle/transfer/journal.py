"""The resume journal: which parts of the temp file are durably written, for which object version, and
which byte ranges of them a holding sink keeps in its own file instead (`held`).

It lives beside the temp file and is replaced atomically (write, fsync, rename), always AFTER the data
file was fsync'd, so it never claims a part a crash could have lost. A journal for another object
version or part size is ignored and the copy starts over.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bigpickle.durable import fsync_path, write_file_atomically

JOURNAL_SUFFIX = ".journal"


def _ranges(indices: Iterable[int]) -> list[list[int]]:
    """[0, 1, 2, 5, 6] -> [[0, 2], [5, 6]]: a 1 TB copy of 8 MiB parts stays a small file."""
    ranges: list[list[int]] = []
    for i in sorted(indices):
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ranges


class Journal:
    def __init__(self, data_file: Path, identity: dict[str, Any]) -> None:
        self.path = data_file.with_name(data_file.name + JOURNAL_SUFFIX)
        self.identity = identity
        self.held: list[list[int]] = []  # what `load` found: [offset in the object, length, offset in the file]

    def load(self) -> set[int] | None:
        """The parts a previous run wrote for this same identity (and its `held` ranges), or None when there
        is nothing to resume."""
        try:
            data = json.loads(self.path.read_text())
            if data.get("identity") != self.identity:
                return None
            parts = {i for start, end in data["parts"] for i in range(start, end + 1)}
            held = data.get("held", [])
            if not all(isinstance(r, list) and len(r) == 3 and all(type(v) is int for v in r) for r in held):
                return None
        except (FileNotFoundError, ValueError, TypeError, AttributeError):
            return None
        self.held = held
        return parts

    def save(self, parts: Iterable[int], held: list[list[int]] | None = None) -> None:
        body: dict[str, Any] = {"identity": self.identity, "parts": _ranges(parts)}
        if held:
            body["held"] = held
        write_file_atomically(self.path, json.dumps(body).encode())

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
            fsync_path(self.path.parent)

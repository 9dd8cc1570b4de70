"""What a load will cost in memory, what the function has, and the check between them.

Prices are measured, not guessed: `pickle.load` on a file costs 1.0x the model's bytes for protocol 4/5,
older protocols cost LEGACY_PROTOCOL_FACTOR times, and a mapped bigpickle load costs only what its stream
builds and the buffers an estimator copies out of the mapping (scikit-learn's tree nodes), because mapped
pages are file-backed page cache the kernel can drop: they never OOM the function. Where staging's scanner
priced the stream (`details["allocation_bytes"]`, what a load allocates, counted from the stream's own
contents), that figure is used instead of the file's size. Each figure, with its command, date and machine:
benchmarks/results/README.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bigpickle.errors import InsufficientMemoryError
from bigpickle.formats import BIGPICKLE, PICKLE
from bigpickle.loading.formats import PICKLE_PROTOCOL, pickle_protocol, read_layout
from bigpickle.store import Manifest
from bigpickle.units import MiB

LEGACY_PROTOCOL_FACTOR = 2.3  # protocol 0-3: memo copies and no out-of-band frames (benchmarks/results/README.md)


@dataclass(frozen=True)
class LoadCost:
    """Anonymous memory a loaded model holds (the peak while loading is the same, within 5%)."""

    bytes: int
    protocol: int | None  # the pickle protocol, None for 0-1 or when unknowable (compressed joblib)
    mapped_bytes: int  # left in the file mapping: page cache, not counted

    @property
    def legacy(self) -> bool:
        return self.protocol is None or self.protocol < 4


def estimate_load(manifest: Manifest, path: Path, *, mmap: bool) -> LoadCost:
    """Price a load before doing it; reads at most the file's first two bytes or its index."""
    allocation = manifest.details.get("allocation_bytes")
    if manifest.format == BIGPICKLE:
        layout = read_layout(path)
        # the upload's allocation counted its array payloads, which now lie in the buffers
        stream = max(0, allocation - layout.buffer_bytes) if isinstance(allocation, int) else layout.pickle_bytes
        mapped = layout.mapped_bytes if mmap else 0
        return LoadCost(stream + layout.buffer_bytes - mapped, PICKLE_PROTOCOL, mapped)
    protocol = manifest.details.get("pickle_protocol")
    if protocol is None:
        protocol = pickle_protocol(path)
    if manifest.format == PICKLE and (protocol is None or protocol < 4):
        return LoadCost(int(manifest.bytes * LEGACY_PROTOCOL_FACTOR), protocol, 0)
    # joblib with mmap_mode="r" may map some arrays, but which ones is not visible without parsing the
    # file: price it whole (the bigpickle index exists to make this exact).
    return LoadCost(max(manifest.bytes, allocation if isinstance(allocation, int) else 0), protocol, 0)


def process_rss() -> int:
    """Resident memory of this process now (Linux: /proc/self/statm, one small read)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mib(n: int) -> int:
    return round(n / MiB)


@dataclass(frozen=True)
class MemoryBudget:
    """The function's memory (None outside Lambda: no limit) and what the process held before any model."""

    limit: int | None
    baseline: int

    def fits(self, need: int, held: int) -> bool:
        return self.limit is None or self.baseline + held + need <= self.limit

    def refuse(self, name: str, version: str, need: int, held: int) -> InsufficientMemoryError:
        assert self.limit is not None
        return InsufficientMemoryError(
            f"model {name!r} version {version!r} needs about {mib(need)} MiB to load, with "
            f"{mib(self.baseline + held)} MiB already in use; this function has {mib(self.limit)} MiB "
            "(AWS_LAMBDA_FUNCTION_MEMORY_SIZE). Give the function more memory, or keep MODEL_MMAP=on so that "
            "array buffers are mapped, not read"
        )

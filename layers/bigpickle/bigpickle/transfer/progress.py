"""Progress of one copy: bytes, percent, throughput, ETA, reported at regular steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from bigpickle.units import MiB


@dataclass(frozen=True)
class Progress:
    done: int  # bytes fed to the sinks so far, including bytes resumed from an earlier run
    total: int
    resumed: int  # of those, bytes that were already on disk when this run started
    elapsed: float  # seconds this run

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else 100.0 * self.done / self.total

    @property
    def mib_per_second(self) -> float:
        return (self.done - self.resumed) / MiB / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        rate = self.mib_per_second * MiB
        return (self.total - self.done) / rate if rate > 0 else None

    def as_log(self) -> dict[str, float | int | None]:
        eta = self.eta_seconds
        return {
            "bytes": self.done,
            "total_bytes": self.total,
            "percent": round(self.percent, 1),
            "mib_per_s": round(self.mib_per_second, 1),
            "eta_s": None if eta is None else round(eta, 1),
        }


ProgressCallback = Callable[[Progress], None]


class ProgressTracker:
    """Calls `report` every `every_percent` of the object or `every_seconds`, whichever comes first, and
    once at the end; `tick` is called for every part, so reports cost nothing between steps."""

    def __init__(
        self,
        total: int,
        report: ProgressCallback | None,
        *,
        every_percent: float = 10.0,
        every_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.done = 0
        self.resumed = 0
        self._report = report
        self._step = max(1, int(total * every_percent / 100))
        self._every_seconds = every_seconds
        self._clock = clock
        self._started = clock()
        self._next_bytes = self._step
        self._next_time = self._started + every_seconds

    def tick(self, nbytes: int, *, resumed: bool = False) -> None:
        self.done += nbytes
        if resumed:
            self.resumed += nbytes
        now = self._clock()
        if self._report and (self.done >= self._next_bytes or now >= self._next_time or self.done == self.total):
            self._report(self.snapshot(now))
            self._next_bytes = (self.done // self._step + 1) * self._step
            self._next_time = now + self._every_seconds

    def snapshot(self, now: float | None = None) -> Progress:
        return Progress(self.done, self.total, self.resumed, (now or self._clock()) - self._started)


class ProgressBar:
    """A one-line bar on a terminal stream: `[#####.....]  52.0%  1.2 GiB/2.3 GiB  410.3 MiB/s  ETA 3s`."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width

    def __call__(self, progress: Progress) -> None:
        filled = int(self.width * progress.percent / 100)
        eta = progress.eta_seconds
        line = (
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {progress.percent:5.1f}%  "
            f"{progress.done / MiB:,.0f}/{progress.total / MiB:,.0f} MiB  {progress.mib_per_second:,.1f} MiB/s  "
            f"ETA {'?' if eta is None else f'{eta:.0f}s'}"
        )
        self.stream.write(line + ("\n" if progress.done >= progress.total else ""))
        self.stream.flush()

"""How a copy is shaped: request (part) size, parallelism, buffer size, and the memory budget they fit in.

A part is one ranged GET and the unit the resume journal records; a buffer is what one worker holds in
memory at a time. Parts larger than a buffer stream through several buffers, so a copy makes few
requests (each costs the client and the server CPU) while its memory stays a handful of buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from botocore.config import Config

from bigpickle.units import MiB

# Memory a copy needs besides its part buffers: the re-feed buffer, journal, progress and the growth of
# the interpreter's heaps, measured with benchmarks/stage_bench.py.
FIXED_OVERHEAD = 16 * MiB
# Per worker thread beyond its part buffer: urllib3 copies each socket read into a temporary of READ_SIZE,
# plus the socket's and the response's own buffers.
PER_WORKER_OVERHEAD = 2 * MiB
READ_SIZE = 1 * MiB  # one read from the socket; never "everything"
BUFFER_SIZE = 8 * MiB
MIN_BUFFERS = 6


@dataclass(frozen=True)
class TransferConfig:
    """`workers` parallel ranged GETs of `part_size` bytes through `buffers` buffers of `buffer_bytes`,
    within `memory_budget` bytes of RSS."""

    part_size: int = 32 * MiB
    concurrency: int = 4
    memory_budget: int = 128 * MiB
    checkpoint_interval: float = 5.0  # seconds between journal checkpoints (work lost to a SIGKILL)
    read_size: int = READ_SIZE
    buffer_size: int = BUFFER_SIZE  # the largest buffer; a smaller part needs only its own size
    # Write around the page cache where the file system allows it (O_DIRECT); see osutils.open_direct.
    direct_io: bool = True

    def __post_init__(self) -> None:
        if self.part_size < self.read_size:
            raise ValueError(f"part size must be at least {self.read_size // MiB} MiB")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.workers < 1:
            raise ValueError(
                f"a memory budget of {self.memory_budget // MiB} MiB cannot hold one {self.buffer_bytes // MiB} "
                f"MiB buffer (it needs at least {(FIXED_OVERHEAD + PER_WORKER_OVERHEAD + self.buffer_bytes) // MiB} "
                "MiB)"
            )

    @property
    def buffer_bytes(self) -> int:
        return min(self.part_size, self.buffer_size)

    @property
    def workers(self) -> int:
        """Parallel GETs: the setting, lowered until every worker's buffer and overhead fit the budget."""
        per_worker = self.buffer_bytes + PER_WORKER_OVERHEAD
        return min(self.concurrency, (self.memory_budget - FIXED_OVERHEAD) // per_worker)

    @property
    def buffers(self) -> int:
        """One buffer per worker plus half as many spares, and at least MIN_BUFFERS, as far as the budget
        allows: spares let workers run ahead while an earlier slice is slow or being hashed, which is what
        keeps a few streams of large parts busy (measured with benchmarks/stage_bench.py)."""
        room = (self.memory_budget - FIXED_OVERHEAD - self.workers * PER_WORKER_OVERHEAD) // self.buffer_bytes
        return max(self.workers, min(room, max(MIN_BUFFERS, self.workers + self.workers // 2)))

    def buffers_beside(self, held_bytes: int) -> int:
        """`buffers`, less as many as a holding sink's own write buffers take (staging's rewriter): the copy
        holds no more memory with one than without (at least one buffer per worker)."""
        return max(self.workers, self.buffers - math.ceil(held_bytes / self.buffer_bytes))

    @property
    def peak_buffer_bytes(self) -> int:
        return self.buffers * self.buffer_bytes

    def client_config(self) -> Config:
        """A botocore config for the S3 client a copy uses: one pooled connection per worker, and
        botocore's own retries for what it can retry (throttling, 5xx and connection errors before a
        response); errors in the middle of a body are retried per part by the engine."""
        return Config(
            max_pool_connections=max(10, self.workers),
            retries={"mode": "standard", "max_attempts": 8},
            connect_timeout=10,
            read_timeout=30,
            tcp_keepalive=True,
        )

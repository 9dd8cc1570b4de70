"""How a copy is shaped: part size, parallelism, and the memory budget both are derived from."""

from __future__ import annotations

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


@dataclass(frozen=True)
class TransferConfig:
    """`workers` parallel ranged GETs of `part_size` bytes, within `memory_budget` bytes of RSS."""

    part_size: int = 8 * MiB
    concurrency: int = 4
    memory_budget: int = 128 * MiB
    checkpoint_interval: float = 5.0  # seconds between journal checkpoints (work lost to a SIGKILL)
    read_size: int = READ_SIZE

    def __post_init__(self) -> None:
        if self.part_size < self.read_size:
            raise ValueError(f"part size must be at least {self.read_size // MiB} MiB")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.workers < 1:
            raise ValueError(
                f"a memory budget of {self.memory_budget // MiB} MiB cannot hold one {self.part_size // MiB} MiB "
                f"part (it needs at least {(FIXED_OVERHEAD + PER_WORKER_OVERHEAD + self.part_size) // MiB} MiB)"
            )

    @property
    def workers(self) -> int:
        """Parallel GETs: the setting, lowered until every worker's buffer and overhead fit the budget."""
        per_worker = self.part_size + PER_WORKER_OVERHEAD
        return min(self.concurrency, (self.memory_budget - FIXED_OVERHEAD) // per_worker)

    @property
    def buffers(self) -> int:
        """Part buffers: one per worker, plus half as many spares (so workers run ahead while an earlier part
        is slow or being hashed), as far as the budget allows. Memory follows concurrency; the budget caps it."""
        room = (self.memory_budget - FIXED_OVERHEAD - self.workers * PER_WORKER_OVERHEAD) // self.part_size
        return max(self.workers, min(room, self.workers + max(1, self.workers // 2)))

    @property
    def peak_buffer_bytes(self) -> int:
        return self.buffers * self.part_size

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

"""S3 object -> local file: parallel ranged GETs written at their offsets, consumed in order by sinks.

    workers (threads)                                   feeder (the calling thread)
    take a free buffer -> take the next part index      for each part, in order:
    GET the range into the buffer (readinto, retries)     wait until it is written (or re-read it
    pwrite it at its offset -> hand it to the feeder      from the file when a previous run wrote it),
                                                          feed it to every sink, return the buffer

Memory is the fixed pool of part buffers (`TransferConfig.buffers`): a worker takes a buffer before it
takes a part, so the earliest unfed part always holds one and the pool cannot deadlock, and a slow part
stalls the others only once every spare buffer waits behind it. The file is preallocated, so parts land
anywhere; the journal records which landed durably, so a killed run resumes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigpickle.checksums import Sink
from bigpickle.errors import IntegrityError, StorageFullError, TransferError
from bigpickle.observability import logger
from bigpickle.transfer.config import TransferConfig
from bigpickle.transfer.journal import Journal
from bigpickle.transfer.objects import ObjectInfo, Part, open_part, split_parts
from bigpickle.transfer.osutils import OSUtils, storage_errors
from bigpickle.transfer.progress import ProgressCallback, ProgressTracker
from bigpickle.transfer.retry import RetryPolicy, ShortPartError, is_transient


@dataclass(frozen=True)
class DownloadResult:
    complete: bool  # False when `should_stop` asked to stop: the journal holds what was written
    fetched_bytes: int  # downloaded by this run
    resumed_bytes: int  # already on disk from an earlier run (re-read for the sinks, not downloaded)
    seconds: float


def download(
    client: Any,
    obj: ObjectInfo,
    dest: Path,
    *,
    config: TransferConfig | None = None,
    sinks: Sequence[Sink] = (),
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    osutils: OSUtils | None = None,
    retry: RetryPolicy | None = None,
) -> DownloadResult:
    """Copy `obj` into `dest`, feeding every byte IN ORDER to `sinks`; resume from `dest`'s journal when it
    belongs to this object version. On return with `complete=True` the file is fsync'd and the journal gone."""
    copy = _Copy(
        client, obj, dest, config or TransferConfig(), sinks, progress, should_stop, osutils or OSUtils(), retry
    )
    return copy.run()


class _Copy:
    def __init__(
        self,
        client: Any,
        obj: ObjectInfo,
        dest: Path,
        config: TransferConfig,
        sinks: Sequence[Sink],
        progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
        osutils: OSUtils,
        retry: RetryPolicy | None,
    ) -> None:
        self.client = client
        self.obj = obj
        self.dest = dest
        self.config = config
        self.sinks = sinks
        self.should_stop = should_stop or (lambda: False)
        self.os = osutils
        self.retry = retry or RetryPolicy()
        self.parts = split_parts(obj.size, config.part_size)
        self.journal = Journal(dest, {**obj.identity(), "part_size": config.part_size})
        self.tracker = ProgressTracker(obj.size, progress)
        self.fd = -1
        self.fetched = 0
        # Shared between workers and the feeder, guarded by `cond`.
        self.cond = threading.Condition()
        self.written: set[int] = set()
        self.ready: dict[int, bytearray] = {}
        self.failure: BaseException | None = None
        self.stopping = threading.Event()
        self.next_part = 0
        self.todo: list[Part] = []
        self.resumed_parts: set[int] = set()
        # None is a buffer not allocated yet: a small object never allocates the whole pool.
        self.pool: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()

    def run(self) -> DownloadResult:
        started = time.monotonic()
        resumed = self.resumed_parts = self._open()
        try:
            self.todo = [p for p in self.parts if p.index not in resumed]
            for _ in range(min(self.config.buffers, len(self.todo))):
                self.pool.put(None)
            workers = [
                threading.Thread(target=self._worker, name=f"bigpickle-part-{i}", daemon=True)
                for i in range(min(self.config.workers, len(self.todo)))
            ]
            for worker in workers:
                worker.start()
            try:
                complete = self._feed()
            finally:
                self.stopping.set()
                with self.cond:
                    self.cond.notify_all()
                for _ in workers:
                    self.pool.put(None)  # wake workers waiting for a buffer
                for worker in workers:
                    worker.join()
            if self.failure is not None:
                self._raise(self.failure)
            if not complete:
                self._checkpoint()
                return DownloadResult(False, self.fetched, self.tracker.resumed, time.monotonic() - started)
            self._finish()
        finally:
            self.os.close(self.fd)
        return DownloadResult(True, self.fetched, self.tracker.resumed, time.monotonic() - started)

    # -- setup and durability --

    def _open(self) -> set[int]:
        """Open the temp file; the parts a previous run left durably written (empty when starting over)."""
        resumed = self.journal.load() if self.dest.exists() else None
        if resumed is not None:
            self.fd = self.os.open_rw(self.dest, truncate=False)
            if self.os.file_size(self.fd) == self.obj.size:
                logger.info(
                    "resuming a copy",
                    extra={"parts_written": len(resumed), "parts": len(self.parts), "file": str(self.dest)},
                )
                return resumed
            self.os.close(self.fd)
        # Forget the old journal before touching the data, so no journal ever describes other bytes.
        self.journal.remove()
        with storage_errors(self.dest, self.obj.size):
            free = self.os.free_bytes(self.dest.parent)
            if free < self.obj.size:
                raise StorageFullError(f"cannot write {self.dest} ({self.obj.size} bytes): only {free} bytes free")
            self.fd = self.os.open_rw(self.dest, truncate=True)
            try:
                self.os.allocate(self.fd, self.obj.size)
            except BaseException:
                self.os.close(self.fd)
                raise
        self.journal.save(())
        return set()

    def _checkpoint(self) -> None:
        """fsync the data, THEN record what it holds: the journal never claims a part a crash could lose."""
        with self.cond:
            written = set(self.written)
        self.os.fsync(self.fd)
        self.journal.save(written | self.resumed_parts)

    def _finish(self) -> None:
        with storage_errors(self.dest, self.obj.size):
            self.os.fsync(self.fd)
        actual = self.os.file_size(self.fd)
        if actual != self.obj.size:
            raise IntegrityError(f"{self.dest} holds {actual} bytes, S3 says the object has {self.obj.size}")
        self.journal.remove()

    # -- the feeder: every byte, in order, to the sinks --

    def _feed(self) -> bool:
        refeed = memoryview(bytearray(min(self.config.read_size, max(1, self.obj.size))))
        next_checkpoint = time.monotonic() + self.config.checkpoint_interval
        for part in self.parts:
            if part.index in self.resumed_parts:
                self._refeed(part, refeed)
                continue
            buffer = self._wait_for(part)
            if buffer is None:
                return False
            view = memoryview(buffer)[: part.size]
            for sink in self.sinks:
                sink.update(view)
            view.release()
            self.pool.put(buffer)
            self.tracker.tick(part.size)
            if time.monotonic() >= next_checkpoint:
                self._checkpoint()
                next_checkpoint = time.monotonic() + self.config.checkpoint_interval
        return True

    def _wait_for(self, part: Part) -> bytearray | None:
        """The written buffer of `part`, or None when the copy must stop (failure or `should_stop`)."""
        with self.cond:
            while True:
                if self.failure is not None:
                    return None
                if self.should_stop():
                    self.stopping.set()
                    self.cond.notify_all()
                    return None
                if part.index in self.ready:
                    return self.ready.pop(part.index)
                self.cond.wait(timeout=0.5)

    def _refeed(self, part: Part, buffer: memoryview) -> None:
        """Feed the sinks a part an earlier run already wrote, read back from the file."""
        offset = part.start
        while offset <= part.end:
            chunk = buffer[: min(len(buffer), part.end + 1 - offset)]
            got = self.os.preadinto(self.fd, chunk, offset)
            if got <= 0:
                raise IntegrityError(f"{self.dest} ended at byte {offset} while re-reading a resumed part")
            for sink in self.sinks:
                sink.update(chunk[:got])
            offset += got
        self.tracker.tick(part.size, resumed=True)

    # -- workers: fetch, write, hand over --

    def _worker(self) -> None:
        while not self.stopping.is_set():
            buffer = self.pool.get()
            part = self._take_part()
            if part is None or self.stopping.is_set():
                self.pool.put(buffer)
                return
            if buffer is None:
                buffer = bytearray(self.config.part_size)
            try:
                view = memoryview(buffer)[: part.size]
                self._fetch(part, view)
                with storage_errors(self.dest, self.obj.size):
                    self.os.pwrite(self.fd, view, part.start)
                view.release()
            except BaseException as error:
                self.pool.put(buffer)
                with self.cond:
                    self.failure = self.failure or error
                    self.stopping.set()
                    self.cond.notify_all()
                return
            with self.cond:
                self.written.add(part.index)
                self.ready[part.index] = buffer
                self.fetched += part.size
                self.cond.notify_all()

    def _take_part(self) -> Part | None:
        with self.cond:
            if self.next_part >= len(self.todo):
                return None
            part = self.todo[self.next_part]
            self.next_part += 1
            return part

    def _fetch(self, part: Part, view: memoryview) -> None:
        for attempt in range(self.retry.attempts):
            try:
                body = open_part(self.client, self.obj, part)
                try:
                    self._read_exactly(body, view, part)
                except BaseException:
                    body.close()  # drop the connection: it is mid-body and cannot be reused
                    raise
                return
            except Exception as error:
                if not is_transient(error) or attempt + 1 == self.retry.attempts or self.stopping.is_set():
                    raise
                logger.warning(
                    "part failed; retrying",
                    extra={
                        "part": part.index,
                        "range": f"{part.start}-{part.end}",
                        "attempt": attempt + 1,
                        "error": f"{type(error).__name__}: {error}",
                    },
                )
                self.retry.backoff(attempt)

    def _read_exactly(self, body: Any, view: memoryview, part: Part) -> None:
        step = self.config.read_size
        received = 0
        while received < part.size:
            got = body.readinto(view[received : received + step])
            if not got:
                raise ShortPartError(f"part {part.start}-{part.end} ended after {received} of {part.size} bytes")
            received += got

    def _raise(self, error: BaseException) -> None:
        """Transient faults that outlasted the retries keep what was written (journal) and raise a
        TransferError; integrity and storage failures raise as they are (the caller discards the copy)."""
        if isinstance(error, Exception) and is_transient(error):
            self._checkpoint()
            written = len(self.written) + len(self.resumed_parts)
            raise TransferError(
                f"copying s3://{self.obj.bucket}/{self.obj.key} failed after {self.retry.attempts} attempts of one "
                f"part: {type(error).__name__}: {error}; {written} of {len(self.parts)} parts are written "
                f"and the next run resumes from them"
            ) from error
        raise error

"""S3 object -> local file: parallel ranged GETs written at their offsets, consumed in order by sinks.

    workers (threads)                                   feeder (the calling thread)
    take the next part; for each buffer-sized slice:    for each slice, in order:
      take a free buffer, read the slice into it          wait until it is read (or re-read a part
      (readinto; a failure reopens the range here),       a previous run wrote from the file),
      write it at its offset (direct I/O: on the          feed it to every sink, wait until it is
      write pool, while the next slice downloads)         written, return the buffer [with a holder:
      [not with a holder], hand it to the feeder          the write pool writes the bytes the holder
                                                          did not hold, then returns the buffer]
    checkpoint thread, every few seconds: fsync, then record the parts whose every slice is written
      [with a holder: fed, and the held ranges; its file is fsync'd too]

A part is one GET (and one journal entry); it streams through buffers one slice at a time, so parts can
be much larger than the memory a copy holds. Memory is the fixed pool of buffers (`TransferConfig.buffers`).
The pool cannot deadlock: a worker takes the LAST free buffer only for the slice the feeder waits for, so
slices further ahead never starve it, and a slow slice stalls the others only once every spare buffer
waits behind it. The file is preallocated, so slices land anywhere; the journal records which parts landed
durably, so a killed run resumes. Slices are written around the page cache (O_DIRECT) where the file system
allows it: buffers are page-aligned anonymous maps and slices start at MiB offsets, as direct I/O requires.

A holder is one of the sinks that writes some of the bytes it is fed verbatim to a file of its own (staging's
rewriter: array payloads, out of band in the published layout). Then the workers write nothing; once a slice
is fed, the write pool writes only the bytes the holder did not hold, so no byte is written twice. A checkpoint
takes, on the feeder's thread, the parts fed so far (always a prefix) and the holder's ranges up to them
(after `holder.flush()`), then fsyncs both files and records both; a resumed run re-reads held ranges from
the holder's file, which the holder's new run overwrites with the same bytes.
"""

from __future__ import annotations

import bisect
import mmap
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from bigpickle.checksums import Sink
from bigpickle.errors import IntegrityError, StorageFullError, TransferError
from bigpickle.observability import logger
from bigpickle.osutils import FileWriter, OSUtils, storage_errors
from bigpickle.transfer.config import TransferConfig
from bigpickle.transfer.journal import Journal
from bigpickle.transfer.objects import ObjectInfo, Part, open_part, split_parts
from bigpickle.transfer.progress import ProgressCallback, ProgressTracker
from bigpickle.transfer.retry import RetryPolicy, ShortPartError, is_transient


@dataclass(frozen=True)
class DownloadResult:
    complete: bool  # False when `should_stop` asked to stop: the journal holds what was written
    fetched_bytes: int  # downloaded by this run
    resumed_bytes: int  # already on disk from an earlier run (re-read for the sinks, not downloaded)
    seconds: float


class HoldingSink(Protocol):
    """A sink that writes some of the bytes it is fed, verbatim, to `target` (see the module's docstring)."""

    target: Path
    held: list[list[int]]  # [offset in the object, length, offset in `target`] of every byte held, in order
    buffer_bytes: int  # what it keeps in memory for its own writes: the copy's pool gives way to it

    def update(self, data: bytes | memoryview) -> None: ...

    def flush(self) -> None:
        """Hand every byte of `held` to the file system (the copy fsyncs `target`)."""


def download(
    client: Any,
    obj: ObjectInfo,
    dest: Path,
    *,
    config: TransferConfig | None = None,
    sinks: Sequence[Sink] = (),
    holder: HoldingSink | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    osutils: OSUtils | None = None,
    retry: RetryPolicy | None = None,
) -> DownloadResult:
    """Copy `obj` into `dest`, feeding every byte IN ORDER to `sinks` (the first on a thread of its own beside
    the others: put there one that releases the GIL, a sha256); resume from `dest`'s journal when it
    belongs to this object version. On return with `complete=True` the file is fsync'd and the journal gone.
    With `holder` (one of `sinks`), `dest` holds only the bytes the holder did not: the object is `dest`
    with the holder's `held` ranges read from its `target`."""
    copy = _Copy(
        client, obj, dest, config or TransferConfig(), sinks, holder, progress, should_stop, osutils or OSUtils(), retry
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
        holder: HoldingSink | None,
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
        self.holder = holder
        self.held_fd = -1  # the holder's target, fsync'd at checkpoints and re-read when resuming
        self.unheld_writes: list[Future[None]] = []  # with a holder: the feeder's writes, oldest first
        self.should_stop = should_stop or (lambda: False)
        self.os = osutils
        self.retry = retry or RetryPolicy()
        self.parts = split_parts(obj.size, config.part_size)
        self.journal = Journal(dest, {**obj.identity(), "part_size": config.part_size})
        self.tracker = ProgressTracker(obj.size, progress)
        self.fd = -1
        self.out: FileWriter | None = None  # writes into `fd`, directly where the file system allows it
        self.fetched = 0
        # Shared between workers and the feeder, guarded by `cond`.
        self.cond = threading.Condition()
        self.written: set[int] = set()  # parts whose every slice is on disk (the journal may claim them)
        self.unwritten: dict[int, int] = {}  # part index -> its slices not yet written
        # slice start offset -> its filled buffer and, with direct I/O, the write of it still under way
        self.ready: dict[int, tuple[mmap.mmap, Future[None] | None]] = {}
        self.feeding = -1  # start offset of the slice the feeder waits for
        self.failure: BaseException | None = None
        self.stopping = threading.Event()
        self.next_part = 0
        self.todo: list[Part] = []
        self.resumed_parts: set[int] = set()
        # None is a buffer not allocated yet: a small object never allocates the whole pool.
        self.pool: list[mmap.mmap | None] = []
        # Periodic checkpoints run here, so the feeder goes on while fsync waits for the disk.
        self.checkpoints = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bigpickle-checkpoint")
        self.checkpointing: Future[None] | None = None
        # Direct writes wait for the device; made here, they overlap the next slice's download.
        self.writes = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="bigpickle-write")
        self.hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bigpickle-hash")

    def run(self) -> DownloadResult:
        started = time.monotonic()
        resumed = self.resumed_parts = self._open()
        try:
            self.out = FileWriter(self.os, self.dest, self.fd, direct=self.config.direct_io)
            if self.holder is not None:
                self.held_fd = self.os.open_rw(self.holder.target, truncate=False)
            self.todo = [p for p in self.parts if p.index not in resumed]
            slices = sum(-(-p.size // self.config.buffer_bytes) for p in self.todo)
            held_buffers = self.holder.buffer_bytes if self.holder is not None else 0
            self.pool = [None] * min(self.config.buffers_beside(held_buffers), slices)
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
                for worker in workers:
                    worker.join()
                # no write or checkpoint may touch the file after this
                self.writes.shutdown(wait=True)
                self.hashing.shutdown(wait=True)
                self.checkpoints.shutdown(wait=True)
            if self.checkpointing is not None:
                self.checkpointing.result()  # a failed fsync fails the copy
            if self.failure is not None:
                self._raise(self.failure)
            self._wait_unheld()
            if not complete:
                self._checkpoint()
                return DownloadResult(False, self.fetched, self.tracker.resumed, time.monotonic() - started)
            self._finish()
        finally:
            if self.out is not None:
                self.out.close()
            if self.held_fd >= 0:
                self.os.close(self.held_fd)
            self.os.close(self.fd)
        return DownloadResult(True, self.fetched, self.tracker.resumed, time.monotonic() - started)

    # -- setup and durability --

    def _open(self) -> set[int]:
        """Open the temp file; the parts a previous run left durably written (empty when starting over)."""
        resumed = self.journal.load() if self.dest.exists() else None
        if resumed is not None:
            self.fd = self.os.open_rw(self.dest, truncate=False)
            if self.os.file_size(self.fd) == self.obj.size and self._held_resumable(resumed):
                logger.info(
                    "resuming a copy",
                    extra={"parts_written": len(resumed), "parts": len(self.parts), "file": str(self.dest)},
                )
                return resumed
            self.os.close(self.fd)
        # Forget the old journal before touching the data, so no journal ever describes other bytes.
        self.journal.remove()
        self.journal.held = []
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

    def _held_resumable(self, parts: set[int]) -> bool:
        """Without a holder, any parts resume. With one, the parts must be a prefix and the journal's held
        ranges ordered, inside it and inside the holder's file; anything else starts over."""
        if self.holder is None:
            return True
        if parts != set(range(len(parts))) or not self.holder.target.exists():
            return False
        frontier, file_size = self._frontier(parts), self.holder.target.stat().st_size
        end = 0
        for start, length, at in self.journal.held:
            if start < end or length <= 0 or at < 0 or start + length > frontier or at + length > file_size:
                return False
            end = start + length
        return True

    def _frontier(self, parts: set[int]) -> int:
        """The object offset up to which `parts` (a prefix) reach."""
        return self.parts[len(parts)].start if len(parts) < len(self.parts) else self.obj.size

    def _snapshot(self) -> tuple[set[int], list[list[int]]]:
        """What a checkpoint may claim: the parts written and the holder's ranges before the first part that
        is not (`holder.flush()` first). On the feeder's thread, or after it stopped: a holder is not
        thread-safe."""
        with self.cond:
            parts = self.written | self.resumed_parts
        if self.holder is None:
            return parts, []
        self._wait_unheld()
        self.holder.flush()
        frontier = self._frontier(parts)
        return parts, [
            [start, min(length, frontier - start), at] for start, length, at in self.holder.held if start < frontier
        ]

    def _checkpoint(self, snapshot: tuple[set[int], list[list[int]]] | None = None) -> None:
        """fsync the data, THEN record what it holds: the journal never claims a part a crash could lose."""
        parts, held = snapshot or self._snapshot()
        self.os.fsync(self.fd)
        if self.held_fd >= 0:
            self.os.fsync(self.held_fd)
        self.journal.save(parts, held)

    def _checkpoint_in_background(self) -> None:
        """Start a checkpoint on the checkpoint thread, unless the previous one is still running (an fsync
        of a few seconds of writes can take long enough to stall hashing and then every worker)."""
        if self.checkpointing is not None:
            if not self.checkpointing.done():
                return
            self.checkpointing.result()  # a failed fsync fails the copy
        self.checkpointing = self.checkpoints.submit(self._checkpoint, self._snapshot())

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
            for piece in part.split(self.config.buffer_bytes):
                slot = self._wait_for(piece.start)
                if slot is None:
                    return False
                buffer, write = slot
                view = memoryview(buffer)[: piece.size]
                self._feed_sinks(view)
                view.release()
                if self.holder is not None:
                    self._write_unheld(buffer, piece)
                else:
                    if write is not None:
                        write.result()  # the buffer is free once it is on disk; a failed write fails the copy
                    self._give_back(buffer)
                self.tracker.tick(piece.size)
            if self.holder is not None:
                with self.cond:
                    self.written.add(part.index)  # fed, and written where the holder did not hold it
            if time.monotonic() >= next_checkpoint:
                self._checkpoint_in_background()
                next_checkpoint = time.monotonic() + self.config.checkpoint_interval
        return True

    def _feed_sinks(self, view: memoryview) -> None:
        """Every sink gets the slice; the first (the sha256, which releases the GIL) on the hashing thread,
        beside the others, which the feeder runs meanwhile."""
        first = self.hashing.submit(self.sinks[0].update, view) if self.sinks else None
        for sink in self.sinks[1:]:
            sink.update(view)
        if first is not None:
            first.result()

    def _wait_for(self, start: int) -> tuple[mmap.mmap, Future[None] | None] | None:
        """The filled buffer of the slice at `start` and its write if still under way, or None when the
        copy must stop (failure or `should_stop`)."""
        with self.cond:
            self.feeding = start
            self.cond.notify_all()  # its worker may be waiting for the last free buffer
            while True:
                if self.failure is not None:
                    return None
                if self.should_stop():
                    self.stopping.set()
                    self.cond.notify_all()
                    return None
                if start in self.ready:
                    return self.ready.pop(start)
                self.cond.wait(timeout=0.5)

    def _give_back(self, buffer: mmap.mmap | None) -> None:
        with self.cond:
            self.pool.append(buffer)
            self.cond.notify_all()

    def _write_unheld(self, buffer: mmap.mmap, piece: Part) -> None:
        """Write, on the write pool, the bytes of the slice `piece` that the holder, just fed them, did not
        hold; its buffer is given back once they are written, while the feeder goes on."""
        start, end = piece.start, piece.end + 1
        held: list[tuple[int, int]] = []
        for held_start, length, _ in reversed(self.holder.held):
            if held_start + length <= start:
                break
            held.append((max(held_start, start), min(held_start + length, end)))
        unheld, at = [], start
        for held_start, held_end in [*reversed(held), (end, end)]:
            if held_start > at:
                unheld.append((at, held_start))
            at = max(at, held_end)
        if not unheld:  # all of it held (an array's bytes): the buffer is free now, no round trip to the pool
            self._give_back(buffer)
            return
        self._wait_unheld(only_done=True)
        write = self.writes.submit(self._write_ranges, buffer, piece, unheld)
        write.add_done_callback(lambda _: self._give_back(buffer))
        self.unheld_writes.append(write)

    def _write_ranges(self, buffer: mmap.mmap, piece: Part, ranges: list[tuple[int, int]]) -> None:
        view = memoryview(buffer)
        for start, end in ranges:
            self._write_at(view[start - piece.start : end - piece.start], start)

    def _wait_unheld(self, *, only_done: bool = False) -> None:
        """Wait for the feeder's writes under way (`only_done`: forget those that are done); a failed one
        fails the copy."""
        while self.unheld_writes and (not only_done or self.unheld_writes[0].done()):
            self.unheld_writes.pop(0).result()

    def _read_resumed(self, view: memoryview, offset: int) -> int:
        """Read into `view` the object's bytes from `offset`, as an earlier run left them: from the file, or
        from the holder's file for the journal's held ranges. The count read (0: the file ends)."""
        held = self.journal.held
        i = bisect.bisect_right(held, offset, key=lambda r: r[0]) - 1
        if i >= 0 and offset < held[i][0] + held[i][1]:
            start, length, at = held[i]
            return self.os.preadinto(self.held_fd, view[: start + length - offset], at + offset - start)
        until = held[i + 1][0] if i + 1 < len(held) else self.obj.size
        return self.os.preadinto(self.fd, view[: until - offset], offset)

    def _refeed(self, part: Part, buffer: memoryview) -> None:
        """Feed the sinks a part an earlier run already wrote, read back from the file (and the holder's)."""
        offset = part.start
        while offset <= part.end:
            chunk = buffer[: min(len(buffer), part.end + 1 - offset)]
            got = self._read_resumed(chunk, offset)
            if got <= 0:
                raise IntegrityError(f"{self.dest} ended at byte {offset} while re-reading a resumed part")
            self._feed_sinks(chunk[:got])
            offset += got
        self.tracker.tick(part.size, resumed=True)

    # -- workers: fetch, write, hand over --

    def _worker(self) -> None:
        while not self.stopping.is_set():
            part = self._take_part()
            if part is None:
                return
            try:
                done = self._copy_part(part)
            except BaseException as error:
                with self.cond:
                    self.failure = self.failure or error
                    self.stopping.set()
                    self.cond.notify_all()
                return
            if not done:
                return

    def _take_part(self) -> Part | None:
        with self.cond:
            if self.next_part >= len(self.todo):
                return None
            part = self.todo[self.next_part]
            self.next_part += 1
            return part

    def _take_buffer(self, start: int) -> mmap.mmap | None:
        """A free buffer for the slice at `start`; None when the copy is stopping."""
        with self.cond:
            while not self.stopping.is_set():
                if self.pool and (len(self.pool) > 1 or start == self.feeding):
                    break
                self.cond.wait()
            else:
                return None
            buffer = self.pool.pop()
        # An anonymous map is page-aligned, as O_DIRECT requires of the memory it writes from.
        return buffer if buffer is not None else mmap.mmap(-1, self.config.buffer_bytes)

    def _copy_part(self, part: Part) -> bool:
        """GET `part` and write it slice by slice, handing each slice to the feeder. False when the copy
        stopped first. Through the page cache a slice is written read by read while it is in the CPU cache
        (measured: ~0.2 s of system time per GiB less than afterwards); with direct I/O it is written whole
        on the write pool (the device or NFS sees few large requests) while the next slice downloads."""
        body = None
        pieces = part.split(self.config.buffer_bytes)
        with self.cond:
            self.unwritten[part.index] = len(pieces)
        try:
            for piece in pieces:
                buffer = self._take_buffer(piece.start)
                if buffer is None:
                    return False
                write_each_read = not self.out.direct and self.holder is None
                try:
                    body = self._fill(body, part, piece, buffer, write_each_read)
                except BaseException:
                    self._give_back(buffer)
                    raise
                if body is None:
                    self._give_back(buffer)
                    return False
                write = None
                if write_each_read:
                    self._slice_written(piece)
                elif self.holder is None:  # with a holder, the feeder writes what it does not hold
                    write = self.writes.submit(self._write, buffer, piece)
                with self.cond:
                    self.ready[piece.start] = (buffer, write)
                    self.fetched += piece.size
                    self.cond.notify_all()
            body = None  # read to its end: urllib3 has returned the connection to its pool
            return True
        finally:
            if body is not None:
                body.close()  # mid-body: the connection cannot be reused

    def _fill(self, body: Any, part: Part, piece: Part, buffer: mmap.mmap, write_each_read: bool) -> Any | None:
        """Read the slice `piece` into `buffer` (and write it), continuing `body` (None: GET the rest of
        `part` from the slice on); a network fault mid-body drops the connection and GETs the rest again.
        Returns the body to continue from, or None when the copy stopped meanwhile (the part is left to the
        next run). The GET itself is not retried here: botocore has retried it as far as it retries."""
        view = memoryview(buffer)[: piece.size]
        failures = 0
        while True:
            if body is None:
                body = open_part(self.client, self.obj, Part(part.index, piece.start, part.end))
            try:
                self._read(body, view, piece.start, part.end, write_each_read)
                return body
            except Exception as error:
                body.close()  # mid-body: the connection cannot be reused
                body = None
                if not is_transient(error):
                    raise
                failures += 1
                if self.stopping.is_set():
                    return None  # not a failure of the copy: it stops anyway, and the next run fetches this
                if failures == self.retry.attempts:
                    raise PartRetriesExhausted(part, failures) from error
                logger.warning(
                    "part failed; retrying",
                    extra={
                        "part": part.index,
                        "range": f"{piece.start}-{part.end}",
                        "attempt": failures,
                        "error": f"{type(error).__name__}: {error}",
                    },
                )
                self.retry.backoff(failures - 1)

    def _read(self, body: Any, view: memoryview, start: int, end: int, write_each_read: bool) -> None:
        """Fill `view` (the slice at `start` of the range ending at `end`) from `body` in `read_size`
        steps, writing each step at its offset when `write_each_read`. A failure part-way may leave some
        of the slice written; the retry rewrites it from its start."""
        step = self.config.read_size
        received = 0
        while received < len(view):
            got = body.readinto(view[received : received + step])
            if not got:
                raise ShortPartError(f"range {start}-{end} ended after {received} bytes of the slice at {start}")
            if write_each_read:
                self._write_at(view[received : received + got], start + received)
            received += got

    def _write(self, buffer: mmap.mmap, piece: Part) -> None:
        self._write_at(memoryview(buffer)[: piece.size], piece.start)
        self._slice_written(piece)

    def _slice_written(self, piece: Part) -> None:
        """Count the slice `piece` as on disk; its part is written with its last slice."""
        with self.cond:
            self.unwritten[piece.index] -= 1
            if not self.unwritten[piece.index]:
                del self.unwritten[piece.index]
                self.written.add(piece.index)

    def _write_at(self, data: memoryview, offset: int) -> None:
        with storage_errors(self.dest, self.obj.size):
            self.out.write(data, offset)

    def _raise(self, error: BaseException) -> None:
        """A part whose retries ran out, or a GET that failed after botocore's own retries, keeps what was
        written (journal) and raises a TransferError; integrity and storage failures raise as they are (the
        caller discards the copy)."""
        if isinstance(error, PartRetriesExhausted):
            cause = error.__cause__
            reason = f"{error}, the last time with {type(cause).__name__}: {cause}"
        elif isinstance(error, ClientError | BotoCoreError):
            reason = f"a GET failed after botocore's own retries: {type(error).__name__}: {error}"
        else:
            raise error
        self._checkpoint()
        written = len(self.written) + len(self.resumed_parts)
        raise TransferError(
            f"copying s3://{self.obj.bucket}/{self.obj.key} failed: {reason}; {written} of {len(self.parts)} "
            "parts are written and the next run resumes from them"
        ) from error


class PartRetriesExhausted(Exception):
    """One part's body failed as many times in a row as the retry policy allows (the cause: the last)."""

    def __init__(self, part: Part, attempts: int) -> None:
        super().__init__(f"part {part.index} (bytes {part.start}-{part.end}) failed {attempts} times in a row")
        self.attempts = attempts

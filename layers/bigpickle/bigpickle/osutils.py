"""The file operations a copy makes, behind one seam (tests inject ENOSPC/EFBIG here)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from bigpickle.errors import StorageFullError
from bigpickle.observability import logger
from bigpickle.units import KiB

# What O_DIRECT needs of a write's offset, length and memory address on the file systems staging meets
# (the logical block size of local disks is 512 B or 4 KiB; NFS needs none).
DIRECT_IO_ALIGNMENT = 4 * KiB

_FULL = {errno.ENOSPC: "no space left", errno.EFBIG: "file too large", errno.EDQUOT: "disk quota exceeded"}


@contextlib.contextmanager
def storage_errors(path: Path, size: int) -> Iterator[None]:
    """Turn 'the model does not fit' OS errors into a StorageFullError that says so."""
    try:
        yield
    except OSError as error:
        if error.errno in _FULL:
            raise StorageFullError(
                f"cannot write {path} ({size} bytes): {_FULL[error.errno]} ({os.strerror(error.errno)})"
            ) from error
        raise


class OSUtils:
    """Positional file I/O; one instance is shared by every worker thread (all methods are thread-safe)."""

    def open_rw(self, path: Path, *, truncate: bool) -> int:
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        return os.open(path, flags, 0o644)

    def open_direct(self, path: Path) -> int | None:
        """A second, write-only descriptor on `path` whose writes bypass the page cache (O_DIRECT), or None
        where the file system refuses it. Staging never reads the model back, so caching what it writes
        only costs a copy per byte and dirty pages (on Lambda, in the function's own memory) that each
        checkpoint's fsync must then wait for."""
        flag = getattr(os, "O_DIRECT", 0)
        if not flag:
            return None
        try:
            return os.open(path, os.O_WRONLY | flag)
        except OSError as error:
            if error.errno == errno.EINVAL:
                return None
            raise

    def allocate(self, fd: int, size: int) -> None:
        """Give the file its final size before any part lands. ftruncate, not posix_fallocate: on NFS
        (EFS) glibc emulates fallocate by writing every block, which would copy the model twice."""
        os.ftruncate(fd, size)

    def free_bytes(self, path: Path) -> int:
        stat = os.statvfs(path)
        return stat.f_bavail * stat.f_frsize

    def pwrite(self, fd: int, data: memoryview, offset: int) -> None:
        while data:
            written = os.pwrite(fd, data, offset)
            data = data[written:]
            offset += written

    def preadinto(self, fd: int, buffer: memoryview, offset: int) -> int:
        return os.preadv(fd, [buffer], offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def file_size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def close(self, fd: int) -> None:
        os.close(fd)


class FileWriter:
    """Positional writes into one open file: around the page cache (O_DIRECT) when `direct` and the file
    system allows it, through it otherwise. Thread-safe like OSUtils."""

    def __init__(self, osutils: OSUtils, path: Path, fd: int, *, direct: bool) -> None:
        self.os = osutils
        self.path = path
        self.fd = fd
        self.direct_fd = osutils.open_direct(path) if direct else None
        self.direct = self.direct_fd is not None  # False from the first refused direct write on

    def write(self, data: memoryview, offset: int) -> None:
        """Write `data` at `offset`: its block-aligned head directly when direct I/O is on, the rest (an
        object's unaligned last bytes, or everything) through the page cache."""
        direct_fd = self.direct_fd if self.direct else None
        if direct_fd is not None and offset % DIRECT_IO_ALIGNMENT == 0:
            head = len(data) - len(data) % DIRECT_IO_ALIGNMENT
            try:
                self.os.pwrite(direct_fd, data[:head], offset)
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise
                # Some file systems accept O_DIRECT at open and refuse the writes: go on cached.
                logger.warning("direct I/O refused; writing through the page cache", extra={"file": str(self.path)})
                self.direct = False
            else:
                data, offset = data[head:], offset + head
        if data:
            self.os.pwrite(self.fd, data, offset)

    def close(self) -> None:
        """Close the direct descriptor; `fd` belongs to the caller."""
        if self.direct_fd is not None:
            self.os.close(self.direct_fd)

"""S3 object -> local file with bounded reads. Knows nothing about models.

Every request is a ranged GET of at most `part_size` bytes, pinned to the ETag seen by HEAD
(`IfMatch`), and every response's `Content-Range` is checked, so an object replaced mid-copy or a
server that answers the wrong range fails instead of producing a spliced file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigpickle.checksums import Sink
from bigpickle.errors import IntegrityError
from bigpickle.units import MiB

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

READ_SIZE = 1 * MiB  # one read from the socket; never "everything"


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD said about the object version being copied."""

    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None
    last_modified: Any
    head: dict[str, Any]

    @classmethod
    def from_head(cls, bucket: str, key: str, head: dict[str, Any]) -> ObjectInfo:
        version_id = head.get("VersionId")
        return cls(
            bucket=bucket,
            key=key,
            size=int(head["ContentLength"]),
            etag=head["ETag"],
            version_id=None if version_id in (None, "null") else version_id,
            last_modified=head["LastModified"],
            head=head,
        )


def head_object(client: Any, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
    if version_id:
        kwargs["VersionId"] = version_id
    return ObjectInfo.from_head(bucket, key, client.head_object(**kwargs))


ProgressCallback = Callable[[int], None]


def _check_content_range(header: str | None, start: int, end: int, size: int) -> None:
    match = _CONTENT_RANGE.fullmatch(header or "")
    if not match or (int(match[1]), int(match[2])) != (start, end) or match[3] not in (str(size), "*"):
        raise IntegrityError(f"asked for bytes {start}-{end}/{size}, server answered Content-Range {header!r}")


def download(
    client: Any,
    obj: ObjectInfo,
    dest: Path,
    *,
    part_size: int,
    sinks: Sequence[Sink] = (),
    progress: ProgressCallback | None = None,
) -> None:
    """Copy `obj` into `dest` (created or truncated), feeding every byte in order to `sinks`."""
    with open(dest, "wb") as out:
        for start in range(0, obj.size, part_size):
            end = min(start + part_size, obj.size) - 1
            kwargs: dict[str, Any] = {
                "Bucket": obj.bucket,
                "Key": obj.key,
                "Range": f"bytes={start}-{end}",
                "IfMatch": obj.etag,
            }
            if obj.version_id:
                kwargs["VersionId"] = obj.version_id
            response = client.get_object(**kwargs)
            _check_content_range(response.get("ContentRange"), start, end, obj.size)
            body = response["Body"]
            expected = end - start + 1
            received = 0
            while received < expected:
                chunk = body.read(min(READ_SIZE, expected - received))
                if not chunk:
                    raise IntegrityError(f"part {start}-{end} ended after {received} of {expected} bytes")
                out.write(chunk)
                for sink in sinks:
                    sink.update(chunk)
                received += len(chunk)
                if progress:
                    progress(len(chunk))
            body.close()
        out.flush()
        os.fsync(out.fileno())
    actual = dest.stat().st_size
    if actual != obj.size:
        raise IntegrityError(f"{dest} holds {actual} bytes, S3 says the object has {obj.size}")

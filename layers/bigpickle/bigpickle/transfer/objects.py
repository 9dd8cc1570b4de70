"""What is being copied: the object version HEAD saw, its parts, and the checks every part answer must pass.

Every request is a ranged GET of one part, pinned to the ETag seen by HEAD (`IfMatch`), and every
response's `Content-Range` is checked, so an object replaced mid-copy or a server that answers the wrong
range fails instead of producing a spliced file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from bigpickle.errors import IntegrityError

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


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

    def identity(self) -> dict[str, Any]:
        """What makes two runs copy the same bytes (a resume journal is only reused when this matches)."""
        return {
            "bucket": self.bucket,
            "key": self.key,
            "etag": self.etag,
            "version_id": self.version_id,
            "size": self.size,
        }


def head_object(client: Any, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
    if version_id:
        kwargs["VersionId"] = version_id
    return ObjectInfo.from_head(bucket, key, client.head_object(**kwargs))


@dataclass(frozen=True)
class Part:
    index: int
    start: int
    end: int  # inclusive, as in an HTTP Range

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def split(self, size: int) -> list[Part]:
        """This range as consecutive slices of at most `size` bytes (the buffers it streams through)."""
        return [
            Part(self.index, start, min(start + size, self.end + 1) - 1)
            for start in range(self.start, self.end + 1, size)
        ]


def split_parts(size: int, part_size: int) -> list[Part]:
    return [Part(i, start, min(start + part_size, size) - 1) for i, start in enumerate(range(0, size, part_size))]


def check_content_range(header: str | None, part: Part, size: int) -> None:
    match = _CONTENT_RANGE.fullmatch(header or "")
    if not match or (int(match[1]), int(match[2])) != (part.start, part.end) or match[3] not in (str(size), "*"):
        raise IntegrityError(
            f"asked for bytes {part.start}-{part.end}/{size}, server answered Content-Range {header!r}"
        )


def open_part(client: Any, obj: ObjectInfo, part: Part) -> Any:
    """GET one part pinned to the ETag; returns the streaming body after checking what range came back."""
    kwargs: dict[str, Any] = {
        "Bucket": obj.bucket,
        "Key": obj.key,
        "Range": f"bytes={part.start}-{part.end}",
        "IfMatch": obj.etag,
    }
    if obj.version_id:
        kwargs["VersionId"] = obj.version_id
    try:
        response = client.get_object(**kwargs)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
            raise IntegrityError(
                f"s3://{obj.bucket}/{obj.key} was replaced while copying: its ETag is no longer {obj.etag}"
            ) from error
        raise
    try:
        check_content_range(response.get("ContentRange"), part, obj.size)
    except IntegrityError:
        response["Body"].close()
        raise
    return response["Body"]

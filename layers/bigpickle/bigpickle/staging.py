"""One S3 object version -> one published model version: transfer, verify, publish.

Idempotent (S3 may deliver an event twice) and failure-safe: anything that goes wrong raises, removes
the incoming folder and leaves the current version untouched, so S3's async retries can try again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from bigpickle.checksums import ChecksumVerifier, full_object_checksum
from bigpickle.config import Settings
from bigpickle.errors import IntegrityError
from bigpickle.observability import MetricUnit, logger, metrics
from bigpickle.store import Manifest, ModelStore, model_format, validate_model_name
from bigpickle.transfer import ObjectInfo, download, head_object

MODELS_PREFIX = "models"


@dataclass(frozen=True)
class ModelKey:
    """`models/<name>/<file>`: the only key shape that stages a model."""

    name: str
    file: str
    format: str

    @classmethod
    def parse(cls, key: str) -> ModelKey | None:
        parts = PurePosixPath(key).parts
        if len(parts) != 3 or parts[0] != MODELS_PREFIX:
            return None
        fmt = model_format(parts[2])
        if fmt is None:
            return None
        return cls(
            name=validate_model_name(parts[1]), file=f"model{PurePosixPath(parts[2]).suffix.lower()}", format=fmt
        )


@dataclass(frozen=True)
class StageResult:
    bucket: str
    key: str
    status: str  # "published", "already_published" or "skipped"
    model: str | None = None
    version: str | None = None
    bytes: int = 0
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def version_name(obj: ObjectInfo) -> str:
    """Deterministic per object version, sortable by upload time: 20261126T120000Z-<etag prefix>."""
    stamp = obj.last_modified.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    etag = obj.etag.strip('"').replace("-", "")
    return f"{stamp}-{etag[:12]}"


def stage_object(
    client: Any, store: ModelStore, settings: Settings, bucket: str, key: str, version_id: str | None = None
) -> StageResult:
    """Stage `s3://bucket/key` if it is a model key; a no-op when that object version is published."""
    model_key = ModelKey.parse(key)
    if model_key is None:
        logger.warning("not a model key; expected models/<name>/<file>.pkl|.pickle|.joblib", extra={"key": key})
        return StageResult(bucket, key, "skipped", reason="not a models/<name>/<file> model key")

    obj = head_object(client, bucket, key, version_id)
    version = version_name(obj)
    log = {"model": model_key.name, "version": version, "bucket": bucket, "key": key, "bytes": obj.size}
    if store.has_version(model_key.name, version):
        logger.info("object version already published; nothing to do", extra=log)
        return StageResult(bucket, key, "already_published", model_key.name, version, obj.size)

    logger.info("staging started", extra=log)
    incoming = store.prepare_incoming(model_key.name, version)
    try:
        sha256 = hashlib.sha256()
        expected = full_object_checksum(obj.head)
        verifier = ChecksumVerifier(*expected) if expected else None
        sinks = [sha256] if verifier is None else [sha256, verifier]
        download(client, obj, incoming / model_key.file, part_size=settings.part_size_bytes, sinks=sinks)
        if verifier and not verifier.matches():
            raise IntegrityError(
                f"{verifier.algorithm} of the copied bytes is {verifier.actual}, S3 says {verifier.expected}"
            )
        manifest = Manifest(
            name=model_key.name,
            version=version,
            file=model_key.file,
            format=model_key.format,
            bytes=obj.size,
            sha256=sha256.hexdigest(),
            staged_at=datetime.now(UTC).isoformat(),
            bucket=bucket,
            key=key,
            etag=obj.etag,
            version_id=obj.version_id,
            s3_checksum={"algorithm": verifier.algorithm, "value": verifier.expected} if verifier else None,
        )
        store.publish(manifest)
    except BaseException:
        store.discard_incoming(model_key.name, version)
        logger.exception("staging failed; the current version is untouched", extra=log)
        raise
    metrics.add_metric(name="StagedBytes", unit=MetricUnit.Bytes, value=obj.size)
    logger.info("staging published", extra={**log, "sha256": manifest.sha256})
    return StageResult(bucket, key, "published", model_key.name, version, obj.size)

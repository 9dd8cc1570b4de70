"""One S3 object version -> one published model version: transfer, verify, publish.

Idempotent (S3 may deliver an event twice; one stager per version holds its lock, the other no-ops) and
failure-safe: anything that goes wrong raises and leaves the current version untouched, so S3's async
retries can try again. A copy that cannot be trusted (integrity, disk full) is removed; one cut short by
the network or a kill keeps its parts and journal, and the next run resumes it. Near the Lambda time
limit the copy checkpoints and the handler re-invokes itself with a continuation event.

Publishing follows S3's order of uploads: an older version arriving late is published (for rollback)
without becoming current, and a retried event finishes a publish a killed run left half done. An event's
records are staged independently: one that can never succeed is skipped (logged, counted), and only
failures a retry can fix make the invocation fail.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import unquote_plus, urlsplit

import boto3
from aws_lambda_powertools.utilities.data_classes import S3Event
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from bigpickle.checksums import ChecksumVerifier, full_object_checksum
from bigpickle.config import Settings
from bigpickle.errors import (
    BigPickleError,
    IntegrityError,
    LambdaUnreachableError,
    StagingError,
    StorageFullError,
    UnsafePickleError,
    UnstageableObjectError,
)
from bigpickle.features import recorded_features
from bigpickle.formats import model_format
from bigpickle.observability import MetricUnit, logger, metrics
from bigpickle.safety import Allowlist
from bigpickle.safety.rewriter import PickleRewriter
from bigpickle.safety.scanner import ScanReport
from bigpickle.safety.trial import TrialLimits, start_fork_server, trial_load
from bigpickle.safety.uploads import PublishedForm, UploadSink, finish_upload, upload_sink
from bigpickle.store import Manifest, ModelStore, Publication, validate_model_name
from bigpickle.transfer import (
    DownloadResult,
    ObjectInfo,
    OSUtils,
    Progress,
    ProgressCallback,
    RetryPolicy,
    TransferConfig,
    download,
    head_object,
)
from bigpickle.warmup import request_warmups

MODELS_PREFIX = "models"
CONTINUATION_KEY = "bigpickleContinuation"  # added to the S3 event a stager re-invokes itself with


@dataclass(frozen=True)
class ModelKey:
    """`models/<name>/<file>`: the only key shape that stages a model."""

    name: str
    file: str
    format: str

    @classmethod
    def parse(cls, key: str) -> ModelKey | None:
        """The model key, or None for any other key (empty or dot segments and trailing slashes included:
        S3 keys are not paths, `models//iris/model.pkl` is not `models/iris/model.pkl`). A model key whose
        name the store refuses raises InvalidModelNameError."""
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != MODELS_PREFIX or any(p in ("", ".", "..") for p in parts):
            return None
        fmt = model_format(parts[2])
        if fmt is None:
            return None
        return cls(
            name=validate_model_name(parts[1]), file=f"model{PurePosixPath(parts[2]).suffix.lower()}", format=fmt
        )


class S3Record(NamedTuple):
    """One record of an S3 event, as staging needs it (a plain (bucket, key, version id) tuple works too)."""

    bucket: str
    key: str
    version_id: str | None = None
    sequencer: str | None = None  # orders the events of one key (UploadOrder)
    event_name: str = "ObjectCreated:Put"

    @property
    def creates_object(self) -> bool:
        return self.event_name.startswith("ObjectCreated:")


@dataclass(frozen=True)
class StageResult:
    bucket: str
    key: str
    # "published" (and now current), "published_not_current" (an older upload, kept for rollback; `reason`
    # says why), "already_published", "skipped" (never stageable: `reason`), "failed" (a retry may fix it:
    # `error`), "in_progress" (another stager holds this version) or "checkpointed" (stopped before the time
    # limit; a continuation resumes it)
    status: str
    model: str | None = None
    version: str | None = None
    bytes: int = 0
    reason: str | None = None
    resumed_bytes: int | None = None  # bytes an earlier, interrupted run had already copied
    error: Exception | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "error"}


def version_name(obj: ObjectInfo) -> str:
    """Deterministic per object version, sortable by upload time: 20261126T120000Z-<etag prefix>."""
    stamp = obj.last_modified.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    etag = obj.etag.strip('"').replace("-", "")
    return f"{stamp}-{etag[:12]}"


def transfer_config(settings: Settings) -> TransferConfig:
    return TransferConfig(
        part_size=settings.part_size_bytes,
        concurrency=settings.stage_concurrency,
        memory_budget=settings.stage_memory_budget_bytes,
        direct_io=settings.stage_direct_io,
    )


@dataclass(frozen=True)
class StageOptions:
    """Seams and hooks of one staging run; the defaults are what Lambda uses."""

    should_stop: Callable[[], bool] | None = None  # True near the time limit: checkpoint and return
    progress: ProgressCallback | None = None  # called besides the progress log lines (the CLI's bar)
    osutils: OSUtils | None = None
    retry: RetryPolicy | None = None
    config: TransferConfig | None = None  # overrides the one derived from the settings


def stage_object(
    client: Any,
    store: ModelStore,
    settings: Settings,
    bucket: str,
    key: str,
    version_id: str | None = None,
    options: StageOptions | None = None,
    sequencer: str | None = None,
) -> StageResult:
    """Stage `s3://bucket/key` if it is a model key; when that object version is published already, only
    finish what a killed run may have left undone (the pointer switch). `sequencer` is the S3 event's; it
    is recorded only with `version_id` (without it, HEAD may see a newer object than the event's).
    Raises UnstageableObjectError (retryable=False) for an object that can never be published."""
    options = options or StageOptions()
    model_key = ModelKey.parse(key)
    if model_key is None:
        return skip_record(bucket, key, "not a models/<name>/<file>.pkl|.pickle|.joblib|.bpk model key")

    obj = _head_model_object(client, bucket, key, version_id)
    version = version_name(obj)
    log = {"model": model_key.name, "version": version, "bucket": bucket, "key": key, "bytes": obj.size}
    if store.has_version(model_key.name, version):
        return _complete_publish(store, settings, obj, model_key.name, version, log)

    with store.lock_version(model_key.name, version) as held:
        if not held:
            logger.info("another stager is copying this object version; leaving it to them", extra=log)
            return StageResult(bucket, key, "in_progress", model_key.name, version, obj.size)
        if store.has_version(model_key.name, version):  # published while we waited for HEAD
            return _complete_publish(store, settings, obj, model_key.name, version, log)
        sequencer = sequencer if version_id else None
        return _copy_and_publish(client, store, settings, model_key, obj, version, options, log, sequencer)


def skip_record(bucket: str, key: str, reason: str) -> StageResult:
    """A record staging will never act on: logged and counted (metric StagingRecordsSkipped), not failed."""
    logger.warning("record skipped", extra={"bucket": bucket, "key": key, "reason": reason})
    metrics.add_metric(name="StagingRecordsSkipped", unit=MetricUnit.Count, value=1)
    return StageResult(bucket, key, "skipped", reason=reason)


def _head_model_object(client: Any, bucket: str, key: str, version_id: str | None) -> ObjectInfo:
    """HEAD the object version; one that is gone (deleted, a delete marker) or empty can never be staged."""
    try:
        obj = head_object(client, bucket, key, version_id)
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (404, 405):  # no such key or version; 405: the version is a delete marker
            raise UnstageableObjectError(f"s3://{bucket}/{key} is gone (deleted since the event)") from error
        raise
    if obj.size == 0:
        raise UnstageableObjectError(f"s3://{bucket}/{key} is empty: a model file has at least a pickle header")
    return obj


def _complete_publish(
    store: ModelStore, settings: Settings, obj: ObjectInfo, name: str, version: str, log: dict[str, Any]
) -> StageResult:
    """The version is in versions/ already: a duplicate event, or the retry of a run killed before `current`
    moved. In the second case `current` moves now (unless a newer upload or a rollback came since) and the
    result is "published", so the warm-up goes out."""
    publication = store.complete_publish(name, version)
    if publication.switched and publication.is_current:
        removed = store.prune(name, settings.keep_versions)
        logger.info("finished an interrupted publish: current moved", extra={**log, "removed_versions": removed})
        return StageResult(obj.bucket, obj.key, "published", name, version, obj.size)
    logger.info("object version already published; nothing to do", extra={**log, "current": publication.current})
    return StageResult(obj.bucket, obj.key, "already_published", name, version, obj.size)


def _copy_and_publish(
    client: Any,
    store: ModelStore,
    settings: Settings,
    model_key: ModelKey,
    obj: ObjectInfo,
    version: str,
    options: StageOptions,
    log: dict[str, Any],
    sequencer: str | None = None,
) -> StageResult:
    logger.info("staging started", extra=log)
    start_fork_server()  # the trial load's, warming up while the copy runs
    incoming = store.prepare_incoming(model_key.name, version)
    try:
        copy = _copy(client, settings, model_key, obj, incoming, options, log)
        if not copy.result.complete:
            logger.info(
                "staging checkpointed before the time limit", extra={**log, "fetched": copy.result.fetched_bytes}
            )
            return StageResult(
                obj.bucket, obj.key, "checkpointed", model_key.name, version, obj.size, None, copy.result.resumed_bytes
            )
        _check_s3_checksum(copy.verifier)
        report, published = _check_upload(copy, model_key, incoming, log)
        features = _trial_load(incoming / published.file, published, copy.allowlist, settings)
        manifest = _manifest(model_key, version, obj, copy, report, published, sequencer, features)
        publication = store.publish(manifest)
    except (IntegrityError, StorageFullError, UnsafePickleError):
        store.discard_incoming(model_key.name, version)  # these bytes can never be published
        logger.exception("staging failed; the copy is removed and the current version is untouched", extra=log)
        raise
    except BaseException:
        logger.exception("staging failed; the current version is untouched, the next run resumes", extra=log)
        raise
    _record_publish(store, settings, obj, manifest, copy.result, log)
    return _publication_result(obj, publication, log, copy.result.resumed_bytes)


@dataclass(frozen=True)
class _Copy:
    """An upload copied into incoming/, and the sinks that read every byte of it on the way."""

    result: DownloadResult
    sha256: Any  # hashlib's sha256 of the bytes as uploaded
    scanner: UploadSink
    verifier: ChecksumVerifier | None  # S3's full-object checksum, when the object has one
    allowlist: Allowlist


def _copy(
    client: Any,
    settings: Settings,
    model_key: ModelKey,
    obj: ObjectInfo,
    incoming: Path,
    options: StageOptions,
    log: dict[str, Any],
) -> _Copy:
    """Stream the object into `incoming`, hashing, scanning and checksumming it as it goes (or resume it)."""
    sha256 = hashlib.sha256()
    expected = full_object_checksum(obj.head)
    verifier = ChecksumVerifier(*expected) if expected else None
    allowlist = Allowlist(settings.pickle_allowlist_extra)
    scanner = upload_sink(model_key.format, incoming, allowlist)
    sinks = [sha256, scanner] if verifier is None else [sha256, scanner, verifier]
    result = download(
        client,
        obj,
        incoming / model_key.file,
        config=options.config or transfer_config(settings),
        sinks=sinks,
        holder=scanner if isinstance(scanner, PickleRewriter) else None,  # its array bytes are written once
        progress=_progress_reporter(log, options.progress),
        should_stop=options.should_stop,
        osutils=options.osutils,
        retry=options.retry,
    )
    return _Copy(result, sha256, scanner, verifier, allowlist)


def _check_s3_checksum(verifier: ChecksumVerifier | None) -> None:
    if verifier and not verifier.matches():
        raise IntegrityError(
            f"{verifier.algorithm} of the copied bytes is {verifier.actual}, S3 says {verifier.expected}"
        )


def _check_upload(
    copy: _Copy, model_key: ModelKey, incoming: Path, log: dict[str, Any]
) -> tuple[ScanReport, PublishedForm]:
    """The scan's verdict and the form to publish (rewritten to the bigpickle layout where it can be);
    UnsafePickleError when the upload imports what the allowlist refuses."""
    report, published = finish_upload(copy.scanner, incoming / model_key.file, model_key.format, copy.allowlist)
    if published is None:
        logger.error(
            "refusing to publish an unsafe pickle: allow only what the model needs (docs/security.md)",
            extra={**log, "forbidden_globals": sorted(report.forbidden), "problems": report.problems[:20]},
        )
        report.raise_if_unsafe()
    return report, published


def _trial_load(path: Path, published: PublishedForm, allowlist: Allowlist, settings: Settings) -> Any:
    """The predict function's own load (MODEL_MMAP, the published layout's digests and verdict) in a limited
    child, when the stage function can hold what it does not map; what the probe learnt (the features)."""
    limits = TrialLimits.for_load(path, published.format, mmap=settings.model_mmap)
    if not limits.fits_in(settings.function_memory_bytes):
        return None
    layout = published.details.get("layout")
    return trial_load(
        path, published.format, allowlist, limits, recorded_features, mmap=settings.model_mmap, layout=layout
    )


def _manifest(
    model_key: ModelKey,
    version: str,
    obj: ObjectInfo,
    copy: _Copy,
    report: ScanReport,
    published: PublishedForm,
    sequencer: str | None,
    features: list[dict[str, Any]] | None,
) -> Manifest:
    verifier = copy.verifier
    return Manifest(
        name=model_key.name,
        version=version,
        file=published.file,
        format=published.format,
        bytes=obj.size,
        sha256=copy.sha256.hexdigest(),
        staged_at=datetime.now(UTC).isoformat(),
        bucket=obj.bucket,
        key=obj.key,
        etag=obj.etag,
        version_id=obj.version_id,
        s3_checksum={"algorithm": verifier.algorithm, "value": verifier.expected} if verifier else None,
        details={**report.details(), **published.details},
        last_modified=obj.last_modified.astimezone(UTC).isoformat(),
        sequencer=sequencer,
        features=features,
    )


def _record_publish(
    store: ModelStore,
    settings: Settings,
    obj: ObjectInfo,
    manifest: Manifest,
    result: DownloadResult,
    log: dict[str, Any],
) -> None:
    """Prune the versions beyond KEEP_VERSIONS, then count and log the publish."""
    removed = store.prune(manifest.name, settings.keep_versions)
    megabytes_per_second = result.fetched_bytes / 1e6 / max(result.seconds, 1e-9)
    metrics.add_metric(name="StagedBytes", unit=MetricUnit.Bytes, value=obj.size)
    metrics.add_metric(name="StagingSeconds", unit=MetricUnit.Seconds, value=round(result.seconds, 3))
    metrics.add_metric(
        name="StagingThroughput", unit=MetricUnit.MegabytesPerSecond, value=round(megabytes_per_second, 1)
    )
    logger.info(
        "staging published",
        extra={**log, "sha256": manifest.sha256, "seconds": round(result.seconds, 3), "removed_versions": removed},
    )


def _publication_result(
    obj: ObjectInfo, publication: Publication, log: dict[str, Any], resumed_bytes: int | None
) -> StageResult:
    status = "published" if publication.is_current else "published_not_current"
    if not publication.is_current:
        logger.info(
            "published an older upload, kept for rollback; current stays",
            extra={**log, "current": publication.current, "reason": publication.reason},
        )
    name, version = log["model"], publication.version
    return StageResult(obj.bucket, obj.key, status, name, version, obj.size, publication.reason, resumed_bytes)


def _progress_reporter(log: dict[str, Any], also: ProgressCallback | None) -> ProgressCallback:
    def report(progress: Progress) -> None:
        logger.info("staging progress", extra={**log, **progress.as_log()})
        if also is not None:
            also(progress)

    return report


def stage_uri(uri: str, *, progress: ProgressCallback | None = None, settings: Settings | None = None) -> StageResult:
    """`bigpickle stage s3://bucket/key`: the same engine, outside Lambda, into MODELS_ROOT."""
    parsed = urlsplit(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError(f"expected s3://bucket/models/<name>/<file>, got {uri!r}")
    settings = settings or Settings.from_env()
    client = boto3.client("s3", config=transfer_config(settings).client_config())
    return stage_object(
        client,
        ModelStore(settings.models_root),
        settings,
        parsed.netloc,
        parsed.path.lstrip("/"),
        options=StageOptions(progress=progress),
    )


# -- the Lambda side: time limit, continuations --

Invoker = Callable[[dict[str, Any]], None]

# The Lambda API answers an asynchronous Invoke (202) at once: short timeouts and three attempts in all
# bound one invoke to ~42 s (backoff included), inside STAGE_CHECKPOINT_SECONDS (60), so a continuation
# still goes out before the time limit. botocore's defaults (60 s connect, legacy retries) could spend
# minutes on a subnet that cannot reach the API, and S3's retry would then copy again from the checkpoint.
LAMBDA_CLIENT_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"mode": "standard", "total_max_attempts": 3})


def lambda_invoker(
    function_name: str, lambda_client: Any | None = None, *, config: Config = LAMBDA_CLIENT_CONFIG
) -> Invoker:
    """Invoke `function_name` asynchronously (InvocationType=Event) with a payload; the stage function
    calls itself this way, so its role needs lambda:InvokeFunction on itself. The client is created on
    first use: most invocations never continue. A Lambda API that cannot be reached fails within the
    config's bounds with LambdaUnreachableError, naming the endpoint that is missing."""
    clients: list[Any] = [lambda_client] if lambda_client is not None else []

    def invoke(payload: dict[str, Any]) -> None:
        if not clients:
            clients.append(boto3.client("lambda", config=config))
        client = clients[0]
        try:
            client.invoke(FunctionName=function_name, InvocationType="Event", Payload=json.dumps(payload).encode())
        except (BotoConnectionError, HTTPClientError) as exc:
            raise LambdaUnreachableError(
                f"cannot reach the Lambda API at {client.meta.endpoint_url} to invoke {function_name}: {exc}. "
                "The stage function's subnets need a Lambda interface endpoint with private DNS "
                "(CreateLambdaEndpoint=true) or a NAT gateway (docs/deploy.md)"
            ) from exc

    return invoke


def stage_event(
    event: dict[str, Any],
    context: Any,
    *,
    client: Any,
    store: ModelStore,
    settings: Settings,
    invoke: Invoker,
    records: list[S3Record] | list[tuple[str, str, str | None]],
) -> list[StageResult]:
    """Stage each record of an S3 event in turn (one result per record), stopping `STAGE_CHECKPOINT_SECONDS`
    before the time limit. A checkpointed record and the ones after it go to a continuation: the same
    S3 event with only those records and a count, invoked asynchronously; after
    `STAGE_MAX_CONTINUATIONS` continuations staging fails (its parts stay, a later event resumes).

    Records are independent: only `ObjectCreated:*` ones are staged (others, such as deletes, are skipped
    without a request to S3); one that fails for good (retryable=False) is skipped, one a retry may fix is
    "failed" with its error, and the others go on. `raise_for_retry` turns failures into the exception S3
    retries on."""
    count = int(event.get(CONTINUATION_KEY, {}).get("count", 0))
    margin_ms = settings.stage_checkpoint_seconds * 1000
    options = StageOptions(should_stop=lambda: context.get_remaining_time_in_millis() < margin_ms)
    results: list[StageResult] = []
    for i, record in enumerate(S3Record(*r) for r in records):
        result = _stage_record(client, store, settings, record, options)
        results.append(result)
        if result.status == "checkpointed":
            if count >= settings.stage_max_continuations:
                raise StagingError(
                    f"s3://{record.bucket}/{record.key} did not finish within {count + 1} invocations "
                    f"(STAGE_MAX_CONTINUATIONS={settings.stage_max_continuations}); its parts are kept and "
                    "the next event for this object version resumes them"
                )
            remaining = event["Records"][i:]
            invoke({**event, "Records": remaining, CONTINUATION_KEY: {"count": count + 1}})
            logger.info("continuation invoked", extra={"count": count + 1, "records": len(remaining)})
            break
    return results


def _stage_record(
    client: Any, store: ModelStore, settings: Settings, record: S3Record, options: StageOptions
) -> StageResult:
    if not record.creates_object:
        return skip_record(record.bucket, record.key, f"{record.event_name} is not an ObjectCreated event")
    try:
        return stage_object(
            client, store, settings, record.bucket, record.key, record.version_id, options, record.sequencer
        )
    except BigPickleError as error:
        if not error.retryable:
            return skip_record(record.bucket, record.key, error.message)
        failure: Exception = error
    except Exception as error:  # botocore, OS errors: transient until shown otherwise
        failure = error
    logger.exception("staging failed; S3 retries the event", extra={"bucket": record.bucket, "key": record.key})
    return StageResult(record.bucket, record.key, "failed", reason=str(failure), error=failure)


def raise_for_retry(results: list[StageResult]) -> None:
    """Raise the first failure a retry may fix, so the invocation fails and S3 retries the event (records
    staged meanwhile are no-ops the second time)."""
    for result in results:
        if result.error is not None:
            raise result.error


@dataclass(frozen=True)
class StageFunction:
    """What the stage function builds once, while its execution environment initialises, and every
    invocation reuses: the settings, the S3 client, the store and the warm-up invoker."""

    settings: Settings
    client: Any
    store: ModelStore
    # After a publish, the predict function is invoked asynchronously to load the model (events/warmup.json).
    warmup_invoke: Invoker | None

    @classmethod
    def from_env(cls) -> StageFunction:
        settings = Settings.from_env()
        predict = settings.predict_function_name
        return cls(
            settings=settings,
            client=boto3.client("s3", config=transfer_config(settings).client_config()),
            store=ModelStore(settings.models_root),
            warmup_invoke=lambda_invoker(predict) if predict else None,
        )


def handle_s3_event(event: dict[str, Any], context: Any, function: StageFunction) -> dict[str, Any]:
    """The stage function's whole answer to an S3 event (or its own continuation): stage each record, warm
    the predict function for what was published (even when another record failed), then raise the first
    failure a retry may fix, so S3 retries the event."""
    records = [
        S3Record(
            bucket=record.s3.bucket.name,
            key=unquote_plus(record.s3.get_object.key),
            version_id=record.s3.get_object.version_id,
            sequencer=record.s3.get_object.get("sequencer"),
            event_name=record.event_name,
        )
        for record in S3Event(event).records
    ]
    invoke = lambda_invoker(context.invoked_function_arn)  # continuations near the time limit
    results = stage_event(
        event,
        context,
        client=function.client,
        store=function.store,
        settings=function.settings,
        invoke=invoke,
        records=records,
    )
    if function.warmup_invoke is not None:
        request_warmups(function.warmup_invoke, results)
    raise_for_retry(results)
    return {"results": [r.as_dict() for r in results]}

"""What staging publishes for an upload: the checked form of its bytes, decided while they stream in.

    upload               sink during the copy                    published
    .pkl .pickle .joblib PickleRewriter (scanner + rewriter)     model.bpk, rewritten, once its layout and
                                                                 stream checked out as an uploaded .bpk's
                                                                 do; or the upload as it came when the
                                                                 rewrite cannot be proven exact
    .bpk                 counted only                            the upload, once its layout checked out:
                                                                 trailer, index, offsets, stream = STOP,
                                                                 one buffer per out-of-band reference

The manifest's `details["layout"]` says which, and why (`rewritten`, `reason`), with the published file's
own checksum and digest (`file_checksum` of the whole file, `stream_sha256` of the stream then the index,
what a load hashes by default) and `scanned_by`, the key of the scanner verdict on that very stream, next to
`sha256`, which stays the digest of the object as uploaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigpickle.formats import BIGPICKLE, JOBLIB, PICKLE, extension_of
from bigpickle.safety.allowlist import Allowlist
from bigpickle.safety.layout import LayoutError, check_against_scan, ends_with_trailer, hash_stream, read_layout
from bigpickle.safety.rewriter import PickleRewriter
from bigpickle.safety.scanner import PickleScanner, ScanReport, verdict_key

REWRITTEN_FILE = "model.bpk"


class _CountingSink:
    """A .bpk upload's sink: its layout is checked from the file once the copy is complete."""

    def __init__(self) -> None:
        self.bytes = 0

    def update(self, data: bytes | memoryview) -> None:
        self.bytes += len(data)


UploadSink = PickleRewriter | _CountingSink


@dataclass(frozen=True)
class PublishedForm:
    file: str  # the file name inside the version folder
    format: str
    details: dict[str, Any] = field(default_factory=dict)  # merged into the manifest's details


def upload_sink(fmt: str, incoming: Path, allowlist: Allowlist) -> UploadSink:
    """The sink that reads an upload of `fmt` as it is copied into the folder `incoming`."""
    if fmt == BIGPICKLE:
        return _CountingSink()
    return PickleRewriter(incoming / REWRITTEN_FILE, fmt, allowlist)


JOBLIB_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"


def content_format(path: Path, report: ScanReport) -> str | None:
    """What the bytes are, whatever the name says: the bigpickle trailer, joblib's array placeholder (the
    scanner met it), or a pickle's PROTO opcode; None for anything else."""
    with open(path, "rb") as f:
        head = f.read(1)
        if ends_with_trailer(f, os.fstat(f.fileno()).st_size):
            return BIGPICKLE
    if JOBLIB_WRAPPER in report.forbidden:
        return JOBLIB
    return PICKLE if head == b"\x80" else None


def _name_the_mismatch(report: ScanReport, upload: Path, fmt: str) -> ScanReport:
    """A refused upload whose bytes are another format than its extension says is told so first."""
    found = content_format(upload, report)
    if found is not None and found != fmt:
        report.problems.insert(
            0, f"the content is a {found} file but its name says {fmt}: upload it as model{extension_of(found)}"
        )
    return report


def finish_upload(
    sink: UploadSink, upload: Path, fmt: str, allowlist: Allowlist
) -> tuple[ScanReport, PublishedForm | None]:
    """Once every byte went through `sink`: the scan report, and (when it is safe) what to publish. The
    upload file is removed when the rewritten one replaces it, and completed with the bytes the rewriter
    held when it is published (or refused) as it came."""
    if isinstance(sink, _CountingSink):
        report, published = check_bigpickle(upload, allowlist)
        return (report, published) if published else (_name_the_mismatch(report, upload, fmt), None)
    report = sink.finish()
    if not report.safe or sink.reason is not None:
        sink.restore(upload)  # the copy left out the bytes the rewriter held, and the upload is what is published
    if not report.safe:
        sink.publish()  # removes the partial rewrite
        return _name_the_mismatch(report, upload, fmt), None
    result = sink.publish()
    if result.layout is None:
        return report, PublishedForm(upload.name, fmt, {"layout": result.details()})
    rewritten = upload.with_name(REWRITTEN_FILE)
    check, checked = check_bigpickle(rewritten, allowlist)
    if checked is None or checked.details["layout"]["stream_sha256"] != result.stream_sha256:
        # the rewriter's own output failed the checks its input passed: never publish it; publish the upload,
        # with the bytes the rewriter held put back
        sink.restore(upload)
        rewritten.unlink()
        problems = "; ".join(check.reasons()[:3]) or "its stream hashes differently from what was written"
        layout = {"rewritten": False, "reason": f"the rewritten file did not check out ({problems})"}
        return report, PublishedForm(upload.name, fmt, {"layout": layout})
    upload.unlink()
    source = {"file": upload.name, "format": fmt}
    layout = {**result.details(), "scanned_by": checked.details["layout"]["scanned_by"]}
    return report, PublishedForm(REWRITTEN_FILE, BIGPICKLE, {"layout": layout, "source": source})


def check_bigpickle(path: Path, allowlist: Allowlist) -> tuple[ScanReport, PublishedForm | None]:
    """Check a .bpk completely (an upload, or the rewriter's output): its layout, and its stream scanned to
    STOP from the file (bounded reads; the buffers are not read). A malformed file is refused with the
    reason. The details record the stream's digest and the key of the verdict (`scanned_by`): a load under
    the same key need not scan that stream again (docs/security.md "Integrity at load")."""
    scanner = PickleScanner(BIGPICKLE, allowlist)
    with open(path, "rb") as f:
        try:
            layout = read_layout(f, os.fstat(f.fileno()).st_size)
        except LayoutError as exc:
            scanner.report.problems.append(f"malformed bigpickle layout: {exc}")
            return scanner.report, None
        digest = hash_stream(f, layout, [scanner])
    report = scanner.finish()
    if not report.safe:
        return report, None
    try:
        check_against_scan(layout, report.stream_bytes, report.oob_buffers)
    except LayoutError as exc:
        report.problems.append(f"malformed bigpickle layout: {exc}")
        return report, None
    details = {
        "rewritten": False,
        "reason": "uploaded in the bigpickle layout",
        "version": layout.version,
        "stream_sha256": digest,
        "scanned_by": verdict_key(allowlist),
        "pickle_bytes": layout.pickle_bytes,
        "buffers": len(layout.buffers),
        "buffer_bytes": layout.buffer_bytes,
        "copied_bytes": layout.copied_bytes,
    }
    return report, PublishedForm(path.name, BIGPICKLE, {"layout": details})

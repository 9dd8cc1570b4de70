"""The EFS layout: version folders, manifests and the current-version pointer. No network.

    <root>/<name>/current                  {"version": "..."}; replaced by rename, so readers see old or new
    <root>/<name>/versions/<version>/      manifest.json + the model file; never modified once published
    <root>/<name>/incoming/<version>/      staging in progress (temp file + resume journal); renamed into
                                           versions/ when complete and verified
    <root>/<name>/incoming/<version>.lock  held (fcntl) by the one stager copying that version
    <root>/<name>/model.lock               held (fcntl) by whoever changes the model's state: publish, the
                                           pointer switch, retention, rollback

A version name is derived from the S3 object version (its LastModified and ETag), so a duplicate
event for the same object maps to the same folder and is recognised as already published.

`current` moves only forward in S3's order of uploads (`UploadOrder`): it also records the newest upload
it has been decided about, so a late or re-delivered event of an older version is published (available
for rollback) without becoming current, and a rollback holds until a newer upload arrives.
Everything read back (the pointer, manifests) is validated: a bad file is `ModelInvalidError` for that
model only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cmp_to_key
from pathlib import Path
from typing import Any

from bigpickle.durable import fsync_path, write_file_atomically
from bigpickle.errors import (
    InvalidModelNameError,
    ModelInvalidError,
    ModelNotFoundError,
    ModelNotReadyError,
    StoreBusyError,
)
from bigpickle.formats import KNOWN_FORMATS
from bigpickle.observability import logger

MANIFEST_FILE = "manifest.json"
CURRENT_FILE = "current"
VERSIONS_DIR = "versions"
INCOMING_DIR = "incoming"
MODEL_LOCK_FILE = "model.lock"
MODEL_LOCK_WAIT_SECONDS = 120.0  # publish, retention and rollback each hold the lock for a few file operations
_LOCK_POLL_SECONDS = 0.05
_POINTER_MAX_BYTES = 64 * 1024

# A name is one path segment that cannot be "." or "..": it must start with a letter or digit.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A model file inside its version folder: one path segment, never "." or "..".
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SEQUENCER = re.compile(r"[0-9A-Fa-f]{1,64}")
_VERSION_STAMP = "%Y%m%dT%H%M%SZ"  # how version names start (staging.version_name)


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise InvalidModelNameError(
            f"invalid model name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def validate_version_name(version: str) -> str:
    if not isinstance(version, str) or not _VERSION_NAME.fullmatch(version):
        raise InvalidModelNameError(f"invalid model version {version!r}")
    return version


@dataclass(frozen=True)
class Manifest:
    """What was published: where it came from and what the bytes on disk are."""

    name: str
    version: str
    file: str
    format: str
    bytes: int
    sha256: str
    staged_at: str
    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    s3_checksum: dict[str, str] | None = None
    # Facts learnt while staging (pickle protocol, library versions, imported globals, ...).
    details: dict[str, Any] = field(default_factory=dict)
    # Where the upload stands in S3's order (UploadOrder): the object's LastModified (ISO 8601, UTC) and the
    # S3 event's sequencer (None when staged without an event, e.g. `bigpickle stage`).
    last_modified: str | None = None
    sequencer: str | None = None
    # The model's input columns (bigpickle.features.Feature.as_dict), when staging could load the model to
    # learn them; otherwise the predict side learns them from the model it loads.
    features: list[dict[str, Any]] | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse and check a manifest; ValueError says what is wrong with it."""
        data = _json_object(text)
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data)
            raise ValueError(f"fields are missing: {', '.join(missing)}") from None
        manifest.check()
        return manifest

    def check(self) -> None:
        """ValueError unless every field a reader relies on is well-formed (the file stays inside its folder)."""
        problems = []
        if not isinstance(self.name, str) or not _MODEL_NAME.fullmatch(self.name):
            problems.append("the model name is malformed")
        if not isinstance(self.version, str) or not _VERSION_NAME.fullmatch(self.version):
            problems.append("the version is malformed")
        if not isinstance(self.file, str) or not _FILE_NAME.fullmatch(self.file):
            problems.append("the file is not a plain file name")
        if self.format not in KNOWN_FORMATS:
            problems.append(f"the format is not one of {', '.join(sorted(KNOWN_FORMATS))}")
        if not isinstance(self.bytes, int) or isinstance(self.bytes, bool) or self.bytes < 0:
            problems.append("bytes is not a size")
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            problems.append("sha256 is not a hex digest")
        if not isinstance(self.details, dict):
            problems.append("details is not an object")
        if self.sequencer is not None and (
            not isinstance(self.sequencer, str) or not _SEQUENCER.fullmatch(self.sequencer)
        ):
            problems.append("the sequencer is not hexadecimal")
        if problems:
            raise ValueError("; ".join(problems))


def _json_object(text: str | bytes) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:  # UnicodeDecodeError included
        raise ValueError("it is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("it is not a JSON object")
    return data


@dataclass(frozen=True)
class UploadOrder:
    """Where a published version stands among the model's uploads, in S3's own order.

    For one key, S3 orders events by their `sequencer` (hex strings of any length: left-pad, then compare);
    across keys, or without an event (`bigpickle stage`), the object's LastModified, then its version id.
    The version name breaks the remaining ties, so the order is total and the same on every retry."""

    version: str
    bucket: str
    key: str
    last_modified: datetime
    version_id: str | None = None
    sequencer: str | None = None

    @classmethod
    def of(cls, manifest: Manifest) -> UploadOrder:
        return cls(
            version=manifest.version,
            bucket=manifest.bucket,
            key=manifest.key,
            last_modified=_upload_time(manifest),
            version_id=manifest.version_id,
            sequencer=manifest.sequencer,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "last_modified": self.last_modified.isoformat()}

    @classmethod
    def from_dict(cls, data: Any) -> UploadOrder:
        """ValueError when `data` is not what to_dict wrote."""
        try:
            order = cls(**{**data, "last_modified": datetime.fromisoformat(data["last_modified"])})
        except (TypeError, KeyError, AttributeError):
            raise ValueError("not an upload order") from None
        if not _VERSION_NAME.fullmatch(str(order.version)) or order.last_modified.tzinfo is None:
            raise ValueError("not an upload order")
        return order

    def compare(self, other: UploadOrder) -> int:
        """<0, 0, >0 as `self` was uploaded before, as, or after `other`."""
        if (self.bucket, self.key) == (other.bucket, other.key) and self.sequencer and other.sequencer:
            width = max(len(self.sequencer), len(other.sequencer))
            mine, theirs = self.sequencer.upper().rjust(width, "0"), other.sequencer.upper().rjust(width, "0")
            if mine != theirs:
                return -1 if mine < theirs else 1
        mine_key = (self.last_modified, self.version_id or "", self.version)
        theirs_key = (other.last_modified, other.version_id or "", other.version)
        return (mine_key > theirs_key) - (mine_key < theirs_key)

    def newer_than(self, other: UploadOrder) -> bool:
        return self.compare(other) > 0


def _upload_time(manifest: Manifest) -> datetime:
    """LastModified; manifests written before it was recorded fall back to the version name's stamp."""
    for text, parse in (
        (manifest.last_modified, datetime.fromisoformat),
        (manifest.version[: len("20261126T120000Z")], lambda t: datetime.strptime(t, _VERSION_STAMP)),
        (manifest.staged_at, datetime.fromisoformat),
    ):
        try:
            moment = parse(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def newest_first(orders: list[UploadOrder]) -> list[UploadOrder]:
    return sorted(orders, key=cmp_to_key(lambda a, b: b.compare(a)))


@dataclass(frozen=True)
class Pointer:
    """The `current` file: the version readers serve and the newest upload decided about (None: written
    before that was recorded, the current version's own order stands in)."""

    version: str
    newest: UploadOrder | None = None

    def to_json(self) -> bytes:
        newest = self.newest.to_dict() if self.newest else None
        return json.dumps({"version": self.version, "newest": newest}).encode()

    @classmethod
    def from_json(cls, text: bytes) -> Pointer:
        """ValueError says what is wrong: not JSON, no version, a malformed version."""
        data = _json_object(text)
        if not isinstance(data.get("version"), str):
            raise ValueError('it has no "version"')
        if not _VERSION_NAME.fullmatch(data["version"]):
            raise ValueError("its version is malformed")
        try:
            newest = UploadOrder.from_dict(data["newest"]) if data.get("newest") is not None else None
        except ValueError:
            newest = None  # only writers use it; they fall back to the published manifests
        return cls(data["version"], newest)


@dataclass(frozen=True)
class Publication:
    """What publishing (or finishing an interrupted publish of) a version did to `current`."""

    version: str
    current: str  # the version `current` points at afterwards
    switched: bool  # whether this call moved `current`
    reason: str | None = None  # why `version` is not current

    @property
    def is_current(self) -> bool:
        return self.current == self.version


_LOCAL_LOCKS: set[str] = set()
_LOCAL_LOCKS_GUARD = threading.Lock()
_MODEL_LOCKS: dict[str, threading.Lock] = {}  # threads of one process wait here before taking the file lock


def _hide(path: Path) -> Path | None:
    """Rename out of sight, to delete later: nobody finds a half-deleted version under its name."""
    trash = path.with_name(f".{path.name}.{os.getpid()}.deleting")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return None
    return trash


def _remove_tree(path: Path) -> None:
    trash = _hide(path)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path, wait_seconds: float, what: str) -> Iterator[None]:
    """Hold an exclusive fcntl.lockf lock on `path` (NFS-safe, released when a holder dies), waiting at most
    `wait_seconds` for it, first among this process's threads, then among processes."""
    key = str(path)
    deadline = time.monotonic() + wait_seconds
    with _LOCAL_LOCKS_GUARD:
        local = _MODEL_LOCKS.setdefault(key, threading.Lock())
    if not local.acquire(timeout=wait_seconds):
        raise StoreBusyError(f"{what} is busy: another change held its lock for over {wait_seconds:.0f} s")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as error:
                    if error.errno not in (errno.EACCES, errno.EAGAIN):
                        raise
                if time.monotonic() >= deadline:
                    raise StoreBusyError(f"{what} is busy: another process held its lock for over {wait_seconds:.0f} s")
                time.sleep(_LOCK_POLL_SECONDS)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        local.release()


class ModelStore:
    """Reads and writes the version layout under one root (the EFS mount, or a local folder)."""

    def __init__(self, root: Path | str, *, lock_wait_seconds: float = MODEL_LOCK_WAIT_SECONDS) -> None:
        self.root = Path(root)
        self.lock_wait_seconds = lock_wait_seconds

    # -- paths (every path below the root goes through a validated name) --

    def model_dir(self, name: str) -> Path:
        return self.root / validate_model_name(name)

    def version_dir(self, name: str, version: str) -> Path:
        return self.model_dir(name) / VERSIONS_DIR / validate_version_name(version)

    def incoming_dir(self, name: str, version: str) -> Path:
        return self.model_dir(name) / INCOMING_DIR / validate_version_name(version)

    # -- reading (everything read is validated; a bad file affects its model only) --

    def list_models(self) -> list[str]:
        """Models with a readable `current` pointer (one whose pointer is invalid is logged and left out, so
        listing the others keeps working)."""
        if not self.root.is_dir():
            return []
        names = []
        for path in sorted(self.root.iterdir()):
            if not _MODEL_NAME.fullmatch(path.name) or not (path / CURRENT_FILE).exists():
                continue
            try:
                self.current_version(path.name)
            except ModelInvalidError as exc:
                logger.warning("model left out of the listing", extra={"model": path.name, "error": exc.message})
                continue
            names.append(path.name)
        return names

    def list_versions(self, name: str) -> list[str]:
        versions = self.model_dir(name) / VERSIONS_DIR
        if not versions.is_dir():
            return []
        return sorted(
            p.name for p in versions.iterdir() if _VERSION_NAME.fullmatch(p.name) and (p / MANIFEST_FILE).is_file()
        )

    def has_version(self, name: str, version: str) -> bool:
        return (self.version_dir(name, version) / MANIFEST_FILE).is_file()

    def current_version(self, name: str) -> str | None:
        """The published version readers should serve, or None when the model was never staged."""
        pointer = self._read_pointer(name)
        return pointer.version if pointer else None

    def read_manifest(self, name: str, version: str | None = None) -> Manifest:
        """The manifest of `version`, or of the current version."""
        if version is None:
            version = self.current_version(name)
            if version is None:
                if self.model_dir(name).is_dir():
                    raise ModelNotReadyError(f"model {name!r} has no published version yet", retry_after_seconds=30)
                raise ModelNotFoundError(f"model {name!r} is not staged")
        path = self.version_dir(name, version) / MANIFEST_FILE
        try:
            manifest = Manifest.from_json(path.read_text())
            if (manifest.name, manifest.version) != (name, version):
                raise ValueError("it describes another model or version")
        except FileNotFoundError:
            raise ModelNotReadyError(
                f"model {name!r} points at version {version!r}, which has no manifest: re-stage or roll back"
            ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelInvalidError(
                f"model {name!r} version {version!r} has an invalid manifest ({exc}): roll back to another "
                f"version (`bigpickle rollback {name}`) or upload the model again"
            ) from None
        return manifest

    def model_path(self, manifest: Manifest) -> Path:
        return self.version_dir(manifest.name, manifest.version) / manifest.file

    def _read_pointer(self, name: str) -> Pointer | None:
        try:
            with open(self.model_dir(name) / CURRENT_FILE, "rb") as f:
                text = f.read(_POINTER_MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        try:
            if len(text) > _POINTER_MAX_BYTES:
                raise ValueError("it is too large")
            return Pointer.from_json(text)
        except ValueError as exc:
            raise ModelInvalidError(
                f"model {name!r} has an invalid current-version pointer ({exc}): point it at a published "
                f"version (`bigpickle rollback {name} VERSION`) or upload the model again"
            ) from None

    def _orders(self, name: str) -> list[UploadOrder]:
        """The published versions whose manifests are readable, oldest upload first."""
        orders = []
        for version in self.list_versions(name):
            try:
                orders.append(UploadOrder.of(self.read_manifest(name, version)))
            except ModelNotReadyError as exc:  # unreadable: neither ordered nor removed
                logger.warning("version left out", extra={"model": name, "version": version, "error": exc.message})
        return newest_first(orders)[::-1]

    # -- writing (staging side) --

    def prepare_incoming(self, name: str, version: str) -> Path:
        """The folder to stage a version into. What a killed run left there is kept: the transfer's
        journal decides whether it can be resumed (call with the version's lock held)."""
        incoming = self.incoming_dir(name, version)
        incoming.mkdir(parents=True, exist_ok=True)
        return incoming

    @contextlib.contextmanager
    def lock_version(self, name: str, version: str) -> Iterator[bool]:
        """Hold the staging lock of one version while the block runs; yields False (without waiting) when
        another stager holds it. `incoming/<version>.lock` with fcntl.lockf: POSIX record locks are what
        NFSv4 (EFS) implements server-side, and the server drops them when a holder's lease expires, so a
        SIGKILLed or timed-out Lambda never leaves a stale lock (flock is emulated with the same locks on
        Linux NFS clients; O_EXCL lock files would outlive a crash)."""
        path = self.model_dir(name) / INCOMING_DIR / f"{validate_version_name(version)}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        key = str(path)
        with _LOCAL_LOCKS_GUARD:  # POSIX locks are per process: threads of one process need this too
            busy = key in _LOCAL_LOCKS
            _LOCAL_LOCKS.add(key)
        if busy:
            yield False
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                yield False
                return
            try:
                yield True
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            with _LOCAL_LOCKS_GUARD:
                _LOCAL_LOCKS.discard(key)

    @contextlib.contextmanager
    def lock_model(self, name: str) -> Iterator[None]:
        """Hold the model's lock: every change of its state (publish, the pointer switch, retention, rollback)
        runs under it. `<name>/model.lock` with fcntl.lockf, NFS-safe as the version locks are; it waits
        (at most `lock_wait_seconds`, then StoreBusyError, which a retry fixes). Lock order: a version's lock,
        then the model's, never the reverse while waiting."""
        model_dir = self.model_dir(name)
        if not model_dir.is_dir():
            raise ModelNotFoundError(f"model {name!r} is not staged")
        with _file_lock(model_dir / MODEL_LOCK_FILE, self.lock_wait_seconds, f"model {name!r}"):
            yield

    def discard_incoming(self, name: str, version: str) -> None:
        shutil.rmtree(self.incoming_dir(name, version), ignore_errors=True)

    def publish(self, manifest: Manifest) -> Publication:
        """Move a completed incoming folder into versions/ (each step atomic), then move `current` to it if it
        is the newest upload decided about so far. A run killed between the two is finished by the next call
        (or by `complete_publish`)."""
        manifest.check()
        with self.lock_model(manifest.name):
            if not self.has_version(manifest.name, manifest.version):
                self._move_into_versions(manifest)
            return self._advance_current(manifest.name, manifest.version)

    def complete_publish(self, name: str, version: str) -> Publication:
        """For a version already in versions/: move `current` to it unless a newer upload or a rollback was
        decided since (what a retried event does after a stager died before switching the pointer)."""
        with self.lock_model(name):
            return self._advance_current(name, version)

    def _move_into_versions(self, manifest: Manifest) -> None:
        incoming = self.incoming_dir(manifest.name, manifest.version)
        model_file = incoming / manifest.file
        if not model_file.is_file():
            raise FileNotFoundError(f"cannot publish {manifest.name}/{manifest.version}: the model file is missing")
        for leftover in incoming.glob(".*.tmp"):  # a temp file of a run killed mid-write
            leftover.unlink(missing_ok=True)
        write_file_atomically(incoming / MANIFEST_FILE, manifest.to_json().encode())
        fsync_path(model_file)
        final = self.version_dir(manifest.name, manifest.version)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(incoming, final)
        fsync_path(final.parent)

    def _advance_current(self, name: str, version: str) -> Publication:
        order = UploadOrder.of(self.read_manifest(name, version))
        try:
            pointer = self._read_pointer(name)
        except ModelInvalidError as exc:  # repair: the newest published upload becomes current
            logger.warning("replacing an invalid current pointer", extra={"model": name, "error": exc.message})
            newest = newest_first(self._orders(name))[0]
            self._write_pointer(name, Pointer(newest.version, newest))
            return Publication(version, newest.version, True, None if newest == order else "a newer upload is current")
        if pointer is None:
            self._write_pointer(name, Pointer(version, order))
            return Publication(version, version, True)
        if pointer.version == version:
            return Publication(version, version, False)
        decided = pointer.newest or self._order_of(name, pointer.version)
        if decided is None or order.newer_than(decided):
            self._write_pointer(name, Pointer(version, order))
            return Publication(version, version, True)
        if decided.version == pointer.version:
            reason = f"version {pointer.version!r}, the current one, is a newer upload"
        else:
            reason = (
                f"version {pointer.version!r} was rolled back to after {decided.version!r}, a newer upload; "
                "the rollback holds until a newer upload arrives"
            )
        return Publication(version, pointer.version, False, reason)

    def _order_of(self, name: str, version: str) -> UploadOrder | None:
        try:
            return UploadOrder.of(self.read_manifest(name, version))
        except ModelNotReadyError:
            return None

    def _write_pointer(self, name: str, pointer: Pointer) -> None:
        write_file_atomically(self.model_dir(name) / CURRENT_FILE, pointer.to_json())

    def prune(self, name: str, keep: int) -> list[str]:
        """Keep the newest `keep` uploads among the published versions, and always the current one; remove
        the rest, and incoming copies of versions older than the newest published one that nobody is
        staging. Runs under the model's lock, so a publish or rollback cannot move `current` meanwhile; the
        bytes are deleted after the lock is released. Returns the versions removed."""
        trash: list[Path] = []
        with self.lock_model(name):
            try:
                current = self.current_version(name)
            except ModelInvalidError:
                logger.warning("retention skipped: the current pointer is invalid", extra={"model": name})
                return []
            ordered = [o.version for o in self._orders(name)]
            kept = set(ordered[-keep:] if keep > 0 else []) | {current}
            removed = [v for v in ordered if v not in kept]
            trash += [t for t in (_hide(self.version_dir(name, v)) for v in removed) if t is not None]
            newest = max(self.list_versions(name), default=None)
            incoming = self.model_dir(name) / INCOMING_DIR
            stale = [p.name for p in incoming.iterdir() if p.is_dir()] if incoming.is_dir() else []
            for version in stale:
                if newest is not None and _VERSION_NAME.fullmatch(version) and version < newest:
                    with self.lock_version(name, version) as held:
                        hidden = _hide(self.incoming_dir(name, version)) if held else None
                        trash += [hidden] if hidden else []
        for path in trash:
            shutil.rmtree(path, ignore_errors=True)
        return removed

    def roll_back(self, name: str, version: str | None = None) -> tuple[str | None, str]:
        """Serve `version`, or the upload before the current one; returns (previous, now current). The rollback
        counts as a decision about every version published so far: only a newer upload moves `current` again."""
        if not self.model_dir(name).is_dir():
            raise ModelNotFoundError(f"model {name!r} is not staged")
        with self.lock_model(name):
            try:
                pointer = self._read_pointer(name)
            except ModelInvalidError:
                pointer = None  # a rollback is how an invalid pointer is repaired
            current = pointer.version if pointer else None
            orders = self._orders(name)
            published = [o.version for o in orders]
            if version is None:
                older = published[: published.index(current)] if current in published else []
                if not older:
                    raise ModelNotFoundError(f"model {name!r} has no version older than {current!r} to roll back to")
                version = older[-1]
            elif version not in published:
                raise ModelNotFoundError(f"model {name!r} has no published version {validate_version_name(version)!r}")
            decided = [o for o in (pointer.newest if pointer else None, *orders) if o is not None]
            self._write_pointer(name, Pointer(version, newest_first(decided)[0]))
        return current, version

    def set_current(self, name: str, version: str) -> None:
        """Point readers at a published version: a rollback to it."""
        self.roll_back(name, version)

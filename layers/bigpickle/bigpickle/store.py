"""The EFS layout: version folders, manifests and the current-version pointer. No network.

    <root>/<name>/current                  {"version": "..."}; replaced by rename, so readers see old or new
    <root>/<name>/versions/<version>/      manifest.json + the model file; never modified once published
    <root>/<name>/incoming/<version>/      staging in progress (temp file + resume journal); renamed into
                                           versions/ when complete and verified
    <root>/<name>/incoming/<version>.lock  held (fcntl) by the one stager copying that version

A version name is derived from the S3 object version (its LastModified and ETag), so a duplicate
event for the same object maps to the same folder and is recognised as already published.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bigpickle.errors import InvalidModelNameError, ModelNotFoundError, ModelNotReadyError

MANIFEST_FILE = "manifest.json"
CURRENT_FILE = "current"
VERSIONS_DIR = "versions"
INCOMING_DIR = "incoming"

# A name is one path segment that cannot be "." or "..": it must start with a letter or digit.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

MODEL_FORMATS = {".pkl": "pickle", ".pickle": "pickle", ".joblib": "joblib", ".bpk": "bigpickle"}


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


def model_format(filename: str) -> str | None:
    """The serialisation format a file name implies, or None when it is not a model file."""
    return MODEL_FORMATS.get(Path(filename).suffix.lower())


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
    # The model's input columns (bigpickle.features.Feature.as_dict), when staging could load the model to
    # learn them; otherwise the predict side learns them from the model it loads.
    features: list[dict[str, Any]] | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's metadata to stable storage (a rename is durable only after this)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write beside the target, fsync, rename: readers see the old content or the new, never a mix.
    `data` is the bytes, or a function that writes them to the file (a model too big to hold twice)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_path(path.parent)


_LOCAL_LOCKS: set[str] = set()
_LOCAL_LOCKS_GUARD = threading.Lock()


def _remove_tree(path: Path) -> None:
    """Rename out of sight first, then delete: nobody finds a half-deleted version under its name."""
    trash = path.with_name(f".{path.name}.{os.getpid()}.deleting")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


class ModelStore:
    """Reads and writes the version layout under one root (the EFS mount, or a local folder)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # -- paths (every path below the root goes through a validated name) --

    def model_dir(self, name: str) -> Path:
        return self.root / validate_model_name(name)

    def version_dir(self, name: str, version: str) -> Path:
        return self.model_dir(name) / VERSIONS_DIR / validate_version_name(version)

    def incoming_dir(self, name: str, version: str) -> Path:
        return self.model_dir(name) / INCOMING_DIR / validate_version_name(version)

    # -- reading --

    def list_models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if _MODEL_NAME.fullmatch(p.name) and (p / CURRENT_FILE).exists()
        )

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
        try:
            text = (self.model_dir(name) / CURRENT_FILE).read_text()
        except FileNotFoundError:
            return None
        return validate_version_name(json.loads(text)["version"])

    def read_manifest(self, name: str, version: str | None = None) -> Manifest:
        """The manifest of `version`, or of the current version."""
        if version is None:
            version = self.current_version(name)
            if version is None:
                if self.model_dir(name).is_dir():
                    raise ModelNotReadyError(f"model {name!r} has no published version yet", retry_after_seconds=30)
                raise ModelNotFoundError(f"model {name!r} is not staged under {self.root}")
        path = self.version_dir(name, version) / MANIFEST_FILE
        try:
            return Manifest.from_json(path.read_text())
        except FileNotFoundError:
            raise ModelNotReadyError(
                f"model {name!r} points at version {version!r}, which has no manifest: re-stage or roll back"
            ) from None

    def model_path(self, manifest: Manifest) -> Path:
        return self.version_dir(manifest.name, manifest.version) / manifest.file

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

    def discard_incoming(self, name: str, version: str) -> None:
        shutil.rmtree(self.incoming_dir(name, version), ignore_errors=True)

    def publish(self, manifest: Manifest) -> Path:
        """Move a completed incoming folder into versions/ and make it current, each step atomic."""
        incoming = self.incoming_dir(manifest.name, manifest.version)
        model_file = incoming / manifest.file
        if not model_file.is_file():
            raise FileNotFoundError(f"cannot publish {manifest.name}/{manifest.version}: {model_file} is missing")
        write_file_atomically(incoming / MANIFEST_FILE, manifest.to_json().encode())
        fsync_path(model_file)
        final = self.version_dir(manifest.name, manifest.version)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(incoming, final)
        fsync_path(final.parent)
        self.set_current(manifest.name, manifest.version)
        return final

    def prune(self, name: str, keep: int) -> list[str]:
        """Keep the newest `keep` published versions (and always the current one); remove the rest, and
        incoming copies of versions older than the newest kept one that nobody is staging. Version names
        sort by upload time. Returns the versions removed."""
        current = self.current_version(name)
        versions = self.list_versions(name)
        kept = set(versions[-keep:] if keep > 0 else []) | {current}
        removed = [v for v in versions if v not in kept]
        for version in removed:
            _remove_tree(self.version_dir(name, version))
        newest = versions[-1] if versions else None
        incoming = self.model_dir(name) / INCOMING_DIR
        stale = [p.name for p in incoming.iterdir() if p.is_dir()] if incoming.is_dir() else []
        for version in stale:
            if newest is not None and version < newest:
                with self.lock_version(name, version) as held:
                    if held:
                        _remove_tree(self.incoming_dir(name, version))
        return removed

    def set_current(self, name: str, version: str) -> None:
        """Point readers at a published version (also how a rollback works)."""
        if not self.has_version(name, version):
            raise ModelNotFoundError(f"model {name!r} has no published version {version!r}")
        write_file_atomically(self.model_dir(name) / CURRENT_FILE, json.dumps({"version": version}).encode())

"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import copy
import hashlib
import pickle
from typing import Any
from urllib.parse import quote_plus

from bigpickle.local.events import load_event

BUCKET = "bigpickle-test-models"


def s3_put_event(bucket: str, key: str) -> dict[str, Any]:
    """events/s3-put.json, re-addressed (keys in S3 events are URL-encoded, as here)."""
    event = copy.deepcopy(load_event("s3-put"))
    record = event["Records"][0]["s3"]
    record["bucket"]["name"] = bucket
    record["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    record["object"]["key"] = quote_plus(key, safe="/")
    return event


def upload_model(client: Any, model: Any, key: str, bucket: str = BUCKET, protocol: int = 5) -> bytes:
    data = pickle.dumps(model, protocol=protocol)
    client.put_object(Bucket=bucket, Key=key, Body=data)
    return data


def publish_model(
    root: Any,
    name: str,
    model: Any,
    version: str = "20261126T120000Z-abc",
    *,
    suffix: str = ".pkl",
    protocol: int = 5,
    details: dict[str, Any] | None = None,
    features: list[dict[str, Any]] | None = None,
) -> Any:
    """Put a model on the EFS stand-in the way staging does (incoming folder, manifest, publish)."""
    from bigpickle.loading import format_of, save_model
    from bigpickle.store import Manifest, ModelStore

    store = ModelStore(root)
    path = store.prepare_incoming(name, version) / f"model{suffix}"
    fmt = format_of(path)
    if fmt == "pickle":
        with open(path, "wb") as f:
            pickle.dump(model, f, protocol=protocol)
    else:
        save_model(model, path, fmt)
    manifest = Manifest(
        name=name,
        version=version,
        file=path.name,
        format=fmt,
        bytes=path.stat().st_size,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),  # loading refuses a file that differs
        staged_at="2026-11-26T12:00:00+00:00",
        bucket="b",
        key=f"models/{name}/model{suffix}",
        etag='"abc"',
        details=details or {},
        features=features,
    )
    store.publish(manifest)
    return manifest


def weights_pickle(megabytes: int, seed: int = 0) -> bytes:
    """A model-like pickle for staging tests: one incompressible float64 numpy array, protocol 5."""
    import numpy as np
    from bigpickle.units import MiB

    return pickle.dumps(np.random.default_rng(seed).random(megabytes * MiB // 8), protocol=5)


def published_bytes(store: Any, name: str = "weights") -> bytes:
    """`name`'s current version loaded as the predict function loads it, pickled again with protocol 5: equal
    to a protocol-5 upload's bytes exactly when staging kept every byte of the object (it publishes the
    rewritten, mapped layout, not the upload's bytes)."""
    return pickle.dumps(load_published(store, name), protocol=5)


def load_published(store: Any, name: str, **options: Any) -> Any:
    """`name`'s current version as the registry loads it: checked against the manifest's digests."""
    from bigpickle.loading.formats import load_model_file

    manifest = store.read_manifest(name)
    return load_model_file(
        store.model_path(manifest),
        manifest.format,
        sha256=manifest.sha256,
        layout=manifest.details.get("layout"),
        **options,
    )


def publish_rewritten(
    root: Any, name: str, model: Any, version: str = "20261126T120000Z-abc", *, protocol: int = 4
) -> Any:
    """Publish `model` the way staging publishes a `.pkl` upload: pickled, streamed through the rewriter
    (safety.uploads), the mapped layout published with its manifest details."""
    from bigpickle.safety import Allowlist
    from bigpickle.safety.uploads import finish_upload, upload_sink
    from bigpickle.store import Manifest, ModelStore

    store = ModelStore(root)
    incoming = store.prepare_incoming(name, version)
    upload = incoming / "model.pkl"
    with open(upload, "wb") as f:
        pickle.dump(model, f, protocol=protocol)
    size, digest = upload.stat().st_size, hashlib.sha256(upload.read_bytes()).hexdigest()
    sink = upload_sink("pickle", incoming, Allowlist())
    with open(upload, "rb") as f:
        while chunk := f.read(64 << 20):
            sink.update(chunk)
    report, published = finish_upload(sink, upload, "pickle", Allowlist())
    assert published is not None, report.reasons()
    manifest = Manifest(
        name=name,
        version=version,
        file=published.file,
        format=published.format,
        bytes=size,
        sha256=digest,
        staged_at="2026-11-26T12:00:00+00:00",
        bucket="b",
        key=f"models/{name}/model.pkl",
        etag='"abc"',
        details={**report.details(), **published.details},
    )
    store.publish(manifest)
    return manifest

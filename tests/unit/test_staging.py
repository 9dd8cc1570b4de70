"""Staging against moto S3: publish once, verify, never disturb the current version on failure."""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

import pytest
from bigpickle.config import Settings
from bigpickle.errors import TransferError
from bigpickle.local.runtime import stage_handler
from bigpickle.safety.rewriter import file_checksum
from bigpickle.staging import ModelKey, StageOptions, stage_object
from bigpickle.store import ModelStore
from bigpickle.transfer import RetryPolicy
from bigpickle.units import KiB

from tests.helpers import BUCKET, published_bytes, s3_put_event, upload_model


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("models/iris/model.pkl", ModelKey("iris", "model.pkl", "pickle")),
        ("models/iris/v2.PICKLE", ModelKey("iris", "model.pickle", "pickle")),
        ("models/big/model.joblib", ModelKey("big", "model.joblib", "joblib")),
        ("models/iris/readme.txt", None),
        ("models/model.pkl", None),
        ("other/iris/model.pkl", None),
        ("models/a/b/model.pkl", None),
    ],
)
def test_only_models_name_file_keys_stage(key: str, expected: ModelKey | None) -> None:
    assert ModelKey.parse(key) == expected


def test_given_a_model_in_s3_when_staged_then_the_manifest_describes_the_bytes_on_disk(
    moto_s3: Any, store: ModelStore, settings: Settings, trained: dict[str, Any]
) -> None:
    data = upload_model(moto_s3, trained["iris"][0], "models/iris/model.pkl")

    result = stage_object(moto_s3, store, settings, BUCKET, "models/iris/model.pkl")

    assert result.status == "published"
    manifest = store.read_manifest("iris")
    on_disk = store.model_path(manifest).read_bytes()
    assert manifest.details["layout"]["file_checksum"] == file_checksum(store.model_path(manifest))
    assert manifest.details["layout"]["file_bytes"] == len(on_disk)
    assert manifest.bytes == len(data)  # provenance: the object as uploaded
    assert manifest.sha256 == hashlib.sha256(data).hexdigest()
    assert manifest.details["source"] == {"file": "model.pkl", "format": "pickle"}
    assert (manifest.bucket, manifest.key, manifest.format) == (BUCKET, "models/iris/model.pkl", "bigpickle")
    assert manifest.etag and manifest.staged_at


def test_small_parts_reassemble_exactly(
    moto_s3: Any, store: ModelStore, models_root: Any, trained: dict[str, Any]
) -> None:
    small_parts = Settings.from_env({"MODELS_ROOT": str(models_root), "STAGE_PART_SIZE_MIB": "1"})
    payload = pickle.dumps(bytes(range(256)) * (5 * KiB), protocol=5)  # 1.25 MiB: two parts, the second partial
    moto_s3.put_object(Bucket=BUCKET, Key="models/blob/model.pkl", Body=payload)

    stage_object(moto_s3, store, small_parts, BUCKET, "models/blob/model.pkl")

    assert published_bytes(store, "blob") == payload


def test_a_duplicate_event_for_the_same_object_version_is_a_no_op(
    moto_s3: Any, store: ModelStore, settings: Settings, trained: dict[str, Any]
) -> None:
    upload_model(moto_s3, trained["iris"][0], "models/iris/model.pkl")
    first = stage_object(moto_s3, store, settings, BUCKET, "models/iris/model.pkl")

    second = stage_object(moto_s3, store, settings, BUCKET, "models/iris/model.pkl")

    assert second.status == "already_published"
    assert second.version == first.version
    assert store.list_versions("iris") == [first.version]


class TruncatingClient:
    """Wraps a real client; every GET body ends early, as a dropped connection would."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        response = self._client.get_object(**kwargs)
        data = response["Body"].read()
        import io

        response["Body"] = io.BytesIO(data[: len(data) // 2])
        return response


def test_given_a_failed_staging_then_the_previous_version_keeps_serving(
    moto_s3: Any, store: ModelStore, settings: Settings, trained: dict[str, Any]
) -> None:
    upload_model(moto_s3, trained["iris"][0], "models/iris/model.pkl")
    good = stage_object(moto_s3, store, settings, BUCKET, "models/iris/model.pkl")
    upload_model(moto_s3, trained["iris-pipeline"][0], "models/iris/model.pkl")
    no_wait = StageOptions(retry=RetryPolicy(attempts=2, sleep=lambda _s: None))

    with pytest.raises(TransferError, match="ended after"):
        stage_object(TruncatingClient(moto_s3), store, settings, BUCKET, "models/iris/model.pkl", options=no_wait)

    assert store.current_version("iris") == good.version
    assert store.list_versions("iris") == [good.version]
    manifest = store.read_manifest("iris")
    assert file_checksum(store.model_path(manifest)) == good_sha256(store)


def good_sha256(store: ModelStore) -> str:
    return store.read_manifest("iris").details["layout"]["file_checksum"]


def test_non_model_keys_are_skipped_not_failed(moto_s3: Any, store: ModelStore, settings: Settings) -> None:
    moto_s3.put_object(Bucket=BUCKET, Key="models/iris/README.txt", Body=b"notes")

    result = stage_object(moto_s3, store, settings, BUCKET, "models/iris/README.txt")

    assert result.status == "skipped"
    assert store.list_models() == []


def test_the_stage_handler_url_decodes_keys_from_the_event(
    moto_s3: Any, lambda_env: Any, context: Any, trained: dict[str, Any]
) -> None:
    key = "models/iris v2/model.pkl"  # arrives as models/iris+v2/model.pkl
    refused = stage_handler()(s3_put_event(BUCKET, key), context)["results"][0]
    assert refused["status"] == "skipped" and "invalid model name 'iris v2'" in refused["reason"]
    upload_model(moto_s3, trained["iris"][0], "models/iris_v2/model+final.pkl")

    result = stage_handler()(s3_put_event(BUCKET, "models/iris_v2/model+final.pkl"), context)

    assert result["results"][0]["status"] == "published"
    stored = ModelStore(lambda_env)
    model = pickle.loads(stored.model_path(stored.read_manifest("iris_v2")).read_bytes())
    assert type(model).__name__ == "RandomForestClassifier"

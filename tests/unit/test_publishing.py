"""Publishing never goes backwards and never loses a version: S3's order decides what is current, rollbacks
hold, a publish killed at any step is finished by the retried event, and the event's records are independent.

In-process tests use moto; the crash tests kill real stager processes (against a moto server on 127.0.0.1)
with an audit hook on the renames publishing is made of."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from bigpickle.cli import main as cli_main
from bigpickle.config import Settings
from bigpickle.errors import UnstageableObjectError
from bigpickle.local.events import load_event
from bigpickle.local.runtime import stage_handler
from bigpickle.observability import metrics
from bigpickle.staging import ModelKey, S3Record, raise_for_retry, stage_event, stage_object
from bigpickle.store import ModelStore, UploadOrder
from bigpickle.warmup import request_warmups
from botocore.exceptions import EndpointConnectionError
from moto.server import ThreadedMotoServer

from tests.helpers import BUCKET, publish_model, upload_model

KEY = "models/iris/model.pkl"
S3_SECOND = 1.1  # HEAD's LastModified has whole seconds: uploads this far apart are ordered by it


def s3_event(*records: dict[str, Any]) -> dict[str, Any]:
    """events/s3-put.json with one record per (key, version id, sequencer, event name)."""
    template = load_event("s3-put")["Records"][0]
    event_records = []
    for record in records:
        entry = copy.deepcopy(template)
        entry["eventName"] = record.get("event_name", "ObjectCreated:Put")
        entry["s3"]["bucket"]["name"] = BUCKET
        entry["s3"]["object"]["key"] = quote_plus(record["key"], safe="/")
        entry["s3"]["object"]["sequencer"] = record.get("sequencer", "0A1B2C3D4E5F678901")
        if record.get("version_id"):
            entry["s3"]["object"]["versionId"] = record["version_id"]
        event_records.append(entry)
    return {"Records": event_records}


def put(client: Any, model: Any, key: str = KEY) -> str | None:
    """Upload and return the new object version's id."""
    upload_model(client, model, key)
    return client.head_object(Bucket=BUCKET, Key=key).get("VersionId")


# Real stager processes killed or racing each other take seconds each: `make test` runs them, the quick
# `make check` does not.
real_stager_processes = pytest.mark.slow


@pytest.fixture
def versioned(moto_s3: Any) -> Any:
    moto_s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return moto_s3


@pytest.fixture
def handler(lambda_env: Path) -> Any:
    metrics.clear_metrics()
    return stage_handler()


def statuses(response: dict[str, Any]) -> list[str]:
    return [r["status"] for r in response["results"]]


# -- newest wins --


def test_an_older_event_arriving_after_a_newer_one_is_published_for_rollback_but_not_current(
    versioned: Any, handler: Any, context: Any, store: ModelStore, trained: dict[str, Any]
) -> None:
    # given two uploads to one key; S3's sequencers differ in length (compare after left-padding)
    older = {"key": KEY, "version_id": put(versioned, trained["iris"][0]), "sequencer": "FF"}
    newer = {"key": KEY, "version_id": put(versioned, trained["iris-pipeline"][0]), "sequencer": "0100"}

    # when the newer upload's event arrives first and the older one's after it
    first = handler(s3_event(newer), context)["results"][0]
    late = handler(s3_event(older), context)["results"][0]

    # then the newer stays current and the older is published, saying why it is not current
    assert (first["status"], late["status"]) == ("published", "published_not_current")
    assert store.current_version("iris") == first["version"]
    assert f"{first['version']!r}, the current one, is a newer upload" in late["reason"]
    assert sorted(store.list_versions("iris")) == sorted([first["version"], late["version"]])
    assert store.read_manifest("iris", late["version"]).sequencer == "FF"


def test_for_one_key_the_sequencer_outranks_last_modified() -> None:
    # a multipart upload's LastModified is when it started: the later event can carry the earlier time
    started_first = UploadOrder("v-a", BUCKET, KEY, datetime(2026, 11, 26, 12, 0, tzinfo=UTC), sequencer="0200")
    finished_first = UploadOrder("v-b", BUCKET, KEY, datetime(2026, 11, 26, 12, 5, tzinfo=UTC), sequencer="01FF")
    elsewhere = UploadOrder("v-c", BUCKET, "models/iris/other.pkl", datetime(2026, 11, 26, 12, 1, tzinfo=UTC))

    assert started_first.newer_than(finished_first) and not finished_first.newer_than(started_first)
    assert elsewhere.newer_than(started_first)  # across keys, LastModified


def test_across_keys_and_for_bigpickle_stage_the_later_upload_wins(
    moto_s3: Any, store: ModelStore, settings: Settings, trained: dict[str, Any]
) -> None:
    upload_model(moto_s3, trained["iris"][0], "models/iris/model.pkl")
    time.sleep(S3_SECOND)
    upload_model(moto_s3, trained["iris-pipeline"][0], "models/iris/model.pickle")

    newer = stage_object(moto_s3, store, settings, BUCKET, "models/iris/model.pickle")
    older = stage_object(moto_s3, store, settings, BUCKET, "models/iris/model.pkl")

    assert (newer.status, older.status) == ("published", "published_not_current")
    assert store.current_version("iris") == newer.version


def test_a_rollback_holds_against_redelivered_and_late_events_until_a_newer_upload(
    versioned: Any, handler: Any, context: Any, store: ModelStore, models_root: Path, trained: dict[str, Any]
) -> None:
    model = trained["iris"][0]  # each upload differs (version names include the ETag)
    v1, v1_5, v2 = ({"key": KEY, "version_id": put(versioned, [model, i]), "sequencer": f"0{i}"} for i in (1, 2, 3))
    first = handler(s3_event(v1), context)["results"][0]["version"]
    second = handler(s3_event(v2), context)["results"][0]["version"]
    assert cli_main(["rollback", "iris", "--models-root", str(models_root)]) == 0
    assert store.current_version("iris") == first

    # a re-delivered event of the version rolled away from, and a late event of an upload before it
    redelivered = handler(s3_event(v2), context)["results"][0]
    late = handler(s3_event(v1_5), context)["results"][0]

    assert redelivered["status"] == "already_published"
    assert late["status"] == "published_not_current" and "rollback holds" in late["reason"]
    assert store.current_version("iris") == first

    # a newer upload ends the rollback
    v3 = {"key": KEY, "version_id": put(versioned, [model, 4]), "sequencer": "04"}
    newest = handler(s3_event(v3), context)["results"][0]
    assert newest["status"] == "published"
    assert store.current_version("iris") == newest["version"] != second


# -- event hygiene --


def test_one_bad_record_does_not_stop_the_others_and_only_stageable_ones_are_staged(
    moto_s3: Any,
    handler: Any,
    context: Any,
    store: ModelStore,
    models_root: Path,
    trained: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = trained["iris"][0]
    never_stageable = [
        "models/bad name/model.pkl",  # names the store refuses
        "models/" + "x" * 129 + "/model.pkl",
        "models/caf\u00e9/model.pkl",
        "models//iris/model.pkl",  # not canonical: an empty segment
    ]
    for key in never_stageable:
        upload_model(moto_s3, model, key)
    moto_s3.put_object(Bucket=BUCKET, Key="models/empty/model.pkl", Body=b"")
    upload_model(moto_s3, model, KEY)
    keys = [*never_stageable, "models/empty/model.pkl", "models/./model.pkl", "models/iris/model.pkl/", KEY]

    response = handler(s3_event(*({"key": k} for k in keys)), context)

    assert statuses(response) == ["skipped"] * (len(keys) - 1) + ["published"]
    reasons = [r["reason"] for r in response["results"][:-1]]
    assert "invalid model name 'bad name'" in reasons[0] and "is empty" in reasons[4]
    assert sorted(p.name for p in models_root.iterdir()) == ["iris"]  # no folder left for the empty object
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emitted[-1]["StagingRecordsSkipped"] == [1.0] * (len(keys) - 1)


@pytest.mark.parametrize(
    "key",
    ["models//iris/model.pkl", "models/iris/model.pkl/", "models/iris/./model.pkl", "models/./iris/model.pkl",
     "./models/iris/model.pkl", "models/../iris/model.pkl", "models/iris//model.pkl", "/models/iris/model.pkl"],
)  # fmt: skip
def test_keys_with_empty_or_dot_segments_or_a_trailing_slash_are_not_model_keys(key: str) -> None:
    assert ModelKey.parse(key) is None


def test_delete_events_are_skipped_without_asking_s3(
    versioned: Any, handler: Any, context: Any, store: ModelStore, trained: dict[str, Any]
) -> None:
    put(versioned, trained["iris"][0])
    marker = versioned.delete_object(Bucket=BUCKET, Key=KEY)["VersionId"]  # HEAD of a delete marker: 405
    event = load_event("s3-delete")
    event["Records"][0]["s3"]["bucket"]["name"] = BUCKET
    event["Records"][0]["s3"]["object"]["versionId"] = marker
    removed = {**event["Records"][0], "eventName": "ObjectRemoved:Delete"}

    response = handler({"Records": [*event["Records"], removed]}, context)

    assert statuses(response) == ["skipped", "skipped"]
    assert "ObjectRemoved:DeleteMarkerCreated is not an ObjectCreated event" in response["results"][0]["reason"]
    assert store.list_models() == []


def test_a_zero_byte_object_is_refused_and_leaves_no_model_behind(
    moto_s3: Any, store: ModelStore, settings: Settings, models_root: Path
) -> None:
    moto_s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"")

    with pytest.raises(UnstageableObjectError, match="is empty"):
        stage_object(moto_s3, store, settings, BUCKET, KEY)

    assert list(models_root.iterdir()) == []


class UnreachableFor:
    """A real client, except that HEAD of one key fails as a network outage does (a retry may fix it)."""

    def __init__(self, client: Any, key: str) -> None:
        self._client, self._key = client, key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def head_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"] == self._key:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
        return self._client.head_object(**kwargs)


def test_a_failure_a_retry_can_fix_fails_the_event_after_the_other_records_are_staged_and_warmed(
    moto_s3: Any, store: ModelStore, settings: Settings, context: Any, trained: dict[str, Any]
) -> None:
    upload_model(moto_s3, trained["iris"][0], "models/flaky/model.pkl")
    upload_model(moto_s3, trained["iris"][0], KEY)
    records = [S3Record(BUCKET, "models/flaky/model.pkl"), S3Record(BUCKET, KEY)]
    event = s3_event({"key": "models/flaky/model.pkl"}, {"key": KEY})
    client = UnreachableFor(moto_s3, "models/flaky/model.pkl")

    results = stage_event(
        event, context, client=client, store=store, settings=settings, invoke=lambda _p: None, records=records
    )
    warmed: list[dict[str, Any]] = []
    request_warmups(warmed.append, results)

    assert [r.status for r in results] == ["failed", "published"]
    assert [w["detail"]["model"] for w in warmed] == ["iris"]
    with pytest.raises(EndpointConnectionError):
        raise_for_retry(results)


# -- crash-consistent publish: kill a real stager between "copy complete" and "current switched" --


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto S3 server on 127.0.0.1 that stager processes reach through AWS_ENDPOINT_URL_S3."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.session.Session().client("s3")  # the default session would keep these credentials
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()


# Publishing is made of renames: the manifest into the incoming folder, the folder into versions/, the new
# `current` over the old. The hook SIGKILLs the stager just before the one named.
KILLED_STAGER = """
import os, signal, sys
from pathlib import Path
root, bucket, key, step = sys.argv[1:5]

def kill_before_the_rename(event, args):
    if event != "os.rename":
        return
    target = Path(os.fsdecode(args[1]))
    if {"manifest": target.name == "manifest.json", "version folder": target.parent.name == "versions",
        "current pointer": target.name == "current"}[step]:
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(kill_before_the_rename)
import boto3
from bigpickle.config import Settings
from bigpickle.staging import stage_object
from bigpickle.store import ModelStore, UploadOrder
stage_object(boto3.client("s3"), ModelStore(root), Settings.from_env({"MODELS_ROOT": root}), bucket, key)
"""


def kill_stager_before(step: str, models_root: Path, key: str) -> None:
    stager = subprocess.run(
        [sys.executable, "-c", KILLED_STAGER, str(models_root), BUCKET, key, step], env=os.environ, timeout=120
    )
    assert stager.returncode == -9, "the stager was not killed at the step"


def retry(client: Any, store: ModelStore, settings: Settings, context: Any, key: str) -> tuple[Any, list[Any]]:
    """The retried S3 event, as the stage handler runs it: stage, then the warm-ups for what was published."""
    results = stage_event(
        s3_event({"key": key}),
        context,
        client=client,
        store=store,
        settings=settings,
        invoke=lambda _p: None,
        records=[S3Record(BUCKET, key)],
    )
    warmed: list[dict[str, Any]] = []
    request_warmups(warmed.append, results)
    return results[0], warmed


@real_stager_processes
@pytest.mark.parametrize("step", ["manifest", "version folder", "current pointer"])
def test_a_stager_killed_at_any_publish_step_is_finished_by_the_retried_event(
    s3_endpoint: Any, store: ModelStore, settings: Settings, models_root: Path, context: Any, step: str
) -> None:
    upload_model(s3_endpoint, {"weights": list(range(1000))}, KEY)

    kill_stager_before(step, models_root, KEY)
    assert store.current_version("iris") is None

    result, warmed = retry(s3_endpoint, store, settings, context, KEY)

    assert result.status == "published"
    assert store.current_version("iris") == result.version
    # staging publishes the rewritten, mapped layout; the upload file is not kept
    assert sorted(os.listdir(store.version_dir("iris", result.version))) == ["manifest.json", "model.bpk"]
    assert warmed == [{"source": "bigpickle.warmup", "detail": {"model": "iris", "version": result.version}}]


@real_stager_processes
@pytest.mark.parametrize("since", ["a newer upload", "a rollback"])
def test_a_killed_publish_does_not_override_what_came_after_it(
    s3_endpoint: Any, store: ModelStore, settings: Settings, models_root: Path, context: Any, since: str
) -> None:
    older = "models/iris/model.pickle"
    upload_model(s3_endpoint, {"weights": [0]}, older)
    first = stage_object(s3_endpoint, store, settings, BUCKET, older).version
    time.sleep(S3_SECOND)
    upload_model(s3_endpoint, {"weights": [1]}, KEY)
    kill_stager_before("current pointer", models_root, KEY)
    if since == "a newer upload":
        time.sleep(S3_SECOND)
        upload_model(s3_endpoint, {"weights": [2]}, "models/iris/model.joblib.pkl")
        expected = stage_object(s3_endpoint, store, settings, BUCKET, "models/iris/model.joblib.pkl").version
    else:
        assert cli_main(["rollback", "iris", first, "--models-root", str(models_root)]) == 0
        expected = first

    result, warmed = retry(s3_endpoint, store, settings, context, KEY)

    assert result.status == "already_published"
    assert store.current_version("iris") == expected
    assert warmed == []


# -- one lock per model: retention racing publishes and rollbacks --


# Retention in its own process; just before it hides the first version it removes, a rollback to that
# version starts in another process (the store call `bigpickle rollback NAME VERSION` makes), and retention
# waits up to 5 s for it before going on.
ROLLBACK = (
    "import sys; from bigpickle.store import ModelStore; ModelStore(sys.argv[1]).set_current('iris', sys.argv[2])"
)
PRUNE_RACING_ROLLBACK = """
import os, subprocess, sys
root, target, rollback_script = sys.argv[1:4]
rollback = []

def start_rollback_before_the_first_removal(event, args):
    if event == "os.rename" and os.fsdecode(args[1]).endswith(".deleting") and not rollback:
        rollback.append(subprocess.Popen([sys.executable, "-c", rollback_script, root, target]))
        try:
            rollback[0].wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

sys.addaudithook(start_rollback_before_the_first_removal)
from bigpickle.store import ModelStore, UploadOrder
print(ModelStore(root).prune("iris", keep=1), flush=True)
rollback[0].wait(timeout=60)
"""


@real_stager_processes
def test_a_rollback_racing_retention_never_leaves_current_on_a_removed_version(
    store: ModelStore, models_root: Path, trained: dict[str, Any]
) -> None:
    versions = ["20261126T120000Z-aaa", "20261126T130000Z-bbb", "20261126T140000Z-ccc"]
    for version in versions:
        publish_model(models_root, "iris", trained["iris"][0], version)

    subprocess.run([sys.executable, "-c", PRUNE_RACING_ROLLBACK, str(models_root), versions[0], ROLLBACK], timeout=120)

    current = store.read_manifest("iris")  # the pointer names a version that exists
    assert store.model_path(current).is_file()
    assert current.version in store.list_versions("iris")


CONCURRENT_STAGER = """
import json, sys, boto3
from bigpickle.config import Settings
from bigpickle.staging import stage_object
from bigpickle.store import ModelStore, UploadOrder
root, bucket, key = sys.argv[1:4]
settings = Settings.from_env({"MODELS_ROOT": root, "KEEP_VERSIONS": "1"})
print(json.dumps(stage_object(boto3.client("s3"), ModelStore(root), settings, bucket, key).as_dict()))
"""


@real_stager_processes
def test_concurrent_stagers_with_retention_leave_the_newest_upload_current_and_never_a_dangling_pointer(
    s3_endpoint: Any, store: ModelStore, models_root: Path
) -> None:
    # given three uploads in order, the oldest by far the largest (it finishes copying last)
    keys = ["models/iris/a.pkl", "models/iris/b.pkl", "models/iris/c.pkl"]
    for i, key in enumerate(keys):
        upload_model(s3_endpoint, {"weights": bytes(8 * 1024 * 1024 if i == 0 else 10)}, key)
        time.sleep(S3_SECOND if i < 2 else 0)
    dangling: list[str] = []

    # when three stagers publish them at once with KEEP_VERSIONS=1, while a reader follows the pointer
    command = [sys.executable, "-c", CONCURRENT_STAGER, str(models_root), BUCKET]
    stagers = [subprocess.Popen([*command, key], stdout=subprocess.PIPE, text=True) for key in keys]
    while any(s.poll() is None for s in stagers):
        version = store.current_version("iris") if (models_root / "iris").is_dir() else None
        if version is not None and not store.has_version("iris", version) and store.current_version("iris") == version:
            dangling.append(version)
        time.sleep(0.005)
    results = [json.loads(s.communicate(timeout=120)[0].splitlines()[-1]) for s in stagers]

    # then the newest upload is current, it alone is kept, and the pointer never named a removed version
    newest = results[2]["version"]
    assert store.current_version("iris") == newest
    assert store.list_versions("iris") == [newest]
    assert dangling == []


def test_a_refused_rollback_says_why_without_a_trace(
    store: ModelStore, models_root: Path, trained: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    publish_model(models_root, "iris", trained["iris"][0], "20261126T120000Z-aaa")

    assert cli_main(["rollback", "iris", "20990101T000000Z-nope", "--models-root", str(models_root)]) == 1
    assert cli_main(["rollback", "iris", "--models-root", str(models_root)]) == 1

    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        "bigpickle: model_not_found: model 'iris' has no published version '20990101T000000Z-nope'",
        "bigpickle: model_not_found: model 'iris' has no version older than '20261126T120000Z-aaa' to roll back to",
    ]
    assert store.current_version("iris") == "20261126T120000Z-aaa"

"""The `bigpickle` command as a user meets it: every mistake is answered with one line that says what to
fix and a non-zero exit status, never a traceback (unless --debug asks for one). The real console script
runs in a subprocess; S3 is the real local server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bigpickle.cli import main
from bigpickle.local.s3server import LocalS3Server
from bigpickle.store import ModelStore

from tests.helpers import BUCKET, upload_model

BIGPICKLE = str(Path(sys.executable).with_name("bigpickle"))
MODEL_URL = f"s3://{BUCKET}/models/iris/model.pkl"


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user with no AWS configuration at all (no keys, no profile, no instance role)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    home = tmp_path / "home"
    home.mkdir()
    return {
        **env,
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def bigpickle(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIGPICKLE, *args], env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_answer(run: subprocess.CompletedProcess[str], status: int, *says: str) -> None:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == status, run.stderr
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    for phrase in says:
        assert phrase in lines[0]


# Every test here runs the real `bigpickle` script in a fresh interpreter (seconds each): they run in
# `make test`, not in the quick `make check`.
pytestmark = pytest.mark.slow


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_given_no_aws_credentials_when_staging_then_one_line_says_which_variables_to_set(
    clean_env: dict[str, str],
) -> None:
    run = bigpickle("stage", MODEL_URL, env=clean_env)

    assert_one_line_answer(run, 1, "bigpickle: no AWS credentials", "AWS_ACCESS_KEY_ID", "AWS_PROFILE")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not-a-url", "'not-a-url' is not an S3 URL: write s3://BUCKET/models/NAME/FILE.pkl"),
        (f"s3://{BUCKET}", "is not an S3 URL"),
        (f"s3://{BUCKET}/notes/readme.txt", "is not a model's key: write s3://bigpickle-test-models/models/NAME/FILE"),
        (f"s3://{BUCKET}/models/no spaces/model.pkl", "invalid model name 'no spaces'"),
    ],
    ids=["no-scheme", "no-key", "not-a-model-key", "bad-model-name"],
)
def test_given_a_malformed_s3_url_then_one_line_shows_the_shape_expected(
    clean_env: dict[str, str], url: str, says: str
) -> None:
    run = bigpickle("stage", url, env=clean_env)

    assert_one_line_answer(run, 2, "bigpickle stage: argument S3_URI:", says, "(see bigpickle stage --help)")


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["inspect", "{missing}"], id="inspect"),
        pytest.param(["convert", "{missing}", "{out}"], id="convert"),
    ],
)
def test_given_a_missing_file_then_one_line_names_it(
    clean_env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    paths = {"missing": str(tmp_path / "missing.pkl"), "out": str(tmp_path / "out.bpk")}

    run = bigpickle(*[part.format(**paths) for part in command], env=clean_env)

    assert_one_line_answer(run, 1, f"no such file: {paths['missing']}")
    assert not (tmp_path / "out.bpk").exists()


def test_given_a_folder_where_a_model_file_belongs_then_one_line_says_so(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    run = bigpickle("inspect", str(tmp_path), env=clean_env)

    assert_one_line_answer(run, 1, f"{tmp_path} is a folder: give the path of a model file")


def test_given_a_file_that_is_no_pickle_when_converting_then_one_line_says_why_it_is_refused(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    notes = tmp_path / "notes.pkl"
    notes.write_text("hello")

    run = bigpickle("convert", str(notes), str(tmp_path / "out.bpk"), env=clean_env)

    assert_one_line_answer(run, 1, "bigpickle: unsafe_model: refused an unsafe pickle: not a pickle of protocol 2")


def test_given_an_unreachable_endpoint_then_one_line_names_it_within_seconds(clean_env: dict[str, str]) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = {**clean_env, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}

    run = bigpickle("stage", MODEL_URL, env=env)

    assert_one_line_answer(run, 1, f"cannot reach {endpoint}", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def s3_env(clean_env: dict[str, str], s3_server: LocalS3Server) -> dict[str, str]:
    return {**clean_env, **s3_server.env()}


def test_given_a_bucket_that_does_not_exist_then_one_line_says_which(s3_env: dict[str, str]) -> None:
    run = bigpickle("stage", "s3://no-such-bucket/models/iris/model.pkl", env=s3_env)

    assert_one_line_answer(run, 1, "bucket 'no-such-bucket' does not exist")


def test_given_a_key_that_does_not_exist_then_one_line_says_which(s3_env: dict[str, str], models_root: Path) -> None:
    run = bigpickle("stage", f"s3://{BUCKET}/models/ghost/model.pkl", "--models-root", str(models_root), env=s3_env)

    assert_one_line_answer(run, 1, f"bucket '{BUCKET}' has no object 'models/ghost/model.pkl'")
    assert list(models_root.iterdir()) == []


def test_given_wrong_credentials_then_one_line_says_to_check_them(s3_env: dict[str, str]) -> None:
    run = bigpickle("stage", MODEL_URL, env={**s3_env, "AWS_SECRET_ACCESS_KEY": "wrong"})

    assert_one_line_answer(run, 1, "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_given_a_model_that_does_not_exist_when_rolling_back_then_one_line_says_so(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    run = bigpickle("rollback", "ghost", "--models-root", str(tmp_path), env=clean_env)

    assert_one_line_answer(run, 1, "bigpickle: model_not_found:", "'ghost'")


def test_given_a_port_in_use_when_serving_then_one_line_says_to_pick_another(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = bigpickle("serve", "--models-root", str(tmp_path), "--port", str(taken.getsockname()[1]), env=clean_env)

    assert_one_line_answer(run, 1, "the port is in use: pick another with --port")


@pytest.mark.parametrize("where", ["before", "after"])
def test_with_debug_a_mistake_shows_its_traceback(clean_env: dict[str, str], tmp_path: Path, where: str) -> None:
    missing = str(tmp_path / "missing.pkl")
    args = ["--debug", "inspect", missing] if where == "before" else ["inspect", missing, "--debug"]

    run = bigpickle(*args, env=clean_env)

    assert run.returncode == 1
    assert "Traceback (most recent call last)" in run.stderr
    assert "FileNotFoundError" in run.stderr


def test_stage_publishes_into_models_root_without_changing_the_environment(
    real_s3: Any, trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upload_model(real_s3, trained["iris"][0], "models/iris/model.pkl")
    before = dict(os.environ)

    status = main(["stage", MODEL_URL, "--models-root", str(tmp_path), "--verbose"])  # verbose: log level untouched

    assert status == 0
    assert '"status": "published"' in capsys.readouterr().out
    assert ModelStore(tmp_path).current_version("iris") is not None
    assert dict(os.environ) == before

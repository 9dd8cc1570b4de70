"""`make local-invoke` (sam local invoke in the local Lambda image) with every sample event in events/:
each gives the answer the README documents. The stage function reads the local S3 server; the predict
function serves the models folder (read-only at /var/task/models)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from bigpickle.local.demo import request_rows
from bigpickle.local.events import events_dir, load_event
from bigpickle.store import ModelStore

from tests.helpers import publish_model
from tests.infra.conftest import REPO
from tests.infra.lambda_smoke import dataframe_pipeline

# event file -> (function, HTTP status or None for a non-HTTP answer)
EXPECTED = {
    "s3-put.json": ("StageFunction", None),
    "s3-delete.json": ("StageFunction", None),
    "warmup.json": ("PredictFunction", None),
    "health.json": ("PredictFunction", 200),
    "list-models.json": ("PredictFunction", 200),
    "metadata.json": ("PredictFunction", 200),
    "predict-single.json": ("PredictFunction", 200),
    "predict-batch.json": ("PredictFunction", 200),
    "predict-by-feature-name.json": ("PredictFunction", 200),
    "predict-dataframe.json": ("PredictFunction", 200),
    "bad-request.json": ("PredictFunction", 400),
    "malformed-json.json": ("PredictFunction", 400),
}
INVOKE_TIMEOUT_SECONDS = 300


def local_invoke(build_dir: Path, models: Path, function: str, event: str, env: dict[str, str]) -> dict[str, Any]:
    """`make local-invoke` as the README shows it; the function's answer is the last line of its output."""
    command = [
        "make", "--no-print-directory", "local-invoke", f"FUNCTION={function}", f"EVENT=events/{event}",
        f"MODELS_DIR={models}", f"LOCAL_BUILD_DIR={build_dir}",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=INVOKE_TIMEOUT_SECONDS,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tabular_model(staged_models: Path) -> Any:
    """The DataFrame pipeline events/predict-dataframe.json asks, published beside iris."""
    model = dataframe_pipeline()
    publish_model(staged_models, "tabular", model)
    for path in (staged_models / "tabular").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the functions run as another user, as on Lambda
    return model


def test_every_sample_event_has_a_documented_answer_here() -> None:
    assert sorted(path.name for path in events_dir().glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("event", sorted(EXPECTED))
def test_given_the_built_stack_when_sam_local_invokes_a_sample_event_then_it_answers_as_documented(
    event: str,
    lambda_image: str,
    sam_build: Path,
    staged_models: Path,
    iris_upload: dict[str, Any],
    trained: dict[str, tuple[Any, Any]],
    memory_sizes: dict[str, int],
    tabular_model: Any,
) -> None:
    function, status = EXPECTED[event]
    answer = local_invoke(sam_build, staged_models, function, event, iris_upload["env"])
    current = ModelStore(staged_models).current_version("iris")

    if event == "s3-put.json":
        # Staged from the local S3 server inside the stage container (into its own /tmp: SAM mounts nothing
        # writable; tests/lambda/test_pipeline_containers.py stages into a shared folder).
        assert "results" in answer, answer
        [result] = answer["results"]
        assert result["status"] == "published" and result["model"] == "iris", answer
        return
    if event == "s3-delete.json":
        # A delete is not a model to stage: skipped without a request to S3, and the invocation succeeds.
        [result] = answer["results"]
        assert result["status"] == "skipped" and result["reason"], answer
        return
    if event == "warmup.json":
        assert answer["status"] == "ready" and answer["model"] == "iris" and answer["version"] == current, answer
        return
    assert answer["statusCode"] == status, answer
    body = json.loads(answer["body"])
    model = trained["iris"][0]
    if event == "predict-dataframe.json":
        import pandas as pd

        rows = pd.DataFrame(json.loads(load_event(event)["body"])["instances"])
        assert body["predictions"] == tabular_model.predict(rows).tolist()
    elif event.startswith("predict-"):
        sent = load_event(event)
        expected = model.predict(request_rows(sent, list(model.feature_names_in_))).tolist()
        assert body["predictions"] == expected and body["model_version"] == current
    elif event == "health.json":
        assert body == {"status": "loadable", "model": "iris", "version": current}
    elif event == "metadata.json":
        assert body["name"] == "iris" and body["version"] == current
    elif event == "list-models.json":
        tabular = ModelStore(staged_models).current_version("tabular")
        listed = sorted((m["name"], m["current_version"]) for m in body["models"])
        assert listed == [("iris", current), ("tabular", tabular)]
        assert body["memory"]["limit_bytes"] == memory_sizes["PredictFunction"] * 2**20  # SAM sets it from MemorySize
    else:
        assert body["error"]["code"] and body["error"]["message"], body

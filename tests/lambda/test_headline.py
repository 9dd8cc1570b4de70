"""Issue 12's headline: in a Lambda container whose memory limit is less than half the model's bytes, a
model holding one numpy array larger than 2**31 - 1 bytes is staged from the local S3 server, loaded
mapped and served; its predictions equal the in-process model's and the container is never killed. Prints
the warm predict latency beside the same model in an unlimited container.

The upload is a plain protocol-5 `.pkl`, as the seed's team would upload it: staging rewrites it into the
mapped layout, and the predict function maps it by default (MODEL_MMAP is not set)."""

from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from bigpickle.local.events import load_event
from bigpickle.local.s3server import LocalS3Server
from sklearn.neighbors import KNeighborsRegressor

from tests.helpers import BUCKET, s3_put_event
from tests.infra.conftest import REPO

from .harness import LambdaContainer, api_event

UPLOAD_SUFFIX = ".pkl"  # ".bpk" uploads a layout made by `bigpickle convert` instead
PREDICT_ENV = {"MODEL_NAME": "huge"}
ARRAY_BYTES = 2**31 + 64 * 2**20  # one array just past what a signed 32-bit length can say
FEATURES = 16
WARM_REQUESTS = 5


def build_model(path: Path) -> tuple[list[list[float]], list[float], int]:
    """Fit a brute-force neighbours model on one >2 GiB array and write it as uploaded; return
    (query rows, in-process predictions, model bytes). The model leaves this process's memory."""
    rows = ARRAY_BYTES // (FEATURES * 8)
    features = np.random.default_rng(12).random((rows, FEATURES))
    model = KNeighborsRegressor(n_neighbors=1, algorithm="brute").fit(features, features[:, 0])
    queries = features[[0, rows // 2, rows - 1]] + 1e-9
    expected = model.predict(queries).tolist()
    assert model._fit_X.nbytes > 2**31 - 1
    pickled = path.with_suffix(".pkl")
    with open(pickled, "wb") as f:
        pickle.dump(model, f, protocol=5)
    del model, features
    gc.collect()
    if UPLOAD_SUFFIX != ".pkl":
        bigpickle = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "bigpickle"
        subprocess.run([str(bigpickle), "convert", str(pickled), str(path)], check=True, capture_output=True)
        pickled.unlink()
    return queries.tolist(), expected, path.stat().st_size


def serve(container: LambdaContainer, body: str) -> tuple[list[float], list[float]]:
    """Load the model (warm-up event), then predict WARM_REQUESTS times: (predictions, seconds per request)."""
    warm = container.invoke(load_event("warmup") | {"detail": {"model": "huge", "version": None}})
    assert warm["status"] == "ready", (warm, container.logs())
    seconds, answers = [], []
    for _ in range(WARM_REQUESTS + 1):
        started = time.perf_counter()
        status, answer = container.http(api_event("/v1/models/huge:predict", "POST", body))
        seconds.append(time.perf_counter() - started)
        assert status == 200, answer
        answers.append(answer["predictions"])
    assert all(answer == answers[0] for answer in answers)
    return answers[0], seconds[1:]


@pytest.mark.slow
def test_given_a_model_twice_the_container_memory_then_it_is_staged_mapped_and_served_without_a_kill(
    lambda_image: str, sam_build: Path, s3_server: LocalS3Server, memory_sizes: dict[str, int], tmp_path: Path
) -> None:
    upload = tmp_path / f"model{UPLOAD_SUFFIX}"
    models = tmp_path / "efs"
    models.mkdir()
    os.chown(models, 1000, 1000)
    key = f"models/huge/model{UPLOAD_SUFFIX}"
    client = s3_server.client()
    try:
        queries, expected, model_bytes = build_model(upload)
        limit_mib = model_bytes // 2 // 2**20 - 64  # less than half the model
        client.upload_file(str(upload), BUCKET, key)
        upload.unlink()
        stage_env = {**s3_server.env(), "PREDICT_FUNCTION_NAME": ""}
        with LambdaContainer(sam_build, "StageFunction", memory_sizes["StageFunction"], models, stage_env) as stage:
            staged = stage.invoke(s3_put_event(BUCKET, key), timeout=900)
        assert staged["results"][0]["status"] == "published", staged
        client.delete_object(Bucket=BUCKET, Key=key)

        body = json.dumps({"instances": queries})
        with LambdaContainer(sam_build, "PredictFunction", limit_mib, models, PREDICT_ENV) as limited:
            limited_answer, limited_seconds = serve(limited, body)
            limited_state = limited.state()
            limited_peak = limited.cgroup_memory("max_usage_in_bytes")
        with LambdaContainer(sam_build, "PredictFunction", None, models, PREDICT_ENV) as unlimited:
            unlimited_answer, unlimited_seconds = serve(unlimited, body)
    finally:
        shutil.rmtree(models, ignore_errors=True)
        upload.unlink(missing_ok=True)
        client.delete_object(Bucket=BUCKET, Key=key)

    assert limit_mib * 2**20 < model_bytes / 2
    assert limited_answer == unlimited_answer == expected
    assert limited_state["Running"] and not limited_state["OOMKilled"]
    print(
        f"\nmodel {model_bytes / 2**30:.2f} GiB ({UPLOAD_SUFFIX}, one {ARRAY_BYTES / 2**30:.2f} GiB array); "
        f"warm predict, median of {WARM_REQUESTS}: {statistics.median(limited_seconds) * 1000:.0f} ms in a "
        f"{limit_mib} MiB container (peak {limited_peak >> 20} MiB charged, not killed), "
        f"{statistics.median(unlimited_seconds) * 1000:.0f} ms unlimited"
    )

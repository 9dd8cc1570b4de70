"""The whole pipeline with each function in its Lambda container: the same built artifacts and image, the
stage container writing the models folder the predict container reads (read-only), MemorySize as the limit."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bigpickle.local.events import load_event

from .harness import EFS_MOUNT, LambdaContainer

PREDICT_EVENTS = ("predict-single", "predict-batch", "predict-by-feature-name")


def event_rows(event: dict[str, Any], feature_names: list[str]) -> list[list[float]]:
    from bigpickle.local.demo import request_rows

    return request_rows(event, feature_names).tolist()


def test_given_a_model_in_s3_when_the_stage_container_stages_it_then_the_predict_container_serves_it(
    lambda_image: str,
    sam_build: Path,
    iris_upload: dict[str, Any],
    memory_sizes: dict[str, int],
    trained: dict[str, tuple[Any, Any]],
    tmp_path: Path,
) -> None:
    models = tmp_path / "efs"
    models.mkdir()
    os.chown(models, 1000, 1000)  # the access point's owner
    stage_env = {**iris_upload["env"], "PREDICT_FUNCTION_NAME": ""}

    with LambdaContainer(sam_build, "StageFunction", memory_sizes["StageFunction"], models, stage_env) as stage:
        staged = stage.invoke(load_event("s3-put"))
        again = stage.invoke(load_event("s3-put"))
        stage_limits = (stage.host_config(), stage.cgroup_memory("limit_in_bytes"))

    [result] = staged["results"]
    assert result["status"] == "published", staged
    assert again["results"][0]["status"] == "already_published"
    manifest = json.loads((models / "iris" / "versions" / result["version"] / "manifest.json").read_text())
    assert manifest["key"] == iris_upload["key"]

    model = trained["iris"][0]
    with LambdaContainer(
        sam_build, "PredictFunction", memory_sizes["PredictFunction"], models, {"MODEL_NAME": "iris"}
    ) as predict:
        warm = predict.invoke(load_event("warmup"))
        answers = {name: predict.http(load_event(name)) for name in PREDICT_EVENTS}
        writes = {
            path: predict.exec("touch", f"{path}/written-by-predict")
            for path in (EFS_MOUNT, "/var/task", "/opt", "/tmp")
        }
        predict_limits = (predict.host_config(), predict.cgroup_memory("limit_in_bytes"))

    assert warm["status"] == "ready" and warm["version"] == result["version"], warm
    for name, (status, body) in answers.items():
        expected = model.predict(event_rows(load_event(name), list(model.feature_names_in_))).tolist()
        assert status == 200 and body["predictions"] == expected, (name, body)
        assert body["model_version"] == result["version"]
    # Lambda's file system: only /tmp is writable; the predict function's access point is read-only.
    assert writes["/tmp"].returncode == 0
    for path in (EFS_MOUNT, "/var/task", "/opt"):
        assert "Read-only file system" in writes[path].stderr, (path, writes[path])
    # MemorySize is the hard limit the kernel enforces, without swap.
    for function, (host_config, limit) in (("StageFunction", stage_limits), ("PredictFunction", predict_limits)):
        assert limit == host_config["Memory"] == host_config["MemorySwap"] == memory_sizes[function] * 2**20
        assert host_config["ReadonlyRootfs"] is True and host_config["NetworkMode"] == "host"

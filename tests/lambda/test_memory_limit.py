"""Memory as a hard limit: the capacity guard answers 503 insufficient_memory before a load the container
could not hold, the container survives it, a model that fits still loads, and the figures the guard reads
are the ones the kernel enforces (cgroup v1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from bigpickle.local.events import load_event
from sklearn.neighbors import KNeighborsRegressor

from tests.helpers import publish_model

from .harness import LambdaContainer, api_event, docker

LIMIT_MIB = 384
TOO_BIG_BYTES = 480 * 2**20  # load cost 1.0x for a protocol-5 pickle: more than the whole limit
FEATURES = 64


def test_given_a_container_smaller_than_a_model_then_predict_answers_503_and_the_container_lives_on(
    lambda_image: str, sam_build: Path, trained: dict[str, tuple[Any, Any]], tmp_path: Path
) -> None:
    models = tmp_path / "efs"
    rows = TOO_BIG_BYTES // (FEATURES * 8)
    features = np.random.default_rng(0).random((rows, FEATURES))
    big = KNeighborsRegressor(n_neighbors=1, algorithm="brute").fit(features, features[:, 0])
    del features
    publish_model(models, "big", big, version="20261130T120000Z-big")
    del big
    iris = trained["iris"][0]
    publish_model(models, "iris", iris)
    for folder in [models, *models.rglob("*")]:
        folder.chmod(0o755 if folder.is_dir() else 0o644)

    with LambdaContainer(sam_build, "PredictFunction", LIMIT_MIB, models, {"MODEL_NAME": "iris"}) as predict:
        row = "[" + ", ".join(["0.5"] * FEATURES) + "]"
        refused_status, refused = predict.http(api_event("/v1/models/big:predict", "POST", f'{{"instances": [{row}]}}'))
        runtime_after_refusal = runtime_pid(predict)
        served_status, served = predict.http(load_event("predict-single"))
        _, listing = predict.http(load_event("list-models"))
        limit = predict.cgroup_memory("limit_in_bytes")
        usage = predict.cgroup_memory("usage_in_bytes")
        anonymous = predict.cgroup_memory_stat()["total_rss"]
        rss = resident_bytes(runtime_pid(predict))
        runtime_at_end = runtime_pid(predict)
        state = predict.state()

    assert refused_status == 503 and refused["error"]["code"] == "insufficient_memory", refused
    assert f"this function has {LIMIT_MIB} MiB" in refused["error"]["message"]
    assert served_status == 200
    assert served["predictions"] == iris.predict(np.array([[5.1, 3.5, 1.4, 0.2]])).tolist()
    # Never killed: the container runs, the kernel's OOM killer never fired in it, and the function's
    # process that refused the load is the one that served the next requests.
    assert state["Running"] and not state["OOMKilled"]
    assert runtime_after_refusal == runtime_at_end
    # What the guard reads against what the kernel enforces: the function's memory is the cgroup's limit,
    # and what it counts as used (the process's RSS before any model, plus the models it holds) is at least
    # the anonymous memory the cgroup holds, the part the kernel cannot reclaim and kills for. RSS also
    # counts shared library pages, some charged to other cgroups: the guard errs on the safe side.
    memory = listing["memory"]
    assert memory["limit_bytes"] == limit == LIMIT_MIB * 2**20
    assert 0 < anonymous <= memory["baseline_bytes"] + memory["models_bytes"]
    assert rss > 0 and anonymous <= usage <= limit
    print(f"\nguard: limit {memory['limit_bytes'] >> 20} MiB, baseline {memory['baseline_bytes'] >> 20} MiB, "
          f"models {memory['models_bytes'] >> 20} MiB; cgroup: limit {limit >> 20} MiB, usage {usage >> 20} MiB, "
          f"anonymous {anonymous >> 20} MiB; function process RSS {rss >> 20} MiB")  # fmt: skip


def runtime_pid(container: LambdaContainer) -> str:
    """The host pid of the function's Python process (the runtime interface client), from `docker top`."""
    processes = docker("top", container.name, "-o", "pid,args").splitlines()[1:]
    return next(line.split()[0] for line in processes if "awslambdaric" in line)


def resident_bytes(pid: str) -> int:
    """Resident memory (VmRSS) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kib * 1024

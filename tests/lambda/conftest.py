"""Fixtures for the functions in a real Lambda runtime: a Docker daemon, the local image, one `sam build`.

On a fresh machine (CI: root, no stdin) the session installs Docker from the distribution's packages,
starts `dockerd` when none answers, builds the image with `make local-image` (cached: the image carries its
recipe), and at the end removes the containers it started and stops the daemon it started. Where Docker
cannot run, every test here fails saying what is missing: these tests are never skipped.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bigpickle.local.s3server import LocalS3Server

from tests.infra.cfn import Deployment
from tests.infra.conftest import REPO, defaults, infra_tool, sam_build, template

from .harness import CONTAINER_LABEL, IMAGE

__all__ = ["defaults", "sam_build", "template"]  # the infra fixtures, shared rather than copied

DOCKER_PACKAGES = ("docker.io", "debootstrap")
DAEMON_START_SECONDS = 60


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, stdin=subprocess.DEVNULL).returncode == 0


def install_docker() -> None:
    """Docker and debootstrap from the distribution (the image build needs debootstrap)."""
    if shutil.which("dockerd") and shutil.which("docker") and shutil.which("debootstrap"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"Docker is missing and cannot be installed here (needs root and apt-get): {DOCKER_PACKAGES}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *DOCKER_PACKAGES]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed, so Docker cannot run here:\n{result.stderr[-3000:]}")


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Docker daemon that answers; started (and stopped at the end) only when none was running."""
    install_docker()
    started: subprocess.Popen[bytes] | None = None
    if not docker_answers():
        log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
        with open(log, "wb") as out:
            started = subprocess.Popen(["dockerd"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + DAEMON_START_SECONDS
        while not docker_answers():
            if started.poll() is not None or time.monotonic() > deadline:
                started.terminate()
                pytest.fail(
                    f"dockerd did not start (cgroups, storage driver or privileges?):\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
    before = set(running_containers())
    volumes_before = set(our_volumes())
    images_before = set(dangling_images())
    try:
        yield
    finally:
        # What this session started and left behind: our own containers and SAM's Lambda containers, the
        # /opt overlay volumes of ours, the images SAM replaced.
        leftovers = [cid for cid in running_containers() if cid not in before]
        if leftovers:
            subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)
        volumes = [name for name in our_volumes() if name not in volumes_before]
        if volumes:
            subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True)
        # SAM rebuilds its image (base + layers) for each new build folder; the one it replaced is left untagged.
        images = [image for image in dangling_images() if image not in images_before]
        if images:
            subprocess.run(["docker", "rmi", *images], capture_output=True)
        if started is not None:
            started.terminate()
            try:
                started.wait(timeout=30)
            except subprocess.TimeoutExpired:
                started.kill()
                started.wait()


def running_containers() -> list[str]:
    ids: list[str] = []
    for label in (CONTAINER_LABEL, "sam.cli.container.type=lambda"):
        result = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True, check=False
        )
        ids += result.stdout.split()
    return ids


def dangling_images() -> list[str]:
    result = subprocess.run(["docker", "images", "-q", "--filter", "dangling=true"], capture_output=True, text=True)
    return result.stdout.split()


def our_volumes() -> list[str]:
    result = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label={CONTAINER_LABEL}"], capture_output=True, text=True
    )
    return result.stdout.split()


@pytest.fixture(scope="session")
def lambda_image(docker_daemon: None) -> str:
    """The local image, built by the one make target that builds it (a no-op when it is up to date)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "local-image"],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        pytest.fail(f"make local-image failed:\n{(result.stdout + result.stderr)[-5000:]}")
    return IMAGE


@pytest.fixture(scope="session")
def sam_cli() -> Path:
    return infra_tool("sam", "sam")


@pytest.fixture(scope="session")
def memory_sizes(defaults: Deployment) -> dict[str, int]:
    """Each function's MemorySize (MB) as `sam deploy` with the defaults sets it."""
    return {name: int(defaults.properties(name)["MemorySize"]) for name in ("StageFunction", "PredictFunction")}


@pytest.fixture(scope="session")
def iris_upload(s3_server: LocalS3Server, trained: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """The iris model uploaded where events/s3-put.json says it is; the S3 environment to read it."""
    from bigpickle.local.events import load_event

    record = load_event("s3-put")["Records"][0]["s3"]
    bucket, key = record["bucket"]["name"], record["object"]["key"]
    client = s3_server.client()
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key=key, Body=pickle.dumps(trained["iris"][0], protocol=5))
    return {"bucket": bucket, "key": key, "env": s3_server.env()}


@pytest.fixture(scope="session")
def staged_models(tmp_path_factory: pytest.TempPathFactory, iris_upload: dict[str, Any]) -> Path:
    """A models folder with iris staged by the library's own engine (`bigpickle stage`), as a user would."""
    root = tmp_path_factory.mktemp("models")
    bigpickle = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "bigpickle"
    command = [
        str(bigpickle),
        "stage",
        f"s3://{iris_upload['bucket']}/{iris_upload['key']}",
        "--models-root",
        str(root),
    ]
    result = subprocess.run(command, env={**os.environ, **iris_upload["env"]}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    root.chmod(0o755)  # the functions run as another user, as on Lambda
    return root

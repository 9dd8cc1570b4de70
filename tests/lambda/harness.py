"""A built function in the local Lambda image, run with `docker run` the way Lambda runs it, and invoked
through the runtime interface emulator's endpoint (how AWS documents testing Lambda container images).

What Lambda gives a function and this reproduces: the code read-only at /var/task, the layers merged
read-only under /opt (an overlay of the built layers, later layers on top), a read-only root file system
with /tmp the only writable path, a non-root user (the EFS access point's uid/gid 1000), the function's
MemorySize as the container's hard memory limit (no swap), and the models folder at /mnt/models:
writable for the stage function, read-only for the predict function. Host network, every port free.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from bigpickle.local.s3server import free_port

IMAGE = "bigpickle-lambda-python3.13:local"  # the Makefile's BUILT_IMAGE
CONTAINER_LABEL = "bigpickle.test=lambda"
LAMBDA_USER = "1000:1000"  # the EFS access point's PosixUser (template.yaml)
EFS_MOUNT = "/mnt/models"  # FileSystemConfigs.LocalMountPath
TMP_MIB = 512  # Lambda's default ephemeral storage
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
READY_SECONDS = 30


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def built_function(build_dir: Path, function: str) -> tuple[Path, list[Path]]:
    """(code folder, layer folders in the template's order) of a function in a `sam build` folder."""
    from tests.infra.test_build import built_functions

    parts = built_functions(build_dir)[function]
    layers = [folder for part, folder in parts.items() if part != "code"]
    for folder in (build_dir, parts["code"], *layers):
        folder.chmod(0o755)  # the function's user must traverse them, as on Lambda
    return parts["code"], layers


def api_event(path: str, method: str = "GET", body: str | None = None) -> dict[str, Any]:
    """An HTTP API payload-2.0 event like those in events/, for another route or body."""
    from bigpickle.local.events import load_event

    event = load_event("health")
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    if body is not None:
        event["body"] = body
    return event


@dataclass
class LambdaContainer:
    """`with LambdaContainer(...) as fn: fn.invoke(event)`; removes its container and volume on exit."""

    build_dir: Path
    function: str  # logical id in the template
    memory_mib: int | None  # the container's hard limit; None runs it unlimited (AWS_LAMBDA_... says 10240)
    models_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    image: str = IMAGE
    name: str = field(default_factory=lambda: f"bigpickle-test-{uuid.uuid4().hex[:10]}")

    def __post_init__(self) -> None:
        self.port = free_port()
        self.volume = f"{self.name}-opt"

    @property
    def writes_models(self) -> bool:
        return self.function == "StageFunction"

    def start(self) -> LambdaContainer:
        code, layers = built_function(self.build_dir, self.function)
        lower = ":".join(str(layer) for layer in reversed(layers))  # overlay: leftmost is on top, like the last layer
        docker("volume", "create", "--label", CONTAINER_LABEL, "-d", "local", "-o", "type=overlay",
               "-o", "device=overlay", "-o", f"o=lowerdir={lower}", self.volume)  # fmt: skip
        memory = ["--memory", f"{self.memory_mib}m", "--memory-swap", f"{self.memory_mib}m"] if self.memory_mib else []
        env = {
            "AWS_LAMBDA_FUNCTION_NAME": self.function,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mib or 10240),
            "AWS_LAMBDA_FUNCTION_HANDLER": "app.lambda_handler",
            "_HANDLER": "app.lambda_handler",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_SERVICE_NAME": "bigpickle",
            "POWERTOOLS_METRICS_NAMESPACE": "bigpickle",
            "MODELS_ROOT": EFS_MOUNT,
            **self.env,
        }
        models_mode = "rw" if self.writes_models else "ro"
        docker(
            "run", "--detach", "--name", self.name, "--label", CONTAINER_LABEL,
            "--network", "host", "--read-only", "--tmpfs", f"/tmp:rw,exec,mode=1777,size={TMP_MIB}m",
            "--user", LAMBDA_USER, *memory,
            "--volume", f"{code}:/var/task:ro", "--volume", f"{self.volume}:/opt:ro",
            "--volume", f"{self.models_dir}:{EFS_MOUNT}:{models_mode}",
            *(arg for name, value in env.items() for arg in ("--env", f"{name}={value}")),
            self.image,
            "--runtime-interface-emulator-address", f"127.0.0.1:{self.port}",
            "--runtime-api-address", f"127.0.0.1:{free_port()}",
        )  # fmt: skip
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # the emulator answers (404 for /): it is up
            except OSError:
                if time.monotonic() > deadline or not self.state()["Running"]:
                    raise RuntimeError(f"{self.name} did not start:\n{self.logs()}") from None
                time.sleep(0.2)

    def invoke(self, event: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        """The function's answer to `event`, as Lambda's Invoke API returns it."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{INVOKE_PATH}", data=json.dumps(event).encode())
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # the emulator's 5xx: the function died; its log says how
            raise AssertionError(f"{self.name} answered {exc.code}: {exc.read()!r}\n{self.logs()[-6000:]}") from None

    def http(self, event: dict[str, Any], timeout: float = 300) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of an API Gateway event's answer."""
        answer = self.invoke(event, timeout)
        return answer["statusCode"], json.loads(answer["body"])

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "exec", self.name, *command], capture_output=True, text=True)

    def state(self) -> dict[str, Any]:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.name))

    def host_config(self) -> dict[str, Any]:
        return json.loads(docker("inspect", "--format", "{{json .HostConfig}}", self.name))

    def logs(self) -> str:
        return docker("logs", "--tail", "60", self.name, check=False)

    def cgroup_memory(self, name: str) -> int:
        """A cgroup v1 memory controller file of this container, read inside it (what the kernel enforces)."""
        return int(self.exec("cat", f"/sys/fs/cgroup/memory/memory.{name}").stdout)

    def cgroup_memory_stat(self) -> dict[str, int]:
        """The container's memory.stat (rss = anonymous memory, cache = page cache), read inside it."""
        lines = self.exec("cat", "/sys/fs/cgroup/memory/memory.stat").stdout.splitlines()
        return {name: int(value) for name, value in (line.split() for line in lines)}

    def stop(self) -> None:
        docker("rm", "--force", "--volumes", self.name, check=False)
        docker("volume", "rm", "--force", self.volume, check=False)

    def __enter__(self) -> LambdaContainer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

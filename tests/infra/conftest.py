"""Fixtures for the template checks: the parsed template, the infra tools, a python3.13, one `sam build`.

The tools live in .venv-infra (`make infra-tools`, which `make test` runs first). A missing tool fails the
test that needs it, with the command that installs it: these checks are never skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.cfn import Deployment, load_template

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
INFRA_VENV = Path(os.environ.get("BIGPICKLE_INFRA_VENV", REPO / ".venv-infra"))
LAMBDA_PYTHON = "python3.13"  # the template's Runtime
# The AWS tools need a region and nothing else: no credentials, no account, no network to AWS. No telemetry
# from the SAM CLI; checkov also gets --skip-download, so it asks its vendor's API for nothing.
TOOL_ENV = {"SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1", "BC_SKIP_MAPPING": "TRUE"}


def infra_tool(venv: str, name: str) -> Path:
    path = INFRA_VENV / venv / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make infra-tools` (make test does it first)")
    return path


def lambda_python_env() -> dict[str, str]:
    """The environment with the Lambda runtime's Python on PATH (pyenv keeps it under its versions)."""
    env = {**os.environ, **TOOL_ENV}
    if shutil.which(LAMBDA_PYTHON, path=env["PATH"]) and _runs(LAMBDA_PYTHON, env):
        return env
    pyenv_root = Path(env.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for candidate in sorted(pyenv_root.glob("versions/3.13*/bin"), reverse=True):
        env["PATH"] = f"{candidate}{os.pathsep}{env['PATH']}"
        if _runs(LAMBDA_PYTHON, env):
            return env
    pytest.fail(f"{LAMBDA_PYTHON} is not on PATH (nor under {pyenv_root}/versions): sam build needs it")


def _runs(python: str, env: dict[str, str]) -> bool:
    return subprocess.run([python, "-c", "pass"], env=env, capture_output=True).returncode == 0


def run(command: list[str | Path], *, env: dict[str, str] | None = None, cwd: Path = REPO) -> str:
    """Run a tool; on failure the test fails with its output."""
    result = subprocess.run(
        [str(part) for part in command],
        env=env or {**os.environ, **TOOL_ENV},
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} exited {result.returncode}:\n{output[-6000:]}")
    return output


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture(scope="session")
def defaults(template: dict[str, Any]) -> Deployment:
    """The stack `sam deploy --guided` creates when every prompt is answered with Enter."""
    return Deployment(template)


@pytest.fixture(scope="session")
def sam_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `sam build` of template.yaml into a folder outside the repository; returns that folder."""
    build_dir = tmp_path_factory.mktemp("sam-build")
    sam = infra_tool("sam", "sam")
    run(
        [sam, "build", "--template-file", TEMPLATE, "--base-dir", REPO, "--build-dir", build_dir, "--parallel"],
        env=lambda_python_env(),
    )
    return build_dir

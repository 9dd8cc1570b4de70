"""`sam build` of template.yaml for python3.13: each function fits Lambda's size limit with its layers,
and the built artifacts import and run on the runtime's Python with nothing else on the path."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.cfn import load_template
from tests.infra.conftest import LAMBDA_PYTHON, REPO, lambda_python_env, run

# Lambda: "Unzipped size must be smaller than 262144000 bytes" (250 MiB), function and all its layers.
LAMBDA_UNZIPPED_LIMIT = 262_144_000


def tree_bytes(root: Path) -> int:
    return sum(path.lstat().st_size for path in root.rglob("*") if path.is_file() or path.is_symlink())


def built_functions(build_dir: Path) -> dict[str, dict[str, Path]]:
    """function -> {"code": folder, <layer>: folder} as the built template wires them."""
    built = load_template(build_dir / "template.yaml")
    resources = built["Resources"]
    global_layers = built.get("Globals", {}).get("Function", {}).get("Layers", [])
    functions = {}
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        parts = {"code": build_dir / resource["Properties"]["CodeUri"]}
        for layer in resource["Properties"].get("Layers", global_layers):
            parts[layer["Ref"]] = build_dir / resources[layer["Ref"]]["Properties"]["ContentUri"]
        functions[name] = parts
    return functions


def test_given_the_build_then_each_function_with_its_layers_fits_in_250_mb_unzipped(
    sam_build: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    functions = built_functions(sam_build)
    assert set(functions) == {"StageFunction", "PredictFunction"}
    for name, parts in functions.items():
        sizes = {part: tree_bytes(folder) for part, folder in parts.items()}
        total = sum(sizes.values())
        shown = ", ".join(f"{part} {size / 1e6:.1f} MB" for part, size in sizes.items())
        with capsys.disabled():
            print(f"\n{name}: {shown}; total {total / 1e6:.1f} MB of {LAMBDA_UNZIPPED_LIMIT / 1e6:.1f} MB allowed")
        assert set(sizes) == {"code", "BigpickleLayer", "MlRuntimeLayer"}
        assert total < LAMBDA_UNZIPPED_LIMIT


def test_given_the_build_then_layers_leave_out_tests_dev_code_and_what_the_runtime_provides(sam_build: Path) -> None:
    code_layer = sam_build / "BigpickleLayer" / "python"
    ml_layer = sam_build / "MlRuntimeLayer" / "python"
    assert (code_layer / "bigpickle" / "serving").is_dir()
    assert not (code_layer / "bigpickle" / "local").exists()
    assert not (code_layer / "botocore").exists()
    assert not (code_layer / "boto3").exists()
    assert (ml_layer / "sklearn" / "ensemble").is_dir()
    assert not [path for path in ml_layer.rglob("tests") if path.is_dir()]
    assert list((ml_layer / "sklearn").glob("__pycache__/*.cpython-313.pyc"))


@pytest.fixture(scope="session")
def runtime_boto3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """boto3 as the Lambda runtime provides it in /var/runtime (the layers leave it out on purpose)."""
    target = tmp_path_factory.mktemp("var-runtime")
    env = lambda_python_env()
    run([LAMBDA_PYTHON, "-m", "pip", "install", "--quiet", "--root-user-action=ignore", "--target", target, "boto3"],
        env=env)  # fmt: skip
    return target


def lambda_smoke(build_dir: Path, runtime: Path, models_root: Path) -> dict[str, Any]:
    functions = built_functions(build_dir)
    layers = [folder / "python" for part, folder in functions["PredictFunction"].items() if part != "code"]
    env = {
        **lambda_python_env(),
        "MODELS_ROOT": str(models_root),
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "bigpickle",
        "PYTHONPATH": "",
    }
    result = subprocess.run(
        [
            LAMBDA_PYTHON, "-S", str(Path(__file__).with_name("lambda_smoke.py")),
            str(functions["StageFunction"]["code"]), str(functions["PredictFunction"]["code"]),
            str(REPO / "events" / "health.json"), *map(str, layers), str(runtime),
        ],
        env=env, capture_output=True, text=True, cwd=build_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_given_the_built_artifacts_when_run_on_python_3_13_alone_then_the_handlers_load_and_answer(
    sam_build: Path, runtime_boto3: Path, tmp_path: Path
) -> None:
    found = lambda_smoke(sam_build, runtime_boto3, tmp_path)

    assert found["python"] == [3, 13]
    assert found["site_packages"] == []
    assert found["predictions"] == [0, 0, 0]
    for name in ("numpy", "scipy", "sklearn"):
        assert found["modules"][name].startswith(str(sam_build / "MlRuntimeLayer"))
    for name in ("bigpickle", "aws_lambda_powertools"):
        assert found["modules"][name].startswith(str(sam_build / "BigpickleLayer"))
    assert found["modules"]["botocore"].startswith(str(runtime_boto3))
    # No model is staged under the empty MODELS_ROOT: the API says so (not found / not ready) in its own format.
    assert found["health"]["statusCode"] == 503
    assert set(found["health"]["body"]["error"]) == {"code", "message"}

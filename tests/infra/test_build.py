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
# Each function's layers: only what it imports (template.yaml; docs/api.md has the sizes).
FUNCTION_LAYERS = {
    "StageFunction": {"BigpickleLayer", "MlRuntimeLayer", "PandasLayer", "StageRuntimeLayer"},
    "PredictFunction": {"BigpickleLayer", "MlRuntimeLayer", "PandasLayer"},
}


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
    assert set(functions) == set(FUNCTION_LAYERS)
    for name, parts in functions.items():
        sizes = {part: tree_bytes(folder) for part, folder in parts.items()}
        total = sum(sizes.values())
        shown = ", ".join(f"{part} {size / 1e6:.1f} MB" for part, size in sizes.items())
        with capsys.disabled():
            print(f"\n{name}: {shown}; total {total / 1e6:.1f} MB of {LAMBDA_UNZIPPED_LIMIT / 1e6:.1f} MB allowed")
        assert set(sizes) == {"code", *FUNCTION_LAYERS[name]}
        assert total < LAMBDA_UNZIPPED_LIMIT


def test_given_the_build_then_layers_leave_out_tests_build_sources_dev_code_and_what_others_provide(
    sam_build: Path,
) -> None:
    code_layer = sam_build / "BigpickleLayer" / "python"
    ml_layer = sam_build / "MlRuntimeLayer" / "python"
    pandas_layer = sam_build / "PandasLayer" / "python"
    assert (code_layer / "bigpickle" / "serving").is_dir()
    assert not (code_layer / "bigpickle" / "local").exists()
    for provided_by_runtime in ("botocore", "boto3", "dateutil", "six.py"):
        assert not (code_layer / provided_by_runtime).exists()
        assert not (pandas_layer / provided_by_runtime).exists()
    assert not (code_layer / "awscrt").exists()  # only the stage function verifies S3 checksums
    assert (sam_build / "StageRuntimeLayer" / "python" / "awscrt").is_dir()
    assert (pandas_layer / "pandas" / "core").is_dir()
    assert not (pandas_layer / "numpy").exists()  # the ML runtime layer's numpy serves both
    assert (ml_layer / "sklearn" / "ensemble").is_dir()
    for layer in (code_layer, ml_layer, pandas_layer):
        assert not [path for path in layer.rglob("tests") if path.is_dir()]
        assert not [path for path in layer.rglob("*") if path.suffix in {".cpp", ".h", ".pyx", ".pxd", ".c"}]
    assert list((ml_layer / "sklearn").glob("__pycache__/*.cpython-313.pyc"))
    assert list((pandas_layer / "pandas").glob("__pycache__/*.cpython-313.pyc"))


@pytest.fixture(scope="session")
def runtime_boto3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """boto3 as the Lambda runtime provides it in /var/runtime (the layers leave it out on purpose)."""
    target = tmp_path_factory.mktemp("var-runtime")
    env = lambda_python_env()
    run([LAMBDA_PYTHON, "-m", "pip", "install", "--quiet", "--root-user-action=ignore", "--target", target, "boto3"],
        env=env)  # fmt: skip
    return target


def lambda_smoke(build_dir: Path, runtime: Path, models_root: Path, function: str) -> dict[str, Any]:
    """Run tests/infra/lambda_smoke.py for one built function on python3.13 with only its layers and boto3."""
    parts = built_functions(build_dir)[function]
    layers = [folder / "python" for part, folder in parts.items() if part != "code"]
    role = "predict" if function == "PredictFunction" else "stage"
    env = {
        **lambda_python_env(),
        "MODELS_ROOT": str(models_root),
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "bigpickle",
        "PYTHONPATH": "",
    }
    result = subprocess.run(
        [
            LAMBDA_PYTHON, "-S", str(Path(__file__).with_name("lambda_smoke.py")), role, str(parts["code"]),
            str(REPO / "events"), str(models_root), *map(str, layers), str(runtime),
        ],
        env=env, capture_output=True, text=True, cwd=build_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_given_the_built_predict_function_when_run_on_python_3_13_alone_then_it_answers_a_dataframe_pipeline(
    sam_build: Path, runtime_boto3: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = lambda_smoke(sam_build, runtime_boto3, tmp_path, "PredictFunction")

    assert found["python"] == [3, 13]
    assert found["site_packages"] == []
    for name in ("numpy", "scipy", "sklearn"):
        assert found["modules"][name].startswith(str(sam_build / "MlRuntimeLayer"))
    assert found["modules"]["pandas"].startswith(str(sam_build / "PandasLayer"))
    for name in ("bigpickle", "aws_lambda_powertools"):
        assert found["modules"][name].startswith(str(sam_build / "BigpickleLayer"))
    assert found["modules"]["awscrt"] is None
    assert found["modules"]["botocore"].startswith(str(runtime_boto3))
    # the DataFrame pipeline answers the sample request as it does in process
    assert found["dataframe"]["statusCode"] == 200, found["dataframe"]
    assert found["dataframe"]["body"]["predictions"] == found["expected"]["predictions"]
    assert found["dataframe"]["body"]["probabilities"] == found["expected"]["probabilities"]
    # No MODEL_NAME: health speaks for the default model, so it says there is none, in the API's own format.
    assert found["health"]["statusCode"] == 503
    assert set(found["health"]["body"]["error"]) == {"code", "message"}
    with capsys.disabled():
        seconds = found["import_seconds"]
        print(f"\npython3.13, built layers: import numpy {seconds['numpy'] * 1000:.0f} ms, then pandas "
              f"{seconds['pandas_after_numpy'] * 1000:.0f} ms")  # fmt: skip


def test_given_the_built_stage_function_when_run_on_python_3_13_alone_then_it_imports_with_its_own_layers(
    sam_build: Path, runtime_boto3: Path, tmp_path: Path
) -> None:
    found = lambda_smoke(sam_build, runtime_boto3, tmp_path, "StageFunction")

    assert found["python"] == [3, 13]
    assert found["site_packages"] == []
    assert found["modules"]["awscrt"].startswith(str(sam_build / "StageRuntimeLayer"))
    assert found["modules"]["sklearn"].startswith(str(sam_build / "MlRuntimeLayer"))
    assert found["modules"]["pandas"].startswith(str(sam_build / "PandasLayer"))  # scikit-learn imports it
    assert found["trial_load"] == "loaded"  # a pickle holding pandas.NA passes staging's trial load
    assert found["modules"]["botocore"].startswith(str(runtime_boto3))

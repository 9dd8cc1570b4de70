"""An update reaches the API: every change that matters to the predict function publishes a new version,
which the `live` alias (API, warm-ups, provisioned concurrency) then serves.

SAM's translator (the AWS::Serverless transform CloudFormation runs) is run here offline, twice per case, with
one layer file, the function's code or one parameter changed in between. CloudFormation publishes a new
version when the version's logical id changes (SAM hashes the function's properties into it) or when its
Description changes (a property whose update requires replacement): the tests follow both.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.cfn import Deployment
from tests.infra.conftest import REPO, TEMPLATE, TOOL_ENV, infra_tool

TRANSLATE = Path(__file__).with_name("sam_translate.py")
# A version's Description is at most 256 characters (AWS::Lambda::Version), or the deploy fails.
VERSION_DESCRIPTION_LIMIT = 256
# What the predict function reads that is no parameter of its version: ProvisionedConcurrency belongs to the
# alias; the network is not changed in place on a deployed stack (docs/deploy.md).
NOT_IN_THE_VERSION = {
    "PredictProvisionedConcurrency", "ExistingNetwork", "VpcCidr", "AvailabilityZoneA", "AvailabilityZoneB",
}  # fmt: skip


def folder_key(folder: Path) -> str:
    """Content-derived, as `sam package` names uploads: any changed file gives another key."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def artifact_folders(template: dict[str, Any]) -> dict[str, Path]:
    folders = {}
    for name, resource in template["Resources"].items():
        prop = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}.get(
            resource["Type"]
        )
        if prop:
            folders[name] = REPO / resource["Properties"][prop]
    return folders


def translate(
    template: dict[str, Any], parameters: dict[str, str] | None = None, folders: dict[str, Path] | None = None
) -> dict[str, Any]:
    folders = {**artifact_folders(template), **(folders or {})}
    request = {
        "template": str(TEMPLATE),
        "parameters": parameters or {},
        "artifacts": {name: f"s3://artifacts/{folder_key(folder)}" for name, folder in folders.items()},
    }
    result = subprocess.run(
        [str(infra_tool("sam", "python")), str(TRANSLATE)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=TOOL_ENV | {"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def published_version(template: dict[str, Any], parameters: dict[str, str] | None = None) -> tuple[str, str]:
    """(logical id, Description as deployed) of the predict function's version: a change in either publishes."""
    translated = translate(template, parameters)
    ((logical_id, version),) = (
        (name, resource)
        for name, resource in translated["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Version"
    )
    description = Deployment(translated, parameters).value(version["Properties"]["Description"])
    assert isinstance(description, str), description
    return logical_id, description


def alias_version(translated: dict[str, Any]) -> str:
    alias = next(r for r in translated["Resources"].values() if r["Type"] == "AWS::Lambda::Alias")
    return alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]


@pytest.fixture(scope="module")
def baseline(template: dict[str, Any]) -> tuple[str, str]:
    return published_version(template)


def test_given_the_same_inputs_then_the_version_stays_and_the_alias_points_at_it(
    template: dict[str, Any], baseline: tuple[str, str]
) -> None:
    translated = translate(template)
    assert published_version(template) == baseline
    assert alias_version(translated) == baseline[0]


@pytest.mark.parametrize("layer", ["BigpickleLayer", "MlRuntimeLayer"])
def test_given_one_changed_layer_file_then_a_new_version_id_is_published(
    template: dict[str, Any], baseline: tuple[str, str], layer: str, tmp_path: Path
) -> None:
    changed = tmp_path / layer
    shutil.copytree(artifact_folders(template)[layer], changed, ignore=shutil.ignore_patterns("__pycache__"))
    some_file = sorted(p for p in changed.rglob("*") if p.is_file())[0]
    some_file.write_bytes(some_file.read_bytes() + b"\n")

    translated = translate(template, folders={layer: changed})
    version_id = alias_version(translated)

    assert version_id != baseline[0]
    assert version_id.startswith("PredictFunctionVersion")


def test_given_changed_function_code_then_a_new_version_id_is_published(
    template: dict[str, Any], baseline: tuple[str, str], tmp_path: Path
) -> None:
    changed = tmp_path / "predict"
    shutil.copytree(REPO / "functions" / "predict", changed, ignore=shutil.ignore_patterns("__pycache__"))
    (changed / "app.py").write_text((changed / "app.py").read_text() + "\n# changed\n")

    assert alias_version(translate(template, folders={"PredictFunction": changed})) != baseline[0]


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("ModelName", "iris"),
        ("PredictMemorySize", "10240"),
        ("PredictTimeout", "60"),
        ("Architecture", "arm64"),
        ("LogLevel", "DEBUG"),
        ("ModelMmap", "on"),
        ("ModelVerify", "full"),
        ("ModelRefreshSeconds", "5"),
        ("ModelVersionCheck", "warn"),
        ("MaxBodyBytes", "1048576"),
        ("MaxInstances", "100"),
        ("MaxRowWidth", "50"),
        ("PickleAllowlistExtra", "mypkg.model:Custom"),
    ],
)
def test_given_one_changed_parameter_then_the_deployed_version_changes(
    template: dict[str, Any], baseline: tuple[str, str], parameter: str, value: str
) -> None:
    assert Deployment(template, {parameter: value}).parameter_errors() == []

    changed = published_version(template, {parameter: value})

    assert changed != baseline
    assert value in changed[1]


def parameters_read_by(node: Any) -> set[str]:
    """Parameter names a Ref or ${...} in `node` reads (pseudo parameters and resources excluded by the caller)."""
    text = json.dumps(node)
    return set(re.findall(r'"Ref": "([A-Za-z0-9]+)"', text)) | set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text))


def test_the_version_description_names_every_parameter_the_predict_function_reads_and_fits_256_characters(
    template: dict[str, Any],
) -> None:
    parameters = template["Parameters"]
    predict = template["Resources"]["PredictFunction"]["Properties"]
    read = parameters_read_by([template["Globals"]["Function"], predict]) & set(parameters)
    # Conditions the function's properties use read parameters too (SetModelName -> ModelName, ...).
    conditions = set(re.findall(r'"Fn::If": \["([A-Za-z0-9]+)"', json.dumps([template["Globals"], predict])))
    read |= parameters_read_by([template["Conditions"][name] for name in conditions]) & set(parameters)
    description = predict["VersionDescription"]["Fn::Sub"]
    named = set(re.findall(r"\$\{([A-Za-z0-9]+)\}", description))

    assert read - NOT_IN_THE_VERSION == named
    longest = sum(parameters[name].get("MaxLength") or max_rendered_length(parameters[name]) for name in named)
    assert len(re.sub(r"\$\{[A-Za-z0-9]+\}", "", description)) + longest <= VERSION_DESCRIPTION_LIMIT


def max_rendered_length(spec: dict[str, Any]) -> int:
    if "AllowedValues" in spec:
        return max(len(str(value)) for value in spec["AllowedValues"])
    if spec["Type"] == "Number" and "MaxValue" in spec:
        return len(str(spec["MaxValue"]))
    raise AssertionError(f"parameter without a bounded length: {spec}")


def test_given_the_translation_then_warm_ups_are_asynchronous_invokes_of_the_alias_never_retried(
    template: dict[str, Any],
) -> None:
    translated = translate(template)
    (config,) = (
        resource["Properties"]
        for resource in translated["Resources"].values()
        if resource["Type"] == "AWS::Lambda::EventInvokeConfig"
        and resource["Properties"]["FunctionName"] == {"Ref": "PredictFunction"}
    )
    assert config["Qualifier"] == "live"
    assert config["MaximumRetryAttempts"] == 0
    stage_env = template["Resources"]["StageFunction"]["Properties"]["Environment"]["Variables"]
    assert stage_env["PREDICT_FUNCTION_NAME"] == {"Ref": "PredictFunction.Alias"}

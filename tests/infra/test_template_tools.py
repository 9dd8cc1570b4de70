"""The real linters on template.yaml: cfn-lint, `sam validate --lint` and checkov find nothing."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from bigpickle.config import SETTINGS

from tests.infra.conftest import REPO, TEMPLATE, infra_tool, run


def test_given_the_template_then_cfn_lint_finds_nothing() -> None:
    output = run([infra_tool("sam", "cfn-lint"), TEMPLATE])
    assert output.strip() == ""


def test_given_the_template_then_sam_validate_with_lint_passes() -> None:
    output = run([infra_tool("sam", "sam"), "validate", "--lint", "--template-file", TEMPLATE])
    assert "is a valid SAM Template" in output


def test_given_the_template_then_checkov_fails_nothing_and_every_skip_says_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = run(
        [infra_tool("checkov", "checkov"), "-f", TEMPLATE, "--framework", "cloudformation", "--skip-download",
         "--output", "json"]
    )  # fmt: skip
    report: dict[str, Any] = json.loads(output[output.index("{") :])
    summary = report["summary"]
    failed = [(check["check_id"], check["resource"]) for check in report["results"]["failed_checks"]]
    with capsys.disabled():
        print(f"\ncheckov: {summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped")

    assert failed == []
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0
    for check in report["results"]["skipped_checks"]:
        assert len(check["check_result"]["suppress_comment"].split()) >= 8, check["check_id"]


def test_given_the_settings_the_library_reads_then_the_template_wires_each_one() -> None:
    """Every environment variable the shipped library reads is set by the template (or by Lambda itself)."""
    library = REPO / "layers" / "bigpickle" / "bigpickle"
    shipped = [path for path in library.rglob("*.py") if "local" not in path.relative_to(library).parts]
    source = "".join(path.read_text() for path in shipped)
    read = set(re.findall(r"""(?:environ|env)(?:\.get\(|\[|, )\s*["']([A-Z][A-Z0-9_]+)["']""", source))
    read |= {setting.env for setting in SETTINGS}  # bigpickle.config declares its settings in one table
    set_by_lambda = {name for name in read if name.startswith("AWS_")}
    template = TEMPLATE.read_text()

    assert {"MODELS_ROOT", "MODEL_NAME", "POWERTOOLS_SERVICE_NAME", "STAGE_PART_SIZE_MIB"} <= read
    unwired = sorted(name for name in read - set_by_lambda if not re.search(rf"^\s+{name}:", template, re.M))
    assert unwired == []

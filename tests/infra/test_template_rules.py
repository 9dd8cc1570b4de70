"""template.yaml's Rules: built only from CloudFormation's rule functions, and refusing exactly the parameter
combinations that cannot work, before anything is created."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from bigpickle.config import Settings

from tests.infra.cfn import Deployment

# The "Rule functions" of the CloudFormation template reference: all a RuleCondition or an Assert may contain.
RULE_FUNCTIONS = {
    "Fn::And", "Fn::Contains", "Fn::EachMemberEquals", "Fn::EachMemberIn", "Fn::Equals", "Fn::Not", "Fn::Or",
    "Fn::RefAll", "Fn::ValueOf", "Fn::ValueOfAll", "Ref",
}  # fmt: skip
NETWORK = "vpc-0123456789abcdef0,subnet-0aaaaaaaaaaaaaaa1,subnet-0bbbbbbbbbbbbbbb2"


def functions_in(node: Any) -> Iterator[str]:
    """Every intrinsic function name (a one-key mapping "Fn::..." or "Ref") anywhere inside `node`."""
    if isinstance(node, list):
        for item in node:
            yield from functions_in(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if len(node) == 1 and (key == "Ref" or key.startswith(("Fn::", "Condition"))):
                yield key
            yield from functions_in(value)


def test_given_the_rules_then_they_use_only_rule_functions(template: dict[str, Any]) -> None:
    used = set()
    for name, rule in template["Rules"].items():
        for part in [rule.get("RuleCondition"), *(assertion["Assert"] for assertion in rule["Assertions"])]:
            found = set(functions_in(part))
            assert found <= RULE_FUNCTIONS, f"rule {name} uses {sorted(found - RULE_FUNCTIONS)}"
            used |= found
    assert {"Fn::EachMemberEquals", "Fn::Equals", "Ref"} <= used


def test_the_walk_refuses_a_function_that_is_not_a_rule_function() -> None:
    seen = set(functions_in({"Fn::Equals": [{"Fn::Join": ["", {"Ref": "ExistingRouteTableIds"}]}, ""]}))
    assert seen - RULE_FUNCTIONS == {"Fn::Join"}


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        ({}, []),
        ({"ExistingNetwork": NETWORK}, []),
        ({"ExistingNetwork": NETWORK, "ExistingRouteTableIds": "rtb-0ccccccccccccccc3,rtb-0ddddddddddddddd4"}, []),
        ({"ExistingNetwork": NETWORK, "CreateLambdaEndpoint": "false"}, []),
        ({"AvailabilityZoneA": "eu-west-1b", "AvailabilityZoneB": "eu-west-1c"}, []),
        ({"ExistingRouteTableIds": "rtb-0ccccccccccccccc3"}, ["ExistingRouteTableIds applies only"]),
        ({"CreateLambdaEndpoint": "false"}, ["The created VPC has no NAT"]),
        ({"AvailabilityZoneA": "eu-west-1b"}, ["Set both AvailabilityZoneA"]),
        ({"AvailabilityZoneB": "eu-west-1b"}, ["Set both AvailabilityZoneA"]),
        ({"AvailabilityZoneA": "eu-west-1b", "AvailabilityZoneB": "eu-west-1b"}, ["must differ"]),
    ],
)
def test_given_parameter_values_then_the_rules_refuse_only_combinations_that_cannot_work(
    template: dict[str, Any], overrides: dict[str, str], refused: list[str]
) -> None:
    deployment = Deployment(template, overrides)

    failures = deployment.rule_failures()

    assert deployment.parameter_errors() == []
    assert len(failures) == len(refused), failures
    for failure, expected in zip(failures, refused, strict=True):
        assert expected in failure


# Lambda's recursive loop detection lets one chain of events invoke a function about 16 times, then stops it.
RECURSIVE_LOOP_LIMIT = 16


def test_given_the_continuation_parameter_then_no_admitted_chain_reaches_lambdas_recursive_loop_limit(
    template: dict[str, Any],
) -> None:
    admitted = [n for n in range(100) if not Deployment(template, {"StageMaxContinuations": str(n)}).parameter_errors()]
    library_default = Settings.from_env({}).stage_max_continuations

    assert admitted == list(range(len(admitted))) and admitted  # 0..max, no gaps
    # The S3 event's invocation plus every continuation, with one to spare.
    assert 1 + max(admitted) <= RECURSIVE_LOOP_LIMIT - 1
    assert library_default in admitted

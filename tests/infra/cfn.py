"""Read a SAM/CloudFormation template as plain data, and evaluate it as CloudFormation would for a given set
of parameter values: enough of Ref, Fn::If and the condition functions to ask "what gets deployed?".

Short-form tags (`!Ref X`, `!GetAtt A.B`, `!Sub ...`) become their long form (`{"Ref": "X"}`, ...).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

NO_VALUE = object()


class _TemplateLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_TemplateLoader.add_multi_constructor("!", _tag)


def load_template(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_TemplateLoader)


class Deployment:
    """The template as deployed with `overrides` on top of the parameters' defaults."""

    def __init__(self, template: Mapping[str, Any], overrides: Mapping[str, str] | None = None) -> None:
        self.template = template
        params = template.get("Parameters", {})
        self.params = {name: str(spec.get("Default", "")) for name, spec in params.items()}
        self.params.update(overrides or {})
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = self._truth(self.template["Conditions"][name])
        return self._conditions[name]

    def _truth(self, node: Any) -> bool:
        ((fn, args),) = node.items()
        if fn == "Condition":
            return self.condition(args)
        if fn == "Fn::Equals":
            left, right = (self.value(arg) for arg in args)
            return str(left) == str(right)
        if fn == "Fn::Not":
            return not self._truth(args[0])
        if fn == "Fn::And":
            return all(self._truth(arg) for arg in args)
        if fn == "Fn::Or":
            return any(self._truth(arg) for arg in args)
        raise ValueError(f"unsupported condition function {fn}")

    def value(self, node: Any) -> Any:
        """Resolve parameter Refs, Fn::If and Fn::Join over plain values; leave everything else as it is."""
        if isinstance(node, list):
            return [item for item in (self.value(item) for item in node) if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"}:
            if node["Ref"] == "AWS::NoValue":
                return NO_VALUE
            if node["Ref"] in self.params:
                spec = self.template["Parameters"][node["Ref"]]
                raw = self.params[node["Ref"]]
                return raw.split(",") if spec["Type"] == "CommaDelimitedList" else raw
            return node
        if set(node) == {"Fn::If"}:
            name, then, otherwise = node["Fn::If"]
            return self.value(then if self.condition(name) else otherwise)
        if set(node) == {"Fn::Join"}:
            separator, items = node["Fn::Join"]
            items = self.value(items)
            if isinstance(items, list) and all(isinstance(item, str) for item in items):
                return separator.join(items)
            return node
        return {
            key: resolved for key, resolved in ((k, self.value(v)) for k, v in node.items()) if resolved is not NO_VALUE
        }

    def resources(self, type_: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(logical id, resolved properties) of each resource this deployment creates."""
        for name, resource in self.template["Resources"].items():
            if type_ and resource["Type"] != type_:
                continue
            if "Condition" in resource and not self.condition(resource["Condition"]):
                continue
            yield name, self.value(resource.get("Properties", {}))

    def properties(self, name: str) -> dict[str, Any]:
        return self.value(self.template["Resources"][name].get("Properties", {}))


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def iam_statements(policies: list[Any]) -> list[dict[str, Any]]:
    """Every statement of inline policies (SAM `Policies` items or a PolicyDocument); anything else fails."""
    statements: list[dict[str, Any]] = []
    for policy in policies:
        if not isinstance(policy, dict) or "Statement" not in policy:
            raise AssertionError(f"expected an inline policy document, got {policy!r}")
        statements.extend(policy["Statement"])
    return statements


def actions(statement: Mapping[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)

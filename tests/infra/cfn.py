"""Read a SAM/CloudFormation template as plain data, and evaluate it as CloudFormation would for a given set
of parameter values: enough of Ref, Fn::If, Fn::Sub/Split/Select/Cidr over parameters, the condition functions
and the rule functions to ask "what gets deployed?" and "which Rules refuse it?".

Short-form tags (`!Ref X`, `!GetAtt A.B`, `!Sub ...`) become their long form (`{"Ref": "X"}`, ...).
"""

from __future__ import annotations

import ipaddress
import re
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

    def parameter_errors(self) -> list[str]:
        """What CloudFormation refuses about the parameter values themselves (pattern, allowed values, length,
        range), one message per refused parameter."""
        errors = []
        for name, spec in self.template.get("Parameters", {}).items():
            raw = self.params[name]
            values = raw.split(",") if spec["Type"] == "CommaDelimitedList" else [raw]
            for value in values:
                if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
                    errors.append(f"{name}={value!r} does not match {spec['AllowedPattern']}")
                if "AllowedValues" in spec and value not in map(str, spec["AllowedValues"]):
                    errors.append(f"{name}={value!r} is not one of {spec['AllowedValues']}")
                if len(value) > spec.get("MaxLength", len(value)):
                    errors.append(f"{name} is longer than {spec['MaxLength']} characters")
                if spec["Type"] == "Number" and not (
                    spec.get("MinValue", -float("inf")) <= float(value) <= spec.get("MaxValue", float("inf"))
                ):
                    errors.append(f"{name}={value} is outside [{spec.get('MinValue')}, {spec.get('MaxValue')}]")
        return errors

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
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
            names = re.findall(r"\$\{([^}!]+)\}", node["Fn::Sub"])
            if names and all(name in self.params for name in names):
                return re.sub(r"\$\{([^}!]+)\}", lambda match: str(self.value(ref(match[1]))), node["Fn::Sub"])
            return node
        if set(node) == {"Fn::Split"}:
            separator, source = node["Fn::Split"]
            source = self.value(source)
            return source.split(separator) if isinstance(source, str) else node
        if set(node) == {"Fn::Select"}:
            index, items = node["Fn::Select"]
            items = self.value(items)
            if isinstance(items, list):
                if not 0 <= int(index) < len(items):
                    raise ValueError(f"Fn::Select index {index} out of range for {items!r}")
                return items[int(index)]
            return {"Fn::Select": [index, items]}
        if set(node) == {"Fn::Cidr"}:
            block, count, host_bits = (self.value(arg) for arg in node["Fn::Cidr"])
            return cidr(block, int(count), int(host_bits)) if isinstance(block, str) else node
        return {
            key: resolved for key, resolved in ((k, self.value(v)) for k, v in node.items()) if resolved is not NO_VALUE
        }

    def rule_failures(self) -> list[str]:
        """The AssertDescription of every Rules assertion these parameter values fail, as CloudFormation checks
        them before creating anything."""
        failures = []
        for rule in self.template.get("Rules", {}).values():
            if "RuleCondition" in rule and not self._rule_truth(rule["RuleCondition"]):
                continue
            failures += [a["AssertDescription"] for a in rule["Assertions"] if not self._rule_truth(a["Assert"])]
        return failures

    def _rule_truth(self, node: Any) -> Any:
        """A rule function's value (the documented semantics of each; only rule functions are allowed)."""
        if not isinstance(node, dict):
            return node
        ((fn, args),) = node.items()
        if fn == "Ref":
            return self.value(node)
        if fn == "Fn::Equals":
            left, right = (self._rule_truth(arg) for arg in args)
            return left == right
        if fn == "Fn::Not":
            return not self._rule_truth(args[0])
        if fn == "Fn::And":
            return all(self._rule_truth(arg) for arg in args)
        if fn == "Fn::Or":
            return any(self._rule_truth(arg) for arg in args)
        if fn == "Fn::Contains":
            items, value = (self._rule_truth(arg) for arg in args)
            return value in items
        if fn == "Fn::EachMemberEquals":
            items, value = (self._rule_truth(arg) for arg in args)
            return all(item == value for item in items)
        if fn == "Fn::EachMemberIn":
            items, allowed = (self._rule_truth(arg) for arg in args)
            return all(item in allowed for item in items)
        raise ValueError(f"{fn} is not a rule function this evaluator knows")

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


def cidr(block: str, count: int, host_bits: int) -> list[str]:
    """Fn::Cidr: the first `count` blocks with `host_bits` host bits inside `block`; CloudFormation fails the
    deploy when they do not fit (ValueError here)."""
    network = ipaddress.ip_network(block)  # strict: an address with host bits set is no network
    new_prefix = network.max_prefixlen - host_bits
    if new_prefix < network.prefixlen:
        raise ValueError(f"{block} is smaller than one /{new_prefix} block")
    blocks = []
    for subnet in network.subnets(new_prefix=new_prefix):
        if len(blocks) == count:
            break
        blocks.append(str(subnet))
    if len(blocks) < count:
        raise ValueError(f"{block} holds {len(blocks)} /{new_prefix} blocks, not {count}")
    return blocks

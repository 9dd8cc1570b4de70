"""SAM's own translator (samtranslator, as CloudFormation's AWS::Serverless transform runs it), offline.

Run with the SAM CLI venv's Python (.venv-infra/sam): reads {"template": path, "parameters": {...},
"artifacts": {logical id: "s3://bucket/key"}} on stdin and prints the CloudFormation template it produces.
The artifacts stand in for `sam package`, which uploads each CodeUri/ContentUri folder under a key derived from
its contents; no AWS call is made (the region comes from AWS_DEFAULT_REGION).
"""

from __future__ import annotations

import json
import sys

from samcli.yamlhelper import yaml_parse
from samtranslator.public.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform

ARTIFACT_PROPERTY = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}


class NoManagedPolicies:
    """The template names AWS managed policies by ARN only; SAM asks IAM for this map otherwise."""

    def load(self) -> dict[str, str]:
        return {}


def main() -> None:
    request = json.load(sys.stdin)
    with open(request["template"]) as source:
        template = yaml_parse(source.read())
    for logical_id, uri in request["artifacts"].items():
        resource = template["Resources"][logical_id]
        resource["Properties"][ARTIFACT_PROPERTY[resource["Type"]]] = uri
    try:
        translated = transform(template, request["parameters"], NoManagedPolicies())
    except InvalidDocumentException as exc:
        sys.exit("SAM refused the template: " + "; ".join(str(cause) for cause in exc.causes))
    json.dump(translated, sys.stdout)


if __name__ == "__main__":
    main()

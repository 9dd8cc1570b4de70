"""`sam`, taught two things SAM CLI 1.170's local emulation cannot do with this template (docs/local.md):

- mount the function folder's top-level symlinks (read-only) for every command, as `sam local invoke
  --mount-symlinks` does: `sam local start-api` has no such option and mounts only symlinks to folders
  named node_modules, so the predict function behind the local API could not see the models folder;
- read the API at all: SAM picks one API reader per template, the one for `AWS::Serverless::*` APIs as soon
  as the template has a serverless function, and never looks at plain `AWS::ApiGatewayV2` resources then;
  here both readers run;
- read an HTTP API integration that targets a function's alias (`IntegrationUri: !Ref PredictFunction.Alias`,
  which SAM resolves to the string "PredictFunction.Alias"): SAM's local gateway takes a function only from
  an ARN or an `Fn::Sub` of one, and without this finds no API in the template.

Run it with the SAM CLI's Python, with `sam`'s arguments.
"""

import re
import sys
from typing import Any

from samcli.cli.main import cli
from samcli.commands.local.lib.swagger.integration_uri import LambdaUri
from samcli.lib.providers.api_provider import ApiProvider
from samcli.lib.providers.cfn_api_provider import CfnApiProvider
from samcli.lib.providers.cfn_base_api_provider import CfnBaseApiProvider
from samcli.lib.providers.sam_api_provider import SamApiProvider
from samcli.local.docker.container import Container

FUNCTION_ALIAS = re.compile(r"^([A-Za-z0-9]+)\.Alias$")  # a resolved `!Ref <LogicalId>.Alias`
resolve_function_name = LambdaUri.get_function_name


def mount_every_symlink(self: Container, file: object) -> bool:
    return True


def function_of_integration(integration_uri: Any) -> str | None:
    alias = FUNCTION_ALIAS.match(integration_uri) if isinstance(integration_uri, str) else None
    return alias.group(1) if alias else resolve_function_name(integration_uri)


class SamAndCfnApis(CfnBaseApiProvider):
    """Routes from serverless resources and from plain API Gateway resources alike."""

    def extract_resources(self, stacks: Any, collector: Any, cwd: Any = None, disable_authorizer: Any = False) -> None:
        for reader in (SamApiProvider(), CfnApiProvider()):
            reader.extract_resources(stacks, collector, cwd=cwd, disable_authorizer=disable_authorizer)


Container._resolve_symlinks_for_file = mount_every_symlink
ApiProvider.find_api_provider = staticmethod(lambda stacks: SamAndCfnApis())
LambdaUri.get_function_name = staticmethod(function_of_integration)

if __name__ == "__main__":
    sys.exit(cli())

"""template.yaml, read as CloudFormation would deploy it: the security properties the stack promises.

Most checks look at the stack `sam deploy --guided` creates when every prompt keeps its default; the network
ones also at a stack deployed into an existing VPC.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.cfn import Deployment, actions, iam_statements, ref

EXISTING_NETWORK = {
    "ExistingNetwork": "vpc-0123456789abcdef0,subnet-0aaaaaaaaaaaaaaa1,subnet-0bbbbbbbbbbbbbbb2",
    "ExistingRouteTableIds": "rtb-0ccccccccccccccc3",
}
NFS = 2049


def function(deployment: Deployment, name: str) -> dict[str, Any]:
    return deployment.properties(name)


def ingress_rules(deployment: Deployment) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(rule, group it opens) for inline and standalone ingress rules."""
    rules = []
    for name, group in deployment.resources("AWS::EC2::SecurityGroup"):
        rules += [(rule, ref(name)) for rule in group.get("SecurityGroupIngress", [])]
    for _, rule in deployment.resources("AWS::EC2::SecurityGroupIngress"):
        rules.append((rule, rule["GroupId"]))
    return rules


def covers(rule: dict[str, Any], port: int) -> bool:
    if str(rule["IpProtocol"]) in ("-1", "all"):
        return True
    return rule["IpProtocol"] == "tcp" and int(rule["FromPort"]) <= port <= int(rule["ToPort"])


@pytest.fixture(params=["new VPC", "existing VPC"])
def deployment(request: pytest.FixtureRequest, template: dict[str, Any]) -> Deployment:
    return Deployment(template, EXISTING_NETWORK if request.param == "existing VPC" else {})


def test_given_defaults_then_predict_may_only_mount_the_file_system_never_write_it_nor_touch_s3(
    defaults: Deployment,
) -> None:
    predict = function(defaults, "PredictFunction")
    statements = iam_statements(predict["Policies"])
    granted = {action for statement in statements for action in actions(statement)}

    assert granted == {"elasticfilesystem:ClientMount"}
    assert "Role" not in predict
    assert all(statement["Effect"] == "Allow" for statement in statements)
    (mount,) = statements
    assert mount["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"] == {
        "Fn::GetAtt": ["ModelsAccessPoint", "Arn"]
    }
    # No other policy in the stack is attached to the predict function's role.
    for _, policy in defaults.resources("AWS::IAM::Policy"):
        assert ref("PredictFunctionRole") not in policy.get("Roles", [])


def test_given_defaults_then_the_file_system_policy_leaves_write_access_to_each_roles_iam_policy(
    defaults: Deployment,
) -> None:
    policy = defaults.properties("ModelsFileSystem")["FileSystemPolicy"]
    for statement in policy["Statement"]:
        if statement["Effect"] == "Allow":
            # An account principal defers to IAM; "*" would hand ClientWrite to predict as well.
            assert statement["Principal"] != "*"
            assert statement["Principal"]["AWS"] != "*"
            assert statement["Condition"]["Bool"]["elasticfilesystem:AccessedViaMountTarget"] == "true"
    denies = [statement for statement in policy["Statement"] if statement["Effect"] == "Deny"]
    assert [statement["Condition"]["Bool"]["aws:SecureTransport"] for statement in denies] == ["false"]


def test_given_defaults_then_stage_writes_the_file_system_and_reads_only_the_models_prefix(
    defaults: Deployment,
) -> None:
    stage = function(defaults, "StageFunction")
    own = iam_statements(stage["Policies"])
    assert {a for s in own for a in actions(s)} == {
        "elasticfilesystem:ClientMount",
        "elasticfilesystem:ClientWrite",
        "lambda:InvokeFunction",
    }
    s3_policies = [policy for _, policy in defaults.resources("AWS::IAM::Policy")]
    assert [policy["Roles"] for policy in s3_policies] == [[ref("StageFunctionRole")]]
    for statement in iam_statements([policy["PolicyDocument"] for policy in s3_policies]):
        assert statement["Effect"] == "Allow"
        for action in actions(statement):
            assert action.startswith(("s3:Get", "s3:List")), action
        if actions(statement) == ["s3:ListBucket"]:
            assert statement["Condition"]["StringLike"]["s3:prefix"] == "models/*"
        else:
            assert statement["Resource"] == {"Fn::Sub": "${ModelsBucket.Arn}/models/*"}


def test_given_any_network_then_nfs_is_open_only_to_the_functions_security_group(deployment: Deployment) -> None:
    nfs_rules = [(rule, group) for rule, group in ingress_rules(deployment) if covers(rule, NFS)]

    assert nfs_rules, "no rule admits NFS: the functions could not mount EFS"
    for rule, group in nfs_rules:
        assert group == ref("EfsSecurityGroup")
        assert rule["SourceSecurityGroupId"] == ref("FunctionSecurityGroup")
        assert (int(rule["FromPort"]), int(rule["ToPort"])) == (NFS, NFS)
    efs_group_rules = [rule for rule, group in ingress_rules(deployment) if group == ref("EfsSecurityGroup")]
    assert efs_group_rules == [rule for rule, _ in nfs_rules]
    for _, target in deployment.resources("AWS::EFS::MountTarget"):
        assert target["SecurityGroups"] == [ref("EfsSecurityGroup")]


def test_given_any_network_then_no_security_group_admits_the_internet(deployment: Deployment) -> None:
    for rule, _ in ingress_rules(deployment):
        assert rule.get("CidrIp") != "0.0.0.0/0"
        assert rule.get("CidrIpv6") != "::/0"
        assert "SourceSecurityGroupId" in rule


def test_given_any_network_then_there_is_a_mount_target_in_each_of_the_functions_two_subnets(
    deployment: Deployment,
) -> None:
    subnets = [target["SubnetId"] for _, target in deployment.resources("AWS::EFS::MountTarget")]
    assert len(subnets) >= 2
    for name in ("StageFunction", "PredictFunction"):
        vpc = deployment.value(deployment.template["Globals"]["Function"]["VpcConfig"])
        assert sorted(map(str, vpc["SubnetIds"])) == sorted(map(str, subnets))
        depends = deployment.template["Resources"][name]["DependsOn"]
        assert {"MountTargetA", "MountTargetB"} <= set(depends)


def test_given_a_new_vpc_then_its_two_subnets_are_private_and_in_two_zones(defaults: Deployment) -> None:
    subnets = dict(defaults.resources("AWS::EC2::Subnet"))
    assert len(subnets) == 2
    assert {str(subnet["AvailabilityZone"]) for subnet in subnets.values()} == {
        str({"Fn::Select": [index, {"Fn::GetAZs": ""}]}) for index in (0, 1)
    }
    assert all(subnet["MapPublicIpOnLaunch"] is False for subnet in subnets.values())
    assert not list(defaults.resources("AWS::EC2::InternetGateway"))
    assert not list(defaults.resources("AWS::EC2::NatGateway"))


def test_given_any_network_then_s3_is_reached_through_a_gateway_endpoint(deployment: Deployment) -> None:
    endpoints = [
        endpoint
        for _, endpoint in deployment.resources("AWS::EC2::VPCEndpoint")
        if endpoint["VpcEndpointType"] == "Gateway"
    ]
    assert [endpoint["ServiceName"] for endpoint in endpoints] == [{"Fn::Sub": "com.amazonaws.${AWS::Region}.s3"}]
    assert endpoints[0]["RouteTableIds"]


def test_given_defaults_then_the_api_requires_iam_auth_and_opting_out_is_explicit(
    defaults: Deployment, template: dict[str, Any]
) -> None:
    routes = [route for _, route in defaults.resources("AWS::ApiGatewayV2::Route")]
    assert routes
    assert all(route["AuthorizationType"] == "AWS_IAM" for route in routes)
    assert not list(defaults.resources("AWS::Serverless::HttpApi"))
    assert not list(defaults.resources("AWS::Serverless::Api"))

    opted_out = Deployment(template, {"ApiAuth": "NONE"})
    assert {route["AuthorizationType"] for _, route in opted_out.resources("AWS::ApiGatewayV2::Route")} == {"NONE"}


def test_given_defaults_then_the_api_is_throttled_and_logged(defaults: Deployment) -> None:
    (stage,) = (stage for _, stage in defaults.resources("AWS::ApiGatewayV2::Stage"))
    assert int(stage["DefaultRouteSettings"]["ThrottlingRateLimit"]) > 0
    assert int(stage["DefaultRouteSettings"]["ThrottlingBurstLimit"]) > 0
    assert stage["AccessLogSettings"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    # Vended-log groups need no statement in the account's 5,120-character CloudWatch Logs resource policy.
    assert defaults.properties("ApiAccessLogGroup")["LogGroupName"]["Fn::Sub"].startswith("/aws/vendedlogs/")


def test_given_defaults_then_the_bucket_is_versioned_encrypted_private_and_tls_only(defaults: Deployment) -> None:
    bucket = defaults.properties("ModelsBucket")
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (notification,) = bucket["NotificationConfiguration"]["LambdaConfigurations"]
    assert notification["Function"] == {"Fn::GetAtt": ["StageFunction", "Arn"]}
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "models/"}]

    (policy,) = (policy for _, policy in defaults.resources("AWS::S3::BucketPolicy"))
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "s3:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_given_defaults_then_the_file_system_is_encrypted_and_entered_through_an_access_point(
    defaults: Deployment,
) -> None:
    assert defaults.properties("ModelsFileSystem")["Encrypted"] is True
    assert defaults.properties("ModelsFileSystem")["ThroughputMode"] == "elastic"
    point = defaults.properties("ModelsAccessPoint")
    assert point["PosixUser"]["Uid"] and point["PosixUser"]["Gid"]
    assert set(point["RootDirectory"]["CreationInfo"]) == {"OwnerUid", "OwnerGid", "Permissions"}
    for name in ("StageFunction", "PredictFunction"):
        (mount,) = function(defaults, name)["FileSystemConfigs"]
        assert mount["Arn"] == {"Fn::GetAtt": ["ModelsAccessPoint", "Arn"]}


def test_given_defaults_then_a_failed_staging_lands_in_an_alarmed_queue(defaults: Deployment) -> None:
    stage = function(defaults, "StageFunction")
    assert stage["Timeout"] == 900
    on_failure = stage["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert (on_failure["Type"], on_failure["Destination"]) == ("SQS", {"Fn::GetAtt": ["StagingFailureQueue", "Arn"]})
    alarmed = [
        alarm["Dimensions"][0]["Value"]
        for _, alarm in defaults.resources("AWS::CloudWatch::Alarm")
        if alarm["Namespace"] == "AWS/SQS"
    ]
    assert alarmed == [{"Fn::GetAtt": ["StagingFailureQueue", "QueueName"]}]


def test_given_defaults_then_errors_and_throttles_of_both_functions_are_alarmed(defaults: Deployment) -> None:
    alarmed = {
        (alarm["MetricName"], alarm["Dimensions"][0]["Value"]["Ref"])
        for _, alarm in defaults.resources("AWS::CloudWatch::Alarm")
        if alarm["Namespace"] == "AWS/Lambda"
    }
    assert alarmed == {
        (metric, fn) for metric in ("Errors", "Throttles") for fn in ("StageFunction", "PredictFunction")
    }


def test_given_the_parameters_then_predict_memory_reaches_10240_mb_and_provisioned_concurrency_is_optional(
    template: dict[str, Any], defaults: Deployment
) -> None:
    assert template["Parameters"]["PredictMemorySize"]["MaxValue"] == 10240
    assert set(template["Parameters"]["Architecture"]["AllowedValues"]) == {"x86_64", "arm64"}
    assert "ProvisionedConcurrencyConfig" not in function(defaults, "PredictFunction")
    provisioned = Deployment(template, {"PredictProvisionedConcurrency": "2"})
    assert function(provisioned, "PredictFunction")["ProvisionedConcurrencyConfig"] == {
        "ProvisionedConcurrentExecutions": "2"
    }

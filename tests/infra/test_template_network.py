"""Every network parameter value CloudFormation accepts deploys: the created VPC's subnets fit whatever prefix
VpcCidr allows, and ExistingNetwork's parts are read back as the VPC and two subnets."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from tests.infra.cfn import Deployment

SUBNETS = ("PrivateSubnetA", "PrivateSubnetB")
EC2_VPC_PREFIXES = (16, 28)  # the IPv4 block sizes EC2 allows for a VPC
VPC_ID, SUBNET_A, SUBNET_B = "vpc-0123456789abcdef0", "subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"


def subnet_blocks(deployment: Deployment) -> list[ipaddress.IPv4Network]:
    return [ipaddress.ip_network(deployment.properties(name)["CidrBlock"]) for name in SUBNETS]


@pytest.mark.parametrize("prefix", range(8, 33))
def test_given_any_vpc_prefix_then_the_pattern_admits_it_exactly_when_the_vpc_and_both_subnets_can_exist(
    template: dict[str, Any], prefix: int
) -> None:
    vpc = ipaddress.ip_network(f"10.42.0.0/{prefix}", strict=False)
    deployment = Deployment(template, {"VpcCidr": str(vpc)})
    admitted = deployment.parameter_errors() == []

    try:
        blocks = subnet_blocks(deployment)
    except ValueError:  # Fn::Cidr cannot cut two subnets: CloudFormation would fail the deploy
        blocks = []
    deployable = EC2_VPC_PREFIXES[0] <= prefix <= EC2_VPC_PREFIXES[1] and bool(blocks)

    assert admitted == deployable, f"/{prefix}: pattern {'admits' if admitted else 'refuses'}, subnets {blocks}"
    if admitted:
        a, b = blocks
        assert a.subnet_of(vpc) and b.subnet_of(vpc) and not a.overlaps(b)
        assert a.prefixlen == b.prefixlen == 24  # 251 addresses each: endpoint and mount target ENIs, Lambda's
    assert admitted == (16 <= prefix <= 23)


@pytest.mark.parametrize(
    "value", ["10.42.0.0/16", "172.16.0.0/20", "192.168.10.0/23", "100.64.0.0/16", "10.255.254.0/23"]
)
def test_given_a_valid_vpc_range_then_it_is_admitted_and_cut_into_its_first_two_24s(
    template: dict[str, Any], value: str
) -> None:
    deployment = Deployment(template, {"VpcCidr": value})
    first = ipaddress.ip_network(value).network_address

    assert deployment.parameter_errors() == []
    assert [str(block) for block in subnet_blocks(deployment)] == [f"{first}/24", f"{first + 256}/24"]


@pytest.mark.parametrize(
    "value", ["10.42.0.0", "10.42.0.0/15", "10.42.0.0/24", "256.1.1.0/16", "10.42.0.0/016", " 10.42.0.0/16", "a/16"]
)
def test_given_a_malformed_vpc_range_then_the_pattern_refuses_it(template: dict[str, Any], value: str) -> None:
    assert Deployment(template, {"VpcCidr": value}).parameter_errors() != []


def test_given_no_zones_then_the_first_two_of_the_region_are_used_and_given_zones_replace_them(
    template: dict[str, Any],
) -> None:
    default = Deployment(template)
    chosen = Deployment(template, {"AvailabilityZoneA": "us-east-1b", "AvailabilityZoneB": "us-east-1d"})

    assert [default.properties(name)["AvailabilityZone"] for name in SUBNETS] == [
        {"Fn::Select": [index, {"Fn::GetAZs": ""}]} for index in (0, 1)
    ]
    assert [chosen.properties(name)["AvailabilityZone"] for name in SUBNETS] == ["us-east-1b", "us-east-1d"]


@pytest.mark.parametrize(
    "value",
    [
        f"{VPC_ID},{SUBNET_A},{SUBNET_B}",
        "vpc-0123abcd,subnet-0aaa1111,subnet-0bbb2222",  # the older 8-digit ids
        f"vpc-0123abcd,{SUBNET_A},subnet-0bbb2222",
    ],
)
def test_given_an_existing_network_then_every_resource_reads_its_vpc_and_two_subnets(
    template: dict[str, Any], value: str
) -> None:
    deployment = Deployment(template, {"ExistingNetwork": value})
    vpc, subnet_a, subnet_b = value.split(",")

    assert deployment.parameter_errors() == []
    assert not deployment.condition("CreateVpc")
    subnets = deployment.value(template["Globals"]["Function"]["VpcConfig"])["SubnetIds"]
    assert subnets == [subnet_a, subnet_b]
    assert [target["SubnetId"] for _, target in deployment.resources("AWS::EFS::MountTarget")] == [subnet_a, subnet_b]
    (_, endpoint) = next(
        (name, e) for name, e in deployment.resources("AWS::EC2::VPCEndpoint") if e["VpcEndpointType"] == "Interface"
    )
    assert endpoint["SubnetIds"] == [subnet_a, subnet_b] and endpoint["VpcId"] == vpc
    for _, group in deployment.resources("AWS::EC2::SecurityGroup"):
        assert group["VpcId"] == vpc


def test_given_no_existing_network_then_the_padded_split_stays_in_range_in_the_unused_branch(
    template: dict[str, Any],
) -> None:
    deployment = Deployment(template)
    padded = {"Fn::Split": [",", {"Fn::Sub": "${ExistingNetwork},,,"}]}

    assert [deployment.value({"Fn::Select": [index, padded]}) for index in range(3)] == ["", "", ""]
    assert deployment.value(template["Globals"]["Function"]["VpcConfig"])["SubnetIds"] == [
        {"Ref": "PrivateSubnetA"},
        {"Ref": "PrivateSubnetB"},
    ]


@pytest.mark.parametrize(
    "value",
    [
        f"{VPC_ID},{SUBNET_A}",  # one subnet
        f"{VPC_ID},{SUBNET_A},{SUBNET_B},subnet-0ccccccccccccccc3",  # three subnets
        f"{VPC_ID}, {SUBNET_A}, {SUBNET_B}",  # spaces would end up inside the ids
        f"{SUBNET_A},{VPC_ID},{SUBNET_B}",  # wrong order
        f"{VPC_ID.upper()},{SUBNET_A},{SUBNET_B}",
        f"vpc-0abc,{SUBNET_A},{SUBNET_B}",  # neither 8 nor 17 hex digits
        f"{VPC_ID},{SUBNET_A},{SUBNET_B},",
        f"{VPC_ID};{SUBNET_A};{SUBNET_B}",
    ],
)
def test_given_a_malformed_existing_network_then_the_pattern_refuses_it(template: dict[str, Any], value: str) -> None:
    assert Deployment(template, {"ExistingNetwork": value}).parameter_errors() != []

"""EvaluationNetwork: where processing jobs run, with AWS APIs reachable only through VPC endpoints."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

HTTPS = 443
DEFAULT_CIDR = "10.60.0.0/16"
# Interface endpoints a processing job needs: the SageMaker APIs and runtime (endpoint models), Bedrock
# runtime (Bedrock models and judges), STS, CloudWatch Logs, ECR (image pull) and Secrets Manager (API keys).
DEFAULT_INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "SageMakerApi": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_API,
    "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
    "BedrockRuntime": ec2.InterfaceVpcEndpointAwsService.BEDROCK_RUNTIME,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
}


class EvaluationNetwork(Construct):
    """A new isolated VPC (no internet route) or an existing one, plus endpoints and security groups.

    Props:
      key: KMS key for the flow-log group (required).
      existing_vpc: bring your own VPC. Default: a new VPC with isolated subnets only and flow logs.
      subnet_selection: where jobs and endpoints go. Default: isolated subnets of the new VPC, or the
        VPC's default selection (private subnets) of an existing one.
      cidr: CIDR of the new VPC. Default ``10.60.0.0/16``. max_azs: default 2.
      create_endpoints: default True; set False when the existing VPC already has these endpoints.
      flow_log_retention: default one year.

    Attributes: ``vpc``, ``subnets`` (ec2.SelectedSubnets), ``job_security_group``,
    ``endpoint_security_group`` (None without endpoints), ``endpoints`` (name -> endpoint),
    ``flow_log`` (None for an existing VPC).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        existing_vpc: ec2.IVpc | None = None,
        subnet_selection: ec2.SubnetSelection | None = None,
        cidr: str = DEFAULT_CIDR,
        max_azs: int = 2,
        create_endpoints: bool = True,
        flow_log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR,
    ) -> None:
        super().__init__(scope, construct_id)
        self.flow_log: ec2.FlowLog | None = None
        # A literal CIDR where one is known (cdk-nag cannot evaluate EC23 against a token).
        self.cidr = cidr
        if existing_vpc is not None:
            self.vpc: ec2.IVpc = existing_vpc
            self.cidr = existing_vpc.vpc_cidr_block
            selection = subnet_selection or ec2.SubnetSelection()
        else:
            vpc = ec2.Vpc(
                self,
                "Vpc",
                ip_addresses=ec2.IpAddresses.cidr(cidr),
                max_azs=max_azs,
                nat_gateways=0,
                subnet_configuration=[
                    ec2.SubnetConfiguration(name="evaluation", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
                ],
                restrict_default_security_group=False,
            )
            flow_logs = logs.LogGroup(
                self,
                "FlowLogs",
                encryption_key=key,
                retention=flow_log_retention,
                removal_policy=RemovalPolicy.RETAIN,
            )
            self.flow_log = vpc.add_flow_log(
                "FlowLog",
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                traffic_type=ec2.FlowLogTrafficType.ALL,
            )
            self.vpc = vpc
            selection = subnet_selection or ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.subnet_selection = selection
        self.subnets = self.vpc.select_subnets(
            subnet_type=selection.subnet_type,
            subnet_group_name=selection.subnet_group_name,
            subnets=selection.subnets,
            availability_zones=selection.availability_zones,
            one_per_az=selection.one_per_az,
        )
        self.job_security_group = ec2.SecurityGroup(
            self,
            "JobSecurityGroup",
            vpc=self.vpc,
            description="evalstack processing jobs: no inbound; HTTPS out (isolated subnets reach only endpoints)",
            allow_all_outbound=False,
        )
        self.job_security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS), "HTTPS to VPC endpoints")
        self.endpoint_security_group: ec2.SecurityGroup | None = None
        self.endpoints: dict[str, ec2.IVpcEndpoint] = {}
        if create_endpoints:
            self._add_endpoints(selection)

    def _add_endpoints(self, selection: ec2.SubnetSelection) -> None:
        group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="evalstack VPC endpoints: HTTPS from inside the VPC only",
            allow_all_outbound=False,
        )
        group.add_ingress_rule(ec2.Peer.ipv4(self.cidr), ec2.Port.tcp(HTTPS), "HTTPS from the VPC")
        self.endpoint_security_group = group
        for name, service in DEFAULT_INTERFACE_ENDPOINTS.items():
            self.endpoints[name] = self.vpc.add_interface_endpoint(
                name, service=service, subnets=selection, security_groups=[group], private_dns_enabled=True, open=False
            )
        self.endpoints["S3"] = self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[selection]
        )

    @property
    def subnet_ids(self) -> list[str]:
        return self.subnets.subnet_ids

    @property
    def security_group_ids(self) -> list[str]:
        return [self.job_security_group.security_group_id]

"""EvaluationNetwork: where processing jobs run, with AWS APIs reachable only through VPC endpoints."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import RemovalPolicy, Stack, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from evalstack.constructs import defaults
from evalstack.constructs.key import log_group_root, prepare_key
from evalstack.constructs.nag import AWS_SOLUTIONS, acknowledge

HTTPS = 443
# Interface endpoints a processing job needs: S3 (datasets, specs, results), the SageMaker APIs and
# runtime (endpoint models), Bedrock runtime (Bedrock models and judges), STS, CloudWatch Logs, ECR and
# Secrets Manager (API keys). S3 is an interface endpoint, not a gateway, so the jobs' egress stays
# inside the VPC CIDR: a gateway endpoint is reached through a prefix list only (``egress_prefix_lists``).
INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "S3": ec2.InterfaceVpcEndpointAwsService.S3,
    "SageMakerApi": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_API,
    "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
    "BedrockRuntime": ec2.InterfaceVpcEndpointAwsService.BEDROCK_RUNTIME,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
}
# SageMaker managed MLflow (service aws.sagemaker.<region>.experiments): made only when the platform has a
# tracking server, whose ARN is then the one resource its endpoint policy allows, whatever account holds
# it (the service supports endpoint policies: "Create a VPC Endpoint Policy for SageMaker AI MLflow").
MLFLOW_ENDPOINT = "SageMakerMlflow"
MLFLOW_SERVICE = ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_EXPERIMENTS
# Endpoints whose every resource a job touches is in this account; the others also reach AWS-owned
# resources (Bedrock foundation models, ECR's layer storage, STS), so only the principal is fenced there.
SAME_ACCOUNT_RESOURCES = frozenset({"S3", "SageMakerApi", "SageMakerRuntime", "Logs", "SecretsManager"})


class EvaluationNetwork(Construct):
    """A new isolated VPC (no internet route) or an existing one, plus endpoints and security groups.

    Everything, endpoints included, is created in this construct's own scope, never under the VPC, so a
    VPC from another stack works and two platforms can share one VPC (the second skips the endpoints).

    Props:
      key: KMS key for the flow-log group of a new VPC (required).
      existing_vpc: bring your own VPC. Default: a new VPC with isolated subnets only, flow logs and its
        default security group stripped of all rules.
      subnet_selection: where jobs and endpoints go. Default: isolated subnets of the new VPC, or the
        VPC's default selection (private subnets) of an existing one.
      cidr: CIDR of the new VPC. Default ``defaults.VPC_CIDR``. max_azs: default ``defaults.MAX_AZS``.
      endpoints: which of INTERFACE_ENDPOINTS (and MLFLOW_ENDPOINT) to create. Default: all of them, plus
        MLFLOW_ENDPOINT when ``mlflow_tracking_server_arn`` is given.
      skip_endpoints: names the VPC already has (another platform or the network team made them).
      mlflow_tracking_server_arn: the SageMaker MLflow tracking server jobs log to; its endpoint's policy
        allows only that server, for this account's principals. Default none (no MLflow endpoint).
      egress_prefix_lists: managed prefix list ids jobs may also reach on 443 (e.g. an S3 gateway endpoint's).
      name_prefix: names the flow-log group ``/evalstack/<name_prefix>/flow-logs`` (the key's Logs statement,
        added here to a ``kms.Key``, covers it). Default ``evalstack``.
      flow_log_retention: default ``defaults.LOG_RETENTION``. removal_policy: of the flow-log group,
        default ``defaults.REMOVAL_POLICY``.

    Attributes: ``vpc``, ``subnets`` (ec2.SelectedSubnets), ``job_security_group``,
    ``endpoint_security_group`` (None without endpoints), ``endpoints`` (name -> endpoint),
    ``flow_log`` (None for an existing VPC), ``cidr``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        existing_vpc: ec2.IVpc | None = None,
        subnet_selection: ec2.SubnetSelection | None = None,
        cidr: str = defaults.VPC_CIDR,
        max_azs: int = defaults.MAX_AZS,
        endpoints: Sequence[str] | None = None,
        skip_endpoints: Sequence[str] = (),
        mlflow_tracking_server_arn: str | None = None,
        egress_prefix_lists: Sequence[str] = (),
        name_prefix: str = "evalstack",
        flow_log_retention: logs.RetentionDays = defaults.LOG_RETENTION,
        removal_policy: RemovalPolicy = defaults.REMOVAL_POLICY,
    ) -> None:
        super().__init__(scope, construct_id)
        known = [*INTERFACE_ENDPOINTS, MLFLOW_ENDPOINT]
        wanted = list(INTERFACE_ENDPOINTS if endpoints is None else endpoints)
        if endpoints is None and mlflow_tracking_server_arn:
            wanted.append(MLFLOW_ENDPOINT)
        unknown = sorted((set(wanted) | set(skip_endpoints)) - set(known))
        if unknown:
            raise ValueError(f"EvaluationNetwork.endpoints: unknown {unknown}; choose from {known}")
        if MLFLOW_ENDPOINT in wanted and not mlflow_tracking_server_arn:
            raise ValueError(f"EvaluationNetwork.endpoints: {MLFLOW_ENDPOINT} needs mlflow_tracking_server_arn")
        self.mlflow_tracking_server_arn = mlflow_tracking_server_arn
        self.flow_log: ec2.FlowLog | None = None
        # A literal CIDR where one is known (cdk-nag cannot evaluate EC23 against a token).
        self.cidr = cidr
        if existing_vpc is not None:
            self.vpc: ec2.IVpc = existing_vpc
            self.cidr = existing_vpc.vpc_cidr_block
            selection = subnet_selection or ec2.SubnetSelection()
        else:
            prepare_key(self, key, name_prefix)
            vpc = ec2.Vpc(
                self,
                "Vpc",
                ip_addresses=ec2.IpAddresses.cidr(cidr),
                max_azs=max_azs,
                nat_gateways=0,
                subnet_configuration=[
                    ec2.SubnetConfiguration(name="evaluation", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
                ],
                # Nothing may use the default security group: its rules are removed.
                restrict_default_security_group=True,
            )
            flow_logs = logs.LogGroup(
                self,
                "FlowLogs",
                log_group_name=f"{log_group_root(name_prefix)}/flow-logs",
                encryption_key=key,
                retention=flow_log_retention,
                removal_policy=removal_policy,
            )
            self.flow_log = vpc.add_flow_log(
                "FlowLog",
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                traffic_type=ec2.FlowLogTrafficType.ALL,
            )
            _drop_redundant_dependency(Stack.of(self))
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
            description="evalstack processing jobs: no inbound; HTTPS out to the VPC (its endpoints) only",
            allow_all_outbound=False,
        )
        self.job_security_group.add_egress_rule(
            ec2.Peer.ipv4(self.cidr), ec2.Port.tcp(HTTPS), "HTTPS to the VPC endpoints"
        )
        for prefix_list in egress_prefix_lists:
            self.job_security_group.add_egress_rule(
                ec2.Peer.prefix_list(prefix_list), ec2.Port.tcp(HTTPS), "HTTPS to a gateway endpoint"
            )
        self.endpoint_security_group: ec2.SecurityGroup | None = None
        self.endpoints: dict[str, ec2.IVpcEndpoint] = {}
        names = [name for name in wanted if name not in skip_endpoints]
        if names:
            self._add_endpoints(names, selection)

    def _add_endpoints(self, names: list[str], selection: ec2.SubnetSelection) -> None:
        group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="evalstack VPC endpoints: HTTPS from inside the VPC only",
            allow_all_outbound=False,
        )
        group.add_ingress_rule(ec2.Peer.ipv4(self.cidr), ec2.Port.tcp(HTTPS), "HTTPS from the VPC")
        if Token.is_unresolved(self.cidr):
            acknowledge(
                group,
                AWS_SOLUTIONS,
                "AwsSolutions-EC23",
                "The only ingress is HTTPS from the VPC's own CIDR block, a reference to a VPC of another stack "
                "that cdk-nag cannot evaluate; it is never 0.0.0.0/0 or ::/0.",
            )
        self.endpoint_security_group = group
        account = Stack.of(self).account
        for name in names:
            endpoint = ec2.InterfaceVpcEndpoint(
                self,
                f"{name}Endpoint",
                vpc=self.vpc,
                service=MLFLOW_SERVICE if name == MLFLOW_ENDPOINT else INTERFACE_ENDPOINTS[name],
                subnets=selection,
                security_groups=[group],
                private_dns_enabled=True,
                open=False,
            )
            conditions = {"aws:PrincipalAccount": account}
            if name in SAME_ACCOUNT_RESOURCES:
                conditions["aws:ResourceAccount"] = account
            endpoint.add_to_policy(
                iam.PolicyStatement(
                    sid="OnlyThisAccount",
                    principals=[iam.AnyPrincipal()],
                    # An endpoint policy bounds what may pass through it; the callers' own IAM
                    # policies grant the actions. Here it fences the accounts, not the actions.
                    actions=["*"],
                    resources=[self.mlflow_tracking_server_arn if name == MLFLOW_ENDPOINT else "*"],
                    conditions={"StringEquals": conditions},
                )
            )
            if name == "S3":
                # ECR serves image layers from an AWS-owned bucket, reached through the S3 endpoint.
                endpoint.add_to_policy(
                    iam.PolicyStatement(
                        sid="EcrImageLayers",
                        principals=[iam.AnyPrincipal()],
                        actions=["s3:GetObject"],
                        resources=[f"arn:{Stack.of(self).partition}:s3:::prod-{Stack.of(self).region}-starport-layer-bucket/*"],
                        conditions={"StringEquals": {"aws:PrincipalAccount": account}},
                    )
                )
            self.endpoints[name] = endpoint

    def allow_s3_reads(self, object_arns: Sequence[str], bucket_arns: Sequence[str]) -> None:
        """Let this account's principals get ``object_arns`` and list ``bucket_arns`` through the S3 endpoint,
        also in buckets of other accounts (model artifacts, JumpStart's). No-op without an S3 endpoint here:
        the endpoint's owner must then allow them."""
        endpoint = self.endpoints.get("S3")
        if endpoint is None:
            return
        account = Stack.of(self).account
        endpoint.add_to_policy(
            iam.PolicyStatement(
                sid="ModelArtifacts",
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject", *(["s3:ListBucket"] if bucket_arns else [])],
                resources=[*object_arns, *bucket_arns],
                conditions={"StringEquals": {"aws:PrincipalAccount": account}},
            )
        )

    @property
    def subnet_ids(self) -> list[str]:
        return self.subnets.subnet_ids

    @property
    def security_group_ids(self) -> list[str]:
        return [self.job_security_group.security_group_id]


def _drop_redundant_dependency(stack: Stack) -> None:
    """CDK's default-security-group provider makes its handler depend on its role, which the handler's
    Role GetAtt already implies (cfn-lint W3005); the explicit dependency is dropped."""
    provider = stack.node.try_find_child("Custom::VpcRestrictDefaultSGCustomResourceProvider")
    if provider is not None:
        provider.node.find_child("Handler").remove_resource_dependency(provider.node.find_child("Role"))

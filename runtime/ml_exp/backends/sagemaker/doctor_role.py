"""``exp doctor``'s role checks: the execution role exists, trusts SageMaker, and (simulated with
``iam:SimulatePrincipalPolicy``) is allowed every action the jobs need on this experiment's bucket,
image, logs, secret and key."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from ml_exp.backends.sagemaker.doctor_checks import (
    ECR_URI,
    FAIL,
    OK,
    WARN,
    Check,
    Clients,
    bucket_and_prefix,
    error_code,
    why,
)
from ml_exp.backends.sagemaker.sdk_errors import EXECUTION_POLICY, EXPERIMENTER_POLICY, TRUST_POLICY

SERVICE = "sagemaker.amazonaws.com"
PROBE_FOLDER = ".ml-exp-doctor"  # where exp doctor writes its probe object
# What the SageMaker SDK simulates on the role before every training job (its *-resource actions,
# sagemaker.core.helper.iam_policies, role type "training"): a role without them gets RoleValidationError.
SDK_CHECKED_ACTIONS = (
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "ec2:CreateNetworkInterface",
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
)
ECR_PULL = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability")
LOGS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")
KMS = ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:CreateGrant")


def role_name(arn: str) -> str:
    return arn.split(":role/", 1)[-1].split("/")[-1]


def trusted_services(document: Any) -> set[str]:
    """The service principals an IAM trust policy lets assume the role (``sts:AssumeRole``)."""
    if isinstance(document, str):
        document = json.loads(unquote(document))
    services: set[str] = set()
    statements = document.get("Statement", [])
    for statement in [statements] if isinstance(statements, dict) else statements:
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if statement.get("Effect") != "Allow" or not any(a in ("sts:AssumeRole", "sts:*", "*") for a in actions):
            continue
        principal = statement.get("Principal", {})
        service = principal.get("Service", []) if isinstance(principal, dict) else []
        services.update([service] if isinstance(service, str) else service)
    return services


def role_needs(config: Any) -> list[tuple[tuple[str, ...], list[str]]]:
    """What the execution role must be allowed, as (actions, resource ARNs) groups ([] : any resource)."""
    needs: list[tuple[tuple[str, ...], list[str]]] = [(SDK_CHECKED_ACTIONS, [])]
    if config.storage_uri.startswith("s3://"):
        bucket, prefix = bucket_and_prefix(config.storage_uri)
        objects = f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}{PROBE_FOLDER}/probe"
        needs += [(("s3:ListBucket",), [f"arn:aws:s3:::{bucket}"]), (("s3:GetObject", "s3:PutObject"), [objects])]
    match = ECR_URI.match(config.image_uri or "")
    if match:
        needs.append((ECR_PULL, [f"arn:aws:ecr:{match['region']}:{match['account']}:repository/{match['repository']}"]))
    needs.append(
        (
            LOGS,
            [
                f"arn:aws:logs:{config.aws_region}:{_account(config.sagemaker_role_arn)}:log-group:/aws/sagemaker/TrainingJobs:log-stream:probe"
            ],
        )
    )
    secret_id = getattr(config, "wandb_api_key_secret", "") or ""
    if secret_id:
        arn = (
            secret_id
            if secret_id.startswith("arn:")
            else f"arn:aws:secretsmanager:{config.aws_region}:{_account(config.sagemaker_role_arn)}:secret:"
            f"{secret_id}-AbCdEf"
        )
        needs.append((("secretsmanager:GetSecretValue",), [arn]))
    kms = getattr(config, "kms_key_id", "") or ""
    if kms:
        arn = (
            kms
            if kms.startswith("arn:")
            else f"arn:aws:kms:{config.aws_region}:{_account(config.sagemaker_role_arn)}:key/{kms}"
        )
        needs.append((KMS, [arn]))
    return needs


def _account(arn: str) -> str:
    parts = (arn or "").split(":")
    return parts[4] if len(parts) > 4 and parts[4] else "*"


def simulate(iam: Any, role_arn: str, actions: Iterable[str], resources: list[str]) -> list[str]:
    """The actions ``role_arn``'s policies do not allow (on ``resources``)."""
    denied = []
    arguments: dict[str, Any] = {"PolicySourceArn": role_arn, "ActionNames": list(actions)}
    if resources:
        arguments["ResourceArns"] = resources
    for page in iam.get_paginator("simulate_principal_policy").paginate(**arguments):
        denied += [r["EvalActionName"] for r in page.get("EvaluationResults", []) if r.get("EvalDecision") != "allowed"]
    return denied


def check_role(config: Any, clients: Clients, checks: list[Check], identity: dict[str, str]) -> None:
    arn = config.sagemaker_role_arn
    if not arn:
        checks.append(
            Check(
                "role",
                FAIL,
                f"SAGEMAKER_ROLE_ARN is not set: create a role with {TRUST_POLICY} and "
                f"{EXECUTION_POLICY}, then set its ARN",
            )
        )
        return
    iam = clients("iam")
    try:
        role = iam.get_role(RoleName=role_name(arn))["Role"]
    except Exception as exc:  # noqa: BLE001
        if error_code(exc) in ("NoSuchEntity", "NoSuchEntityException"):
            checks.append(
                Check(
                    "role",
                    FAIL,
                    f"SAGEMAKER_ROLE_ARN {arn} does not exist: create it (trust policy {TRUST_POLICY}, "
                    f"permissions {EXECUTION_POLICY})",
                )
            )
        else:
            checks.append(
                Check(
                    "role",
                    WARN,
                    f"cannot read {arn} ({why(exc)}); your identity needs iam:GetRole on it ({EXPERIMENTER_POLICY})",
                )
            )
        return
    if role["Arn"] != arn:
        checks.append(
            Check(
                "role",
                FAIL,
                f"SAGEMAKER_ROLE_ARN {arn} names role {role['RoleName']}, whose ARN is {role['Arn']}; use that ARN",
            )
        )
        return
    if SERVICE not in trusted_services(role.get("AssumeRolePolicyDocument") or {}):
        checks.append(
            Check(
                "role",
                FAIL,
                f"{arn} does not trust {SERVICE}: SageMaker cannot assume it; give it the trust policy {TRUST_POLICY}",
            )
        )
        return
    checks.append(Check("role", OK, f"{arn} exists and trusts {SERVICE}"))
    denied: list[str] = []
    try:
        for actions, resources in role_needs(config):
            denied += simulate(iam, arn, actions, resources)
    except Exception as exc:  # noqa: BLE001 - the simulation is a nicety: a warning, not a failure
        checks.append(
            Check(
                "role permissions",
                WARN,
                f"could not simulate the role's policies ({why(exc)}); your identity needs "
                f"iam:SimulatePrincipalPolicy on it ({EXPERIMENTER_POLICY}), or check the role by hand "
                f"against {EXECUTION_POLICY}",
            )
        )
        return
    if denied:
        checks.append(
            Check(
                "role permissions",
                FAIL,
                f"{arn} lacks {', '.join(dict.fromkeys(denied))}: attach {EXECUTION_POLICY} "
                "(with your bucket, account and region filled in)",
            )
        )
    else:
        checks.append(Check("role permissions", OK, "allowed everything the jobs need (simulated)"))

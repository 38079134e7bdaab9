"""``exp doctor``: is this AWS account ready for the experiment's SageMaker jobs, before any money is spent?

Each check is a line: ok, or what is wrong and what to do. In order: credentials (STS), region,
the runs bucket (write, read, conditional write, delete of a probe object; in the job's region),
the execution role (exists, trusted by sagemaker.amazonaws.com, simulated for the actions the
jobs need), the images in ECR, the W&B key's secret, and the account's Service Quotas for each
instance type the settings name. A check that cannot run (e.g. the caller may not simulate IAM
policies) says so, as a warning: it does not fail the doctor.

Plain functions over a boto3 session and the settings (:class:`ml_exp.config.Config` or any
object with the same attributes); nothing is created but the probe object, which is deleted.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from ml_exp.backends.sagemaker.sdk_errors import EXECUTION_POLICY, EXPERIMENTER_POLICY, TRUST_POLICY

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"
PROBE_FOLDER = ".ml-exp-doctor"
SERVICE = "sagemaker.amazonaws.com"
# What the SageMaker SDK simulates on the role before every training job (its *-resource actions,
# sagemaker.core.helper.iam_policies, role type "training"): a role without them gets RoleValidationError.
SDK_CHECKED_ACTIONS = (
    "ecr:GetAuthorizationToken", "cloudwatch:PutMetricData",
    "ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission", "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs",
    "ec2:DescribeDhcpOptions", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
)
ECR_PULL = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability")
LOGS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")
KMS = ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:CreateGrant")
ECR_URI = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
                     r"(?P<repository>[^:@]+)(?::(?P<tag>[\w.-]+)|@(?P<digest>sha256:[0-9a-f]{64}))$")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, FAIL, WARN or SKIP
    message: str

    def __str__(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.message}"


Clients = Callable[[str], Any]


def _code(exc: BaseException) -> str:
    return ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code") or type(exc).__name__


def _why(exc: BaseException) -> str:
    error = (getattr(exc, "response", None) or {}).get("Error") or {}
    message = (error.get("Message") or str(exc)).splitlines()
    return f"{_code(exc)}: {message[0] if message else ''}".rstrip(": ")


def _denied(exc: BaseException) -> bool:
    return _code(exc) in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403")


def clients_of(session: Any) -> Clients:
    """Clients of ``session`` that give up fast (a doctor must not hang on one check)."""
    from botocore.config import Config as BotoConfig

    settings = BotoConfig(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    made: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in made:
            made[service] = session.client(service, config=settings)
        return made[service]

    return client


def run_checks(config: Any, session: Any = None, clients: Clients | None = None) -> list[Check]:
    """Every check, in order; a later check that needs an earlier one is skipped when it failed."""
    if clients is None:
        import boto3

        clients = clients_of(session or boto3.Session(region_name=config.aws_region))
    checks: list[Check] = []
    identity = check_credentials(clients, checks)
    if identity is None:
        for name in ("region", "bucket", "role", "image", "quotas"):
            checks.append(Check(name, SKIP, "needs working credentials"))
        return checks
    check_region(config, clients, checks)
    check_bucket(config, clients, checks)
    check_role(config, clients, checks, identity)
    for setting in ("IMAGE_URI", "SERVING_IMAGE_URI"):
        uri = getattr(config, setting.lower(), "") or ""
        if uri or setting == "IMAGE_URI":
            checks.append(check_image(setting, uri, config.aws_region, clients))
    secret_id = getattr(config, "wandb_api_key_secret", "") or ""
    if secret_id:
        checks.append(check_secret(secret_id, clients))
    elif getattr(config, "wandb_mode", "") == "online":
        checks.append(Check("secret", FAIL, "WANDB_MODE = online, and no WANDB_API_KEY_SECRET: the jobs would have no W&B key. "
                                             "Store the key in Secrets Manager and name the secret in WANDB_API_KEY_SECRET"))
    checks.extend(check_quotas(instance_needs(config), clients))
    return checks


def failed(checks: Iterable[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


# --- the checks ------------------------------------------------------------------------------------


def check_credentials(clients: Clients, checks: list[Check]) -> dict[str, str] | None:
    try:
        identity = clients("sts").get_caller_identity()
    except Exception as exc:  # noqa: BLE001 - every failure is a line
        checks.append(Check("credentials", FAIL, f"no usable AWS credentials ({_why(exc)}); configure them: `aws configure`, "
                                                 "`aws sso login`, or AWS_PROFILE / AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY"))
        return None
    checks.append(Check("credentials", OK, f"{identity['Arn']} (account {identity['Account']})"))
    return {"arn": identity["Arn"], "account": identity["Account"]}


def check_region(config: Any, clients: Clients, checks: list[Check]) -> None:
    import boto3

    region = config.aws_region
    offered = boto3.Session().get_available_regions("sagemaker")
    if offered and region not in offered:
        checks.append(Check("region", FAIL, f"AWS_REGION {region}: SageMaker is not offered there; use one of {', '.join(sorted(offered)[:6])}..."))
    else:
        checks.append(Check("region", OK, f"{region} (AWS_REGION)"))


def _bucket_and_prefix(storage_uri: str) -> tuple[str, str]:
    bucket, _, prefix = storage_uri[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def check_bucket(config: Any, clients: Clients, checks: list[Check]) -> None:
    """Write, read, conditional write and delete of a probe object under STORAGE_URI; the bucket's region."""
    uri = config.storage_uri
    if not uri.startswith("s3://"):
        checks.append(Check("bucket", FAIL if getattr(config, "backend", "") == "sagemaker" else SKIP,
                            f"STORAGE_URI is {uri}: SageMaker jobs read and write S3; set STORAGE_URI = s3://bucket/prefix"))
        return
    bucket, prefix = _bucket_and_prefix(uri)
    s3 = clients("s3")
    key = "/".join(p for p in (prefix, PROBE_FOLDER, secrets.token_hex(8)) if p)
    body = b"ml-exp doctor probe"
    step = "write (s3:PutObject)"
    try:
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
        if location != config.aws_region:
            checks.append(Check("bucket", FAIL, f"s3://{bucket} is in {location}, the jobs in {config.aws_region} (AWS_REGION): SageMaker "
                                                "reads a job's data from its own region; use a bucket there or set AWS_REGION"))
            return
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        step = "read (s3:GetObject)"
        if s3.get_object(Bucket=bucket, Key=key)["Body"].read() != body:
            checks.append(Check("bucket", FAIL, f"s3://{bucket}/{key} reads back different bytes than were written"))
            return
        step = "conditional write (s3:PutObject with If-None-Match)"
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            conditional = False
        except Exception as exc:  # noqa: BLE001
            if _code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
            conditional = True
        step = "delete (s3:DeleteObject)"
        s3.delete_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001
        hint = f"grant your identity {EXPERIMENTER_POLICY} for this bucket" if _denied(exc) else "check STORAGE_URI"
        if _code(exc) == "NoSuchBucket":
            hint = f"create it: aws s3 mb s3://{bucket} --region {config.aws_region}"
        checks.append(Check("bucket", FAIL, f"s3://{bucket}/{prefix}: {step} failed ({_why(exc)}); {hint}"))
        return
    if not conditional:
        checks.append(Check("bucket", FAIL, f"s3://{bucket} accepted a conditional write over an existing object: run numbers "
                                            "could not be claimed safely; use an S3 bucket (S3 supports If-None-Match)"))
        return
    checks.append(Check("bucket", OK, f"s3://{bucket}/{prefix} in {config.aws_region}: write, read, conditional write, delete"))


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
        bucket, prefix = _bucket_and_prefix(config.storage_uri)
        objects = f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}{PROBE_FOLDER}/probe"
        needs += [(("s3:ListBucket",), [f"arn:aws:s3:::{bucket}"]), (("s3:GetObject", "s3:PutObject"), [objects])]
    match = ECR_URI.match(config.image_uri or "")
    if match:
        needs.append((ECR_PULL, [f"arn:aws:ecr:{match['region']}:{match['account']}:repository/{match['repository']}"]))
    needs.append((LOGS, [f"arn:aws:logs:{config.aws_region}:{_account(config.sagemaker_role_arn)}:log-group:/aws/sagemaker/TrainingJobs:log-stream:probe"]))
    secret_id = getattr(config, "wandb_api_key_secret", "") or ""
    if secret_id:
        arn = secret_id if secret_id.startswith("arn:") else f"arn:aws:secretsmanager:{config.aws_region}:{_account(config.sagemaker_role_arn)}:secret:{secret_id}-AbCdEf"
        needs.append((("secretsmanager:GetSecretValue",), [arn]))
    kms = getattr(config, "kms_key_id", "") or ""
    if kms:
        arn = kms if kms.startswith("arn:") else f"arn:aws:kms:{config.aws_region}:{_account(config.sagemaker_role_arn)}:key/{kms}"
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
        checks.append(Check("role", FAIL, f"SAGEMAKER_ROLE_ARN is not set: create a role with {TRUST_POLICY} and "
                                          f"{EXECUTION_POLICY}, then set its ARN"))
        return
    iam = clients("iam")
    try:
        role = iam.get_role(RoleName=role_name(arn))["Role"]
    except Exception as exc:  # noqa: BLE001
        if _code(exc) in ("NoSuchEntity", "NoSuchEntityException"):
            checks.append(Check("role", FAIL, f"SAGEMAKER_ROLE_ARN {arn} does not exist: create it (trust policy {TRUST_POLICY}, "
                                              f"permissions {EXECUTION_POLICY})"))
        else:
            checks.append(Check("role", WARN, f"cannot read {arn} ({_why(exc)}); your identity needs iam:GetRole on it ({EXPERIMENTER_POLICY})"))
        return
    if role["Arn"] != arn:
        checks.append(Check("role", FAIL, f"SAGEMAKER_ROLE_ARN {arn} names role {role['RoleName']}, whose ARN is {role['Arn']}; use that ARN"))
        return
    if SERVICE not in trusted_services(role.get("AssumeRolePolicyDocument") or {}):
        checks.append(Check("role", FAIL, f"{arn} does not trust {SERVICE}: SageMaker cannot assume it; give it the trust policy {TRUST_POLICY}"))
        return
    checks.append(Check("role", OK, f"{arn} exists and trusts {SERVICE}"))
    denied: list[str] = []
    try:
        for actions, resources in role_needs(config):
            denied += simulate(iam, arn, actions, resources)
    except Exception as exc:  # noqa: BLE001 - the simulation is a nicety: a warning, not a failure
        checks.append(Check("role permissions", WARN, f"could not simulate the role's policies ({_why(exc)}); your identity needs "
                                                      f"iam:SimulatePrincipalPolicy on it ({EXPERIMENTER_POLICY}), or check the role by hand "
                                                      f"against {EXECUTION_POLICY}"))
        return
    if denied:
        checks.append(Check("role permissions", FAIL, f"{arn} lacks {', '.join(dict.fromkeys(denied))}: attach {EXECUTION_POLICY} "
                                                      "(with your bucket, account and region filled in)"))
    else:
        checks.append(Check("role permissions", OK, "allowed everything the jobs need (simulated)"))


def check_image(setting: str, uri: str, region: str, clients: Clients) -> Check:
    name = "image" if setting == "IMAGE_URI" else "serving image"
    if not uri:
        return Check(name, FAIL, f"{setting} is not set: build and push the experiment's image (scripts/build_and_push.sh) and set the URI it prints")
    match = ECR_URI.match(uri)
    if not match:
        return Check(name, FAIL, f"{setting} {uri} is not an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>): "
                                 "SageMaker pulls job images from ECR; push it there with scripts/build_and_push.sh")
    if match["region"] != region:
        return Check(name, FAIL, f"{setting} is in {match['region']}, the jobs in {region} (AWS_REGION): push the image to {region}")
    image_id = {"imageTag": match["tag"]} if match["tag"] else {"imageDigest": match["digest"]}
    try:
        found = clients("ecr").describe_images(registryId=match["account"], repositoryName=match["repository"], imageIds=[image_id])
    except Exception as exc:  # noqa: BLE001
        code = _code(exc)
        if code == "RepositoryNotFoundException":
            return Check(name, FAIL, f"{setting}: repository {match['repository']} does not exist in {match['account']}/{region}: "
                                     "scripts/build_and_push.sh creates it and pushes the image")
        if code == "ImageNotFoundException":
            return Check(name, FAIL, f"{setting}: {uri} is not in ECR (the repository exists): push it with scripts/build_and_push.sh")
        return Check(name, WARN, f"{setting}: cannot look it up ({_why(exc)}); your identity needs ecr:DescribeImages ({EXPERIMENTER_POLICY})")
    detail = found["imageDetails"][0] if found.get("imageDetails") else {}
    size = detail.get("imageSizeInBytes")
    shown = "" if not size else f" ({size / 1e9:.1f} GB)" if size >= 1e8 else f" ({size / 1e6:.1f} MB)"
    return Check(name, OK, f"{uri} is in ECR{shown}")


def check_secret(secret_id: str, clients: Clients) -> Check:
    try:
        clients("secretsmanager").describe_secret(SecretId=secret_id)
    except Exception as exc:  # noqa: BLE001
        if _code(exc) == "ResourceNotFoundException":
            return Check("secret", FAIL, f"WANDB_API_KEY_SECRET {secret_id} does not exist: "
                                         f"aws secretsmanager create-secret --name {secret_id} --secret-string <your W&B key>")
        return Check("secret", WARN, f"WANDB_API_KEY_SECRET {secret_id}: cannot describe it ({_why(exc)}); "
                                     f"your identity needs secretsmanager:DescribeSecret ({EXPERIMENTER_POLICY})")
    return Check("secret", OK, f"WANDB_API_KEY_SECRET {secret_id} exists (its value is read by the jobs, not here)")


# --- quotas ------------------------------------------------------------------------------------------


def instance_needs(config: Any) -> dict[tuple[str, str], tuple[int, str]]:
    """(instance type, usage) -> (instances needed at once, for what): the Service Quotas the
    settings need. Usage as AWS names the quotas: "training job", "spot training job", "endpoint"."""
    needs: dict[tuple[str, str], tuple[int, str]] = {}

    def need(itype: str | None, usage: str, count: int, what: str) -> None:
        if not itype:
            return
        have = needs.get((itype, usage))
        if have is None or count > have[0]:
            needs[(itype, usage)] = (count, what)

    steps = set(getattr(config, "steps", ()) or ())
    training_usage = "spot training job" if config.use_spot else "training job"
    if "preparation" in steps:
        need(config.preparation_instance_type, training_usage, 1, "PREPARATION_INSTANCE_TYPE")
    if "training" in steps:
        need(config.training_instance_type, training_usage, config.training_instance_count, "TRAINING_INSTANCE_TYPE x TRAINING_INSTANCE_COUNT")
    if "tuning" in steps:
        need(config.training_instance_type, training_usage, config.training_instance_count * config.tuning_parallel_trials,
             "TRAINING_INSTANCE_COUNT x TUNING_PARALLEL_TRIALS")
    if "inference" in steps:
        need(config.inference_instance_type, training_usage, 1, "INFERENCE_INSTANCE_TYPE")
    if not getattr(config, "endpoint_serverless_memory_mb", None):
        need(config.endpoint_instance_type, "endpoint", config.endpoint_instance_count, "ENDPOINT_INSTANCE_TYPE x ENDPOINT_INSTANCE_COUNT (exp deploy)")
    return needs


def check_quotas(needs: dict[tuple[str, str], tuple[int, str]], clients: Clients) -> list[Check]:
    """Each needed instance type against the account's SageMaker quotas (Service Quotas)."""
    if not needs:
        return []
    quotas: dict[str, dict[str, Any]] = {}
    try:
        for page in clients("service-quotas").get_paginator("list_service_quotas").paginate(ServiceCode="sagemaker"):
            for quota in page.get("Quotas", []):
                quotas[quota["QuotaName"]] = quota
    except Exception as exc:  # noqa: BLE001
        return [Check("quotas", WARN, f"cannot read the account's SageMaker quotas ({_why(exc)}); your identity needs "
                                      f"servicequotas:ListServiceQuotas ({EXPERIMENTER_POLICY}), or see the console's Service Quotas page")]
    checks = []
    for (itype, usage), (count, what) in sorted(needs.items()):
        name = f"{itype} for {usage} usage"
        quota = quotas.get(name)
        if quota is None:
            checks.append(Check("quota", WARN, f"no quota named '{name}' in this region: the instance type may not be offered here"))
        elif quota.get("Value", 0) < count:
            checks.append(Check("quota", FAIL, f"{name} is {quota.get('Value', 0):g}, {what} needs {count}: request more: "
                                               f"aws service-quotas request-service-quota-increase --service-code sagemaker "
                                               f"--quota-code {quota['QuotaCode']} --desired-value {count}"))
        else:
            checks.append(Check("quota", OK, f"{name}: {quota['Value']:g} (needs {count})"))
    return checks

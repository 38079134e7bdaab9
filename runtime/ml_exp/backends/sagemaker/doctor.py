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

import secrets
from typing import Any

from ml_exp.backends.sagemaker.doctor_checks import (
    ECR_URI,
    FAIL,
    OK,
    SKIP,
    WARN,
    Check,
    Clients,
    bucket_and_prefix,
    clients_of,
    denied,
    error_code,
    failed,
    why,
)
from ml_exp.backends.sagemaker.doctor_quotas import check_quotas, instance_needs
from ml_exp.backends.sagemaker.doctor_role import (
    ECR_PULL,
    KMS,
    LOGS,
    PROBE_FOLDER,
    SDK_CHECKED_ACTIONS,
    check_role,
    role_needs,
)
from ml_exp.backends.sagemaker.sdk_errors import EXPERIMENTER_POLICY

__all__ = [
    "ECR_PULL",
    "FAIL",
    "KMS",
    "LOGS",
    "OK",
    "SDK_CHECKED_ACTIONS",
    "SKIP",
    "WARN",
    "Check",
    "clients_of",
    "failed",
    "instance_needs",
    "role_needs",
    "run_checks",
]


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
        checks.append(
            Check(
                "secret",
                FAIL,
                "WANDB_MODE = online, and no WANDB_API_KEY_SECRET: the jobs would have no W&B key. "
                "Store the key in Secrets Manager and name the secret in WANDB_API_KEY_SECRET",
            )
        )
    checks.extend(check_quotas(instance_needs(config), clients))
    return checks


def check_credentials(clients: Clients, checks: list[Check]) -> dict[str, str] | None:
    try:
        identity = clients("sts").get_caller_identity()
    except Exception as exc:  # noqa: BLE001 - every failure is a line
        checks.append(
            Check(
                "credentials",
                FAIL,
                f"no usable AWS credentials ({why(exc)}); configure them: `aws configure`, "
                "`aws sso login`, or AWS_PROFILE / AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY",
            )
        )
        return None
    checks.append(Check("credentials", OK, f"{identity['Arn']} (account {identity['Account']})"))
    return {"arn": identity["Arn"], "account": identity["Account"]}


def check_region(config: Any, clients: Clients, checks: list[Check]) -> None:
    import boto3

    region = config.aws_region
    offered = boto3.Session().get_available_regions("sagemaker")
    if offered and region not in offered:
        checks.append(
            Check(
                "region",
                FAIL,
                f"AWS_REGION {region}: SageMaker is not offered there; use one of {', '.join(sorted(offered)[:6])}...",
            )
        )
    else:
        checks.append(Check("region", OK, f"{region} (AWS_REGION)"))


def check_bucket(config: Any, clients: Clients, checks: list[Check]) -> None:
    """Write, read, conditional write and delete of a probe object under STORAGE_URI; the bucket's region."""
    uri = config.storage_uri
    if not uri.startswith("s3://"):
        checks.append(
            Check(
                "bucket",
                FAIL if getattr(config, "backend", "") == "sagemaker" else SKIP,
                f"STORAGE_URI is {uri}: SageMaker jobs read and write S3; set STORAGE_URI = s3://bucket/prefix",
            )
        )
        return
    bucket, prefix = bucket_and_prefix(uri)
    s3 = clients("s3")
    key = "/".join(p for p in (prefix, PROBE_FOLDER, secrets.token_hex(8)) if p)
    body = b"ml-exp doctor probe"
    step = "write (s3:PutObject)"
    try:
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
        if location != config.aws_region:
            checks.append(
                Check(
                    "bucket",
                    FAIL,
                    f"s3://{bucket} is in {location}, the jobs in {config.aws_region} (AWS_REGION): SageMaker "
                    "reads a job's data from its own region; use a bucket there or set AWS_REGION",
                )
            )
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
            if error_code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
            conditional = True
        step = "delete (s3:DeleteObject)"
        s3.delete_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001
        hint = f"grant your identity {EXPERIMENTER_POLICY} for this bucket" if denied(exc) else "check STORAGE_URI"
        if error_code(exc) == "NoSuchBucket":
            hint = f"create it: aws s3 mb s3://{bucket} --region {config.aws_region}"
        checks.append(Check("bucket", FAIL, f"s3://{bucket}/{prefix}: {step} failed ({why(exc)}); {hint}"))
        return
    if not conditional:
        checks.append(
            Check(
                "bucket",
                FAIL,
                f"s3://{bucket} accepted a conditional write over an existing object: run numbers "
                "could not be claimed safely; use an S3 bucket (S3 supports If-None-Match)",
            )
        )
        return
    checks.append(
        Check("bucket", OK, f"s3://{bucket}/{prefix} in {config.aws_region}: write, read, conditional write, delete")
    )


def check_image(setting: str, uri: str, region: str, clients: Clients) -> Check:
    name = "image" if setting == "IMAGE_URI" else "serving image"
    if not uri:
        return Check(
            name,
            FAIL,
            f"{setting} is not set: build and push the experiment's image (scripts/build_and_push.sh) and set the URI "
            "it prints",
        )
    match = ECR_URI.match(uri)
    if not match:
        return Check(
            name,
            FAIL,
            f"{setting} {uri} is not an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>): "
            "SageMaker pulls job images from ECR; push it there with scripts/build_and_push.sh",
        )
    if match["region"] != region:
        return Check(
            name,
            FAIL,
            f"{setting} is in {match['region']}, the jobs in {region} (AWS_REGION): push the image to {region}",
        )
    image_id = {"imageTag": match["tag"]} if match["tag"] else {"imageDigest": match["digest"]}
    try:
        found = clients("ecr").describe_images(
            registryId=match["account"], repositoryName=match["repository"], imageIds=[image_id]
        )
    except Exception as exc:  # noqa: BLE001
        code = error_code(exc)
        if code == "RepositoryNotFoundException":
            return Check(
                name,
                FAIL,
                f"{setting}: repository {match['repository']} does not exist in {match['account']}/{region}: "
                "scripts/build_and_push.sh creates it and pushes the image",
            )
        if code == "ImageNotFoundException":
            return Check(
                name,
                FAIL,
                f"{setting}: {uri} is not in ECR (the repository exists): push it with scripts/build_and_push.sh",
            )
        return Check(
            name,
            WARN,
            f"{setting}: cannot look it up ({why(exc)}); your identity needs ecr:DescribeImages "
            f"({EXPERIMENTER_POLICY})",
        )
    detail = found["imageDetails"][0] if found.get("imageDetails") else {}
    size = detail.get("imageSizeInBytes")
    shown = "" if not size else f" ({size / 1e9:.1f} GB)" if size >= 1e8 else f" ({size / 1e6:.1f} MB)"
    return Check(name, OK, f"{uri} is in ECR{shown}")


def check_secret(secret_id: str, clients: Clients) -> Check:
    try:
        clients("secretsmanager").describe_secret(SecretId=secret_id)
    except Exception as exc:  # noqa: BLE001
        if error_code(exc) == "ResourceNotFoundException":
            return Check(
                "secret",
                FAIL,
                f"WANDB_API_KEY_SECRET {secret_id} does not exist: "
                f"aws secretsmanager create-secret --name {secret_id} --secret-string <your W&B key>",
            )
        return Check(
            "secret",
            WARN,
            f"WANDB_API_KEY_SECRET {secret_id}: cannot describe it ({why(exc)}); "
            f"your identity needs secretsmanager:DescribeSecret ({EXPERIMENTER_POLICY})",
        )
    return Check("secret", OK, f"WANDB_API_KEY_SECRET {secret_id} exists (its value is read by the jobs, not here)")

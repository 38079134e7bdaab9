"""SageMaker endpoints from a run's model: ``exp deploy``, ``exp endpoints``, ``exp undeploy``.

A deployment is three SageMaker resources of one name, ``<experiment>-r<N>-<model>-<token>``
(:func:`endpoint_name`: the run number follows the model into production): a model (an image,
:func:`image`: the CPU serving image ``SERVING_IMAGE_URI`` for a serverless endpoint, else the
experiment's ``IMAGE_URI`` unless ``ENDPOINT_IMAGE`` says otherwise; serving the run's
``serving/<model>/model.tar.gz``), an endpoint config (``ENDPOINT_INSTANCE_TYPE`` x
``ENDPOINT_INSTANCE_COUNT``, or serverless with ``ENDPOINT_SERVERLESS_MEMORY_MB``; ``KMS_KEY_ID``
for the instances' volume, unless the type has local NVMe storage) and the endpoint. All three carry tags
``ml-exp:experiment``, ``ml-exp:run``, ``ml-exp:model``, ``ml-exp:git-commit`` and
``ml-exp:template-version``: from an endpoint back to its run, and ``exp endpoints`` lists them.

Inside the image SageMaker runs ``serve`` (the base image's script for ``python -m
ml_exp.backends.sagemaker.container serve``), which serves the bundle in ``/opt/ml/model`` with
the same predictor as ``exp serve``. The model's environment holds no setting and no secret:
the run's settings travel in the bundle; ``WANDB_API_KEY_SECRET``, when set, only names the
Secrets Manager secret the container reads at start. Calls go through boto3 (three plain API calls; the
SDK v3's ModelBuilder would add its own packaging and naming).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from ml_exp.backends.sagemaker.instances import volume_kms_key
from ml_exp.backends.sagemaker.jobs import EXPERIMENT_DIR, MAX_NAME, clean_name, sagemaker_name
from ml_exp.backends.sagemaker.sdk_errors import explain

LOG_GROUP = "/aws/sagemaker/Endpoints"
TAG_PREFIX = "ml-exp:"
VARIANT = "AllTraffic"
# The serving container's whole environment: where the experiment's code is in the image.
ENVIRONMENT = {"ML_EXP_EXPERIMENT_DIR": EXPERIMENT_DIR}
# The serving image's code: the model's code/ folder (ml_exp.serving.bundle.CODE), unpacked by SageMaker
SERVING_CODE_DIR = "/opt/ml/model/code"
SERVERLESS_MAX_CONCURRENCY = 5
FINAL = ("InService", "Failed", "OutOfService")


class EndpointFailed(Exception):
    """An endpoint did not come into service; the message says why and where its logs are."""

    def __init__(self, name: str, status: str, reason: str | None, region: str):
        self.name, self.status, self.reason, self.log_group = name, status, reason, f"{LOG_GROUP}/{name}"
        self.logs_url = (
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/"
            f"log-group/$252Faws$252Fsagemaker$252FEndpoints$252F{name}"
        )
        super().__init__(
            f"SageMaker endpoint {name} is {status}: {reason or 'no reason given'}. Its logs are in CloudWatch "
            f"log group {self.log_group}: {self.logs_url} (or: aws logs tail {self.log_group} --region {region})"
        )


def endpoint_name(experiment: str, run_num: int, model: str, token: str | None = None) -> str:
    """``<experiment>-r<N>-<model>-<token>`` (<= 63 characters; ``token`` makes it unique)."""
    return sagemaker_name(experiment, run_num, None, model, token, salt="endpoint")


def name_prefix(experiment: str) -> str:
    """What every endpoint name of ``experiment`` starts with, even shortened (a filter for listing)."""
    return clean_name(experiment)[: MAX_NAME // 4]


def _tag_value(value: Any) -> str:
    return re.sub(r"[^\w.:/=+@ -]", "_", str(value if value is not None else ""))[:256]


def tags(info: dict[str, Any]) -> list[dict[str, str]]:
    git = info.get("git") or {}
    values = {
        "experiment": info["experiment"],
        "run": info["run"],
        "model": info["model"],
        "git-commit": git.get("commit") or "none",
        "template-version": info.get("template_version") or "none",
    }
    return [{"Key": f"{TAG_PREFIX}{key}", "Value": _tag_value(value)} for key, value in values.items()]


def image(config: Any) -> str:
    """The endpoint's image: ENDPOINT_IMAGE = serving or training, or auto: the CPU serving image
    (SERVING_IMAGE_URI) for a serverless endpoint, IMAGE_URI on instances."""
    choice = getattr(config, "endpoint_image", "auto")
    if choice == "auto":
        choice = "serving" if config.endpoint_serverless_memory_mb else "training"
    return (config.serving_image_uri if choice == "serving" else "") or config.image_uri


def spec(config: Any, info: dict[str, Any], model_data: str, name: str | None = None) -> dict[str, Any]:
    """The three requests of a deployment (boto3's parameters, as sent), for the model of ``info``
    (a bundle's SERVING_INFO) packed at ``model_data``."""
    name = name or endpoint_name(info["experiment"], info["run"], info["model"])
    tagged = tags(info)
    model: dict[str, Any] = {
        "ModelName": name,
        "ExecutionRoleArn": config.sagemaker_role_arn,
        "PrimaryContainer": {"Image": image(config), "ModelDataUrl": model_data, "Environment": environment(config)},
        "Tags": tagged,
    }
    if config.subnets:
        model["VpcConfig"] = {"Subnets": list(config.subnets), "SecurityGroupIds": list(config.security_group_ids)}
    variant: dict[str, Any] = {"VariantName": VARIANT, "ModelName": name}
    if config.endpoint_serverless_memory_mb:
        variant["ServerlessConfig"] = {
            "MemorySizeInMB": config.endpoint_serverless_memory_mb,
            "MaxConcurrency": SERVERLESS_MAX_CONCURRENCY,
        }
    else:
        variant.update(InstanceType=config.endpoint_instance_type, InitialInstanceCount=config.endpoint_instance_count)
    endpoint_config: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": [variant], "Tags": tagged}
    volume_key = (
        None
        if config.endpoint_serverless_memory_mb
        else volume_kms_key(config.endpoint_instance_type, config.kms_key_id)
    )
    if volume_key:  # serverless endpoints have no volume to encrypt; NVMe types encrypt theirs in hardware
        endpoint_config["KmsKeyId"] = volume_key
    return {
        "endpoint_name": name,
        "experiment": info["experiment"],
        "run": info["run"],
        "model": info["model"],
        "region": config.aws_region,
        "model_data": model_data,
        "requests": {
            "create_model": model,
            "create_endpoint_config": endpoint_config,
            "create_endpoint": {"EndpointName": name, "EndpointConfigName": name, "Tags": tagged},
        },
    }


# SageMaker answers a client 408 after 60 s of a real-time or serverless invocation: work still
# running then is for nobody.
INVOCATION_TIMEOUT_S = 60


def environment(config: Any) -> dict[str, str]:
    """The model container's environment: where the experiment's code is (the training image's own
    copy, or the model's ``code/`` for the serving image, which has none), SERVE_TIMEOUT_S as the
    deploy saw it (the environment may override the packed settings.ini), and the name (never the
    value) of the W&B key's secret."""
    code = EXPERIMENT_DIR if image(config) == config.image_uri else SERVING_CODE_DIR
    secret = getattr(config, "wandb_api_key_secret", "")
    return {
        "ML_EXP_EXPERIMENT_DIR": code,
        "SERVE_TIMEOUT_S": f"{config.serve_timeout_s:g}",
        **({"WANDB_API_KEY_SECRET": secret} if secret else {}),
    }


def check(config: Any) -> list[str]:
    """What keeps a deployment from being described (empty: nothing)."""
    problems = [
        f"{key} is required to deploy; set it in settings.ini or the environment"
        for key in ("SAGEMAKER_ROLE_ARN", "IMAGE_URI")
        if not getattr(config, key.lower())
    ]
    if config.serve_timeout_s >= INVOCATION_TIMEOUT_S:
        problems.append(
            f"SERVE_TIMEOUT_S = {config.serve_timeout_s:g}: SageMaker answers an endpoint's client 408 after "
            f"{INVOCATION_TIMEOUT_S} s, so the server would go on working for nobody; "
            f"set it below {INVOCATION_TIMEOUT_S} (the default is 50)"
        )
    if config.endpoint_serverless_memory_mb and config.subnets:
        problems.append(
            "ENDPOINT_SERVERLESS_MEMORY_MB: a serverless endpoint cannot run in a VPC (SUBNETS are set); "
            "use instances (leave ENDPOINT_SERVERLESS_MEMORY_MB empty) or unset SUBNETS/SECURITY_GROUP_IDS"
        )
    return problems


def client(region: str) -> Any:
    import boto3

    return boto3.Session(region_name=region).client("sagemaker")


def create(sm: Any, deployment: dict[str, Any]) -> None:
    """Model, endpoint config, endpoint; when a later call fails, what was created is deleted
    again (no orphan model or config left behind)."""
    requests = deployment["requests"]
    created: list[tuple[str, dict]] = []
    try:
        sm.create_model(**requests["create_model"])
        created.append(("delete_model", {"ModelName": requests["create_model"]["ModelName"]}))
        sm.create_endpoint_config(**requests["create_endpoint_config"])
        created.append(
            ("delete_endpoint_config", {"EndpointConfigName": requests["create_endpoint_config"]["EndpointConfigName"]})
        )
        sm.create_endpoint(**requests["create_endpoint"])
    except Exception:
        for call, arguments in reversed(created):
            try:
                getattr(sm, call)(**arguments)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        raise


def wait(
    sm: Any, name: str, region: str, poll_seconds: float = 30, on_status: Callable[[str, str], None] | None = None
) -> dict[str, Any]:
    """Poll DescribeEndpoint until it is in service (EndpointFailed when it fails)."""
    last = None
    while True:
        description = sm.describe_endpoint(EndpointName=name)
        status = description["EndpointStatus"]
        if status != last and on_status:
            on_status(name, status)
        last = status
        if status in FINAL:
            break
        time.sleep(poll_seconds)
    if status != "InService":
        raise EndpointFailed(name, status, description.get("FailureReason"), region)
    description.pop("ResponseMetadata", None)
    return description


def listing(sm: Any, experiment: str) -> list[dict[str, Any]]:
    """This experiment's endpoints (by their tags), newest first: name, status, run, model, created."""
    found = []
    for page in sm.get_paginator("list_endpoints").paginate(NameContains=name_prefix(experiment)):
        for endpoint in page["Endpoints"]:
            tagged = {
                t["Key"][len(TAG_PREFIX) :]: t["Value"]
                for t in sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags", [])
                if t["Key"].startswith(TAG_PREFIX)
            }
            if tagged.get("experiment") != experiment:
                continue
            found.append(
                {
                    "endpoint": endpoint["EndpointName"],
                    "status": endpoint["EndpointStatus"],
                    "run": int(tagged["run"]) if tagged.get("run", "").isdigit() else tagged.get("run"),
                    "model": tagged.get("model"),
                    "git_commit": tagged.get("git-commit"),
                    "created": str(endpoint.get("CreationTime", "")),
                    "arn": endpoint["EndpointArn"],
                }
            )
    return sorted(found, key=lambda e: e["created"], reverse=True)


def tags_of(sm: Any, name: str) -> dict[str, str]:
    """The ml-exp tags of endpoint ``name`` (ValueError when it is no ml-exp endpoint)."""
    arn = sm.describe_endpoint(EndpointName=name)["EndpointArn"]
    tagged = {
        t["Key"][len(TAG_PREFIX) :]: t["Value"]
        for t in sm.list_tags(ResourceArn=arn).get("Tags", [])
        if t["Key"].startswith(TAG_PREFIX)
    }
    if "experiment" not in tagged:
        raise ValueError(
            f"endpoint {name} has no {TAG_PREFIX}experiment tag: exp deploy did not create it; "
            "delete it with the AWS console or CLI"
        )
    return tagged


def delete(sm: Any, name: str) -> list[str]:
    """Delete the endpoint, then its config and model (same name); what was deleted."""
    config_name = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    models = [
        v["ModelName"]
        for v in sm.describe_endpoint_config(EndpointConfigName=config_name).get("ProductionVariants", [])
    ]
    sm.delete_endpoint(EndpointName=name)
    deleted = [f"endpoint {name}"]
    sm.delete_endpoint_config(EndpointConfigName=config_name)
    deleted.append(f"endpoint config {config_name}")
    for model in models:
        sm.delete_model(ModelName=model)
        deleted.append(f"model {model}")
    return deleted


def aws_error(exc: Exception, what: str, config: Any = None) -> str | None:
    """One line for an AWS error (None: not one; the calls are plain boto3, no SDK)."""
    return explain(
        exc, what, getattr(config, "sagemaker_role_arn", None), getattr(config, "aws_region", None), sdk=False
    )

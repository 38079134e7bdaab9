"""``exp doctor``'s quota checks: each instance type x count the settings need, against the account's
SageMaker quotas (Service Quotas: "ml.g5.2xlarge for training job usage" and the like)."""

from __future__ import annotations

from typing import Any

from ml_exp.backends.sagemaker.doctor_checks import FAIL, OK, WARN, Check, Clients, why
from ml_exp.backends.sagemaker.sdk_errors import EXPERIMENTER_POLICY


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
        need(
            config.training_instance_type,
            training_usage,
            config.training_instance_count,
            "TRAINING_INSTANCE_TYPE x TRAINING_INSTANCE_COUNT",
        )
    if "tuning" in steps:
        need(
            config.training_instance_type,
            training_usage,
            config.training_instance_count * config.tuning_parallel_trials,
            "TRAINING_INSTANCE_COUNT x TUNING_PARALLEL_TRIALS",
        )
    if "inference" in steps:
        need(config.inference_instance_type, training_usage, 1, "INFERENCE_INSTANCE_TYPE")
    if not getattr(config, "endpoint_serverless_memory_mb", None):
        need(
            config.endpoint_instance_type,
            "endpoint",
            config.endpoint_instance_count,
            "ENDPOINT_INSTANCE_TYPE x ENDPOINT_INSTANCE_COUNT (exp deploy)",
        )
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
        return [
            Check(
                "quotas",
                WARN,
                f"cannot read the account's SageMaker quotas ({why(exc)}); your identity needs "
                f"servicequotas:ListServiceQuotas ({EXPERIMENTER_POLICY}), or see the console's Service Quotas page",
            )
        ]
    checks = []
    for (itype, usage), (count, what) in sorted(needs.items()):
        name = f"{itype} for {usage} usage"
        quota = quotas.get(name)
        if quota is None:
            checks.append(
                Check(
                    "quota", WARN, f"no quota named '{name}' in this region: the instance type may not be offered here"
                )
            )
        elif quota.get("Value", 0) < count:
            checks.append(
                Check(
                    "quota",
                    FAIL,
                    f"{name} is {quota.get('Value', 0):g}, {what} needs {count}: request more: "
                    f"aws service-quotas request-service-quota-increase --service-code sagemaker "
                    f"--quota-code {quota['QuotaCode']} --desired-value {count}",
                )
            )
        else:
            checks.append(Check("quota", OK, f"{name}: {quota['Value']:g} (needs {count})"))
    return checks

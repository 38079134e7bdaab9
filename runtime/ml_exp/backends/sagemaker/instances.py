"""What an instance type means for a job: local storage (and so the KMS key of its volume), and cost.

**Instance storage.** Some instance families have local NVMe SSD storage ("instance store").
SageMaker then provisions no EBS volume: the local disks are encrypted by a hardware module of
the instance, and AWS refuses a volume KMS key for them (CreateTrainingJob's
``ResourceConfig.VolumeKmsKeyId``, CreateHyperParameterTuningJob's, and CreateEndpointConfig's
``KmsKeyId``: "You can't request a VolumeKmsKeyId when using an instance type with local
storage"; SageMaker API reference, ResourceConfig and CreateEndpointConfig). So ``KMS_KEY_ID``
goes to the volume of an instance type only when its family is not in
:data:`INSTANCE_STORAGE_FAMILIES`; the job's output (S3) is always encrypted with it.

The table: SageMaker's developer guide ("Managing storage paths for different types of instance
local storage": ml.p4d, ml.g4dn and ml.g5 have NVMe instance storage, ml.c5 and ml.p2 EBS only)
and the EC2 instance-type pages ("Instance store volumes": the families whose sizes all come with
NVMe instance store), read on 2026-12-04.

**Cost.** :data:`PRICES` is a table shipped with the runtime (``prices.json``: on-demand USD per
instance-hour, its region and date in the file). A job's upper bound is count x price x its
MAX_RUN_HOURS; ``exp`` never calls a pricing API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

# Instance families (the part of ml.<family>.<size>) with local NVMe instance storage.
INSTANCE_STORAGE_FAMILIES = frozenset(
    {
        "c5d",
        "c6id",
        "m5d",
        "m6id",
        "r5d",
        "r6id",  # general purpose / compute / memory with a "d"
        "g4dn",
        "g4ad",
        "g5",
        "g6",
        "g6e",
        "gr6",  # GPUs: every size has NVMe
        "p3dn",
        "p4d",
        "p4de",
        "p5",
        "p5e",
        "p5en",  # GPUs for large training
        "trn1",
        "trn1n",  # Trainium
    }
)
PRICES_FILE = Path(__file__).with_name("prices.json")
HOURS_PER_MONTH = 730  # AWS's convention for a month of an always-on resource


def family(instance_type: str) -> str:
    """``ml.g5.2xlarge`` -> ``g5``."""
    parts = instance_type.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "ml" else instance_type


def has_instance_storage(instance_type: str) -> bool:
    """Whether the type has local NVMe storage (and so takes no volume KMS key)."""
    return family(instance_type) in INSTANCE_STORAGE_FAMILIES


def volume_kms_key(instance_type: str | None, kms_key_id: str | None) -> str | None:
    """The volume KMS key a job or endpoint on ``instance_type`` may carry: ``kms_key_id``
    unless the type has instance storage (None: no volume key in the request)."""
    if not kms_key_id or not instance_type or has_instance_storage(instance_type):
        return None
    return kms_key_id


def kms_plan(kms_key_id: str, uses: dict[str, str]) -> str:
    """What happens with KMS_KEY_ID, in words (``exp validate``), for ``uses``: what -> instance type."""
    encrypted = [f"{what} ({itype})" for what, itype in uses.items() if not has_instance_storage(itype)]
    local = [f"{what} ({itype})" for what, itype in uses.items() if has_instance_storage(itype)]
    parts = [f"KMS_KEY_ID {kms_key_id} encrypts every job's output in S3"]
    if encrypted:
        parts.append(f"and the EBS volumes of {', '.join(encrypted)}")
    text = " ".join(parts) + "."
    if local:
        text += (
            f" Not sent for {', '.join(local)}: these instance types have local NVMe storage, which AWS "
            "encrypts with the instance's own hardware key and for which it refuses a volume KMS key."
        )
    return text


# --- prices --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def price_table() -> dict[str, Any]:
    """The shipped price table: ``{"region", "date", "currency", "source", "prices": {type: USD/hour}}``."""
    return json.loads(PRICES_FILE.read_text(encoding="utf-8"))


def hourly_price(instance_type: str) -> float | None:
    return price_table()["prices"].get(instance_type)


def cost(instance_type: str, count: int, seconds: float) -> float | None:
    """USD for ``count`` instances of ``instance_type`` during ``seconds`` (None: not in the table)."""
    price = hourly_price(instance_type)
    return None if price is None else round(price * count * seconds / 3600, 4)


def money(amount: float | None) -> str:
    if amount is None:
        return "unknown"
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"


def _hours(hours: float) -> str:
    return f"{hours:g} h"


def table_note(region: str | None = None) -> str:
    table = price_table()
    note = f"on-demand prices of {table['region']} as of {table['date']} (ml_exp/backends/sagemaker/prices.json)"
    if region and region != table["region"]:
        note += f"; AWS_REGION is {region}, whose prices may differ"
    return note


def job_cost_line(what: str, instance_type: str, count: int, hours: float, jobs: int = 1, spot: bool = False) -> str:
    """``training tiny-bert: 2 x ml.g5.2xlarge x 24 h max = at most $72.72`` (``jobs``: trials of a tuning job)."""
    price = hourly_price(instance_type)
    times = f"{jobs} jobs x " if jobs > 1 else ""
    shape = f"{times}{count} x {instance_type} x {_hours(hours)} max (MAX_RUN_HOURS)"
    if price is None:
        return (
            f"{what}: {shape}; no price for {instance_type} in the table: see https://aws.amazon.com/sagemaker/pricing/"
        )
    bound = price * count * hours * jobs
    spot_note = " (spot: usually less)" if spot else ""
    return f"{what}: {shape} at ${price:g}/h = at most {money(bound)}{spot_note}"


def endpoint_cost_line(what: str, instance_type: str | None, count: int, serverless_mb: int | None) -> str:
    """An endpoint runs until deleted: its price per hour and per month."""
    if serverless_mb:
        return (
            f"{what}: serverless, {serverless_mb} MB: billed per second of inference and per GB of data "
            "(no instance-hours; see https://aws.amazon.com/sagemaker/pricing/)"
        )
    assert instance_type
    price = hourly_price(instance_type)
    if price is None:
        return f"{what}: {count} x {instance_type} until undeployed; no price for {instance_type} in the table"
    return (
        f"{what}: {count} x {instance_type} at ${price:g}/h = {money(price * count)} per hour, "
        f"{money(price * count * HOURS_PER_MONTH)} per month ({HOURS_PER_MONTH} h) until `exp undeploy`"
    )


def billed(description: dict[str, Any]) -> dict[str, Any]:
    """A finished training job's billable seconds and their cost (DescribeTrainingJob), for the manifest."""
    seconds = description.get("BillableTimeInSeconds")
    resources = description.get("ResourceConfig") or {}
    itype, count = resources.get("InstanceType"), resources.get("InstanceCount") or 1
    facts: dict[str, Any] = {"billable_seconds": seconds, "instance_type": itype, "instance_count": count}
    if seconds is not None and itype:
        # "Multiply BillableTimeInSeconds by the number of instances (InstanceCount) ... to get the
        # total compute time SageMaker bills you" (API reference, DescribeTrainingJob); with managed
        # spot training the billable time is already reduced by the spot savings
        facts["cost_usd"] = cost(itype, count, seconds)
        facts["price_table"] = f"{price_table()['region']} {price_table()['date']}"
    return facts


def billed_jobs(describe: Callable[[str], dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The jobs' (a tuning job's trials') billable seconds and cost, added up; unknown (None) when
    one could not be read, rather than failing a tuning job that succeeded."""
    seconds, total, known = 0, 0.0, True
    for name in names:
        try:
            facts = billed(describe(name))
        except Exception:  # noqa: BLE001 - the bill is a fact for the record, not a reason to fail
            known = False
            continue
        known = known and facts.get("cost_usd") is not None
        seconds += facts.get("billable_seconds") or 0
        total += facts.get("cost_usd") or 0.0
    return {
        "trials": len(names),
        "billable_seconds": seconds if known else None,
        "cost_usd": round(total, 4) if known else None,
    }


def record_job(run: Any, name: str, step: str, model_name: str | None, billing: dict[str, Any]) -> None:
    """A finished job in the run's manifest (``sagemaker_jobs``): its step, model, instances,
    billable seconds and their cost; ``exp runs`` and ``exp compare`` add them up."""
    entry = {"step": step, "model": model_name, **billing}
    run.update_manifest(lambda manifest: manifest.setdefault("sagemaker_jobs", {}).__setitem__(name, entry))

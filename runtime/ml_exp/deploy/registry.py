"""``exp register``, ``exp registry``, ``exp approve`` / ``exp reject`` and ``exp deploy --registry``:
which run's model is approved for production, and which one an endpoint serves.

The record of a version lives in the storage (:class:`~ml_exp.storage.registry.Registry`, so the
embedded default has a registry too); with ``BACKEND = sagemaker`` it is also a SageMaker model
package (:mod:`ml_exp.backends.sagemaker.model_packages`), whose version number the record takes
and whose status approve/reject change too. The run's manifest lists its registrations
(``registry``: group, version, record URI) and the record names the run (experiment, run, URI):
each points to the other.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from ml_exp.config import Config, load_config
from ml_exp.core.errors import UserError
from ml_exp.core.names import INFERENCE, PREPARATION, RECONCILIATION
from ml_exp.serving.predict import open_run
from ml_exp.storage.layout import COMPARISON, MODEL_ARCHIVE, MODEL_QUALITY, model_dir, serving_dir
from ml_exp.storage.registry import APPROVED, PENDING, Registry, who
from ml_exp.storage.run import Run, now


def group_of(config: Config) -> str:
    """MODEL_PACKAGE_GROUP, else the ticket prefix of the experiment (EXP of EXP-3333-longformer)."""
    return config.model_package_group or re.split(r"[-_.]", config.experiment_name, maxsplit=1)[0]


def registry_of(config: Config) -> Registry:
    return Registry(config.storage_uri, group_of(config))


def register(experiment_dir: Path, run_num: int, model_name: str | None) -> dict[str, Any]:
    """Register run ``run_num``'s model (default: its best) as a new version, pending approval."""
    config, run = open_run(experiment_dir, run_num)
    manifest = run.read_manifest()
    steps = manifest.get("steps") or {}
    metrics = (steps.get(INFERENCE) or {}).get("metrics") or {}
    if (steps.get(INFERENCE) or {}).get("status") != "completed" or not metrics:
        raise UserError(
            where="--run",
            message=f"run_{run_num} has no test metrics (its inference step has not completed); a version "
            f"is registered with them: finish it with exp run --run {run_num}.",
        )
    model = model_name or str(run.read_json(COMPARISON)["best_model"])
    if model not in metrics or not run.is_complete(model_dir(model)):
        raise UserError(
            where="--model", message=f"run_{run_num} has no tested model {model!r} (its models: {', '.join(metrics)})."
        )
    registry = registry_of(config)
    record: dict[str, Any] = {
        "experiment": config.experiment_name,
        "run": run.num,
        "model": model,
        "run_uri": run.uri,
        "metric": config.metric_for_best_model,
        "metrics": metrics[model],
        "fingerprints": {
            "data": (steps.get(RECONCILIATION) or {}).get("fingerprint"),
            "splits": (steps.get(PREPARATION) or {}).get("split_fingerprints"),
        },
        "labels": (steps.get(PREPARATION) or {}).get("labels"),
        "model_data": run.path(model_dir(model)),
        "image": config.image_uri or None,
        "status": PENDING,
        "registered_at": now(),
        "registered_by": who(),
        "history": [{"status": PENDING, "at": now(), "by": who(), "note": "registered"}],
        "sagemaker": None,
        "deployments": [],
    }
    version = None
    if config.backend == "sagemaker":
        record["sagemaker"], record["model_data"] = _model_package(config, run, model, record)
        version = record["sagemaker"]["version"]
    done = registry.add(record, version)
    entry = {"group": registry.group, "version": done["version"], "uri": done["uri"]}
    run.update_manifest(lambda m: m.setdefault("registry", []).append(entry))
    return done


def _model_package(config: Config, run: Run, model: str, record: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The model package of the version on SageMaker: the model packed as exp deploy packs it."""
    from ml_exp.backends.sagemaker import endpoints, model_packages
    from ml_exp.serving.bundle import archive, from_run

    if not run.is_remote or not config.image_uri:
        raise UserError(
            where="STORAGE_URI",
            message="a SageMaker model package needs the model on S3 (STORAGE_URI = s3://...) and IMAGE_URI; "
            "with BACKEND = local the version is recorded in the storage only.",
        )
    with tempfile.TemporaryDirectory(prefix="ml-exp-register-") as scratch:
        bundle = from_run(run, model, Path(scratch))
        archive(run, bundle, config.experiment_dir)
    model_data = run.path(serving_dir(model), MODEL_ARCHIVE)
    metrics_uri = run.write_json(
        MODEL_QUALITY,
        {"metric": record["metric"], "metrics": record["metrics"], "fingerprints": record["fingerprints"]},
        overwrite=True,
    )
    sm = endpoints.client(config.aws_region)
    group = group_of(config)
    description = (
        f"{config.experiment_name} run_{run.num} {model}: {record['metric']} {record['metrics'].get(record['metric'])}"
    )
    try:
        group_arn = model_packages.ensure_group(sm, group, f"ml-exp use case {group}")
        package = model_packages.create_package(
            sm, group, endpoints.image(config), model_data, metrics_uri, bundle.info, description
        )
    except Exception as exc:  # noqa: BLE001 - explained when it is an AWS error
        message = endpoints.aws_error(exc, f"SageMaker model package group {group}", config)
        if message is None:
            raise
        raise UserError(where="exp register", message=message) from None
    return {**package, "group_arn": group_arn}, model_data


def versions(experiment_dir: Path) -> list[dict[str, Any]]:
    return registry_of(load_config(experiment_dir)).records()


def set_status(experiment_dir: Path, version: int, status: str, note: str = "") -> dict[str, Any]:
    """Approve or reject ``version`` (who and when recorded); on SageMaker its model package too."""
    config = load_config(experiment_dir)
    registry = registry_of(config)
    arn = (registry.read(version).get("sagemaker") or {}).get("model_package_arn")
    if arn:
        from ml_exp.backends.sagemaker import endpoints, model_packages

        try:
            model_packages.set_status(endpoints.client(config.aws_region), arn, status, note)
        except Exception as exc:  # noqa: BLE001
            message = endpoints.aws_error(exc, f"SageMaker model package {arn}", config)
            if message is None:
                raise
            raise UserError(where="VERSION", message=message) from None
    return registry.set_status(version, status, note)


def deploy_version(experiment_dir: Path, version: int, **options: Any) -> dict[str, Any]:
    """Deploy an approved version (its run's model; the endpoint's name carries the run number),
    and record the endpoint in the version."""
    from ml_exp.deploy.deployments import deploy

    config = load_config(experiment_dir)
    registry = registry_of(config)
    record = registry.read(version)
    if record.get("status") != APPROVED:
        raise UserError(
            where="--registry",
            message=f"version {version} of {registry.group} is {record.get('status')}; only an approved version is "
            f"deployed (exp approve {version}).",
        )
    if record["experiment"] != config.experiment_name:
        raise UserError(
            where="--registry",
            message=f"version {version} is run_{record['run']} of {record['experiment']}; deploy it from that "
            "experiment's folder (its code is packed with the model).",
        )
    done = deploy(experiment_dir, record["run"], record["model"], **options)
    if done.get("status") != "dry-run":
        entry = {"endpoint": done["endpoint_name"], "deployed_at": now(), "by": who()}
        registry.update(version, lambda r: r.setdefault("deployments", []).append(entry))
    return {**done, "version": version}

"""From a run to production: what ``exp predict``, ``exp serve``, ``exp deploy``, ``exp endpoints``
and ``exp undeploy`` do (the CLI only parses options and prints).

The run number follows the model: a prediction comes from ``run_<N>``'s model with ``run_<N>``'s
settings, an endpoint is named ``<experiment>-r<N>-<model>-<token>`` and tagged with the run,
and the run's manifest lists each deployment of its models (endpoint, model, when, who) and
when it was undeployed.
"""

from __future__ import annotations

import getpass
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml_exp.config import Config, load_config
from ml_exp.core.errors import UserError
from ml_exp.core.redact import redact
from ml_exp.serving.predict import open_run
from ml_exp.storage.layout import MODEL_ARCHIVE, deployment_spec, serving_dir
from ml_exp.storage.store import Run, Store, now

Announce = Callable[[str], None]


# --- SageMaker endpoints --------------------------------------------------------------------------


def _who() -> dict[str, Any]:
    """Who deploys: the local user and host, and the AWS identity the calls are made as."""
    identity = None
    try:
        import boto3

        identity = boto3.client("sts").get_caller_identity()["Arn"]
    except Exception:  # noqa: BLE001 - nice to have in the record, never a reason to fail
        pass
    return {"user": getpass.getuser(), "host": socket.gethostname(), "aws_identity": identity}


def deploy(
    experiment_dir: Path,
    run_num: int,
    model_name: str | None,
    dry_run: bool = False,
    wait: bool = True,
    poll_seconds: float = 30,
    announce: Announce = print,
) -> dict[str, Any]:
    """Describe the deployment and save it in the run (``deployments/<endpoint>.json``); unless
    ``dry_run``: pack the model in the run, create model, endpoint config and endpoint, record
    the deployment in the run's manifest, and (``wait``) wait until the endpoint is in service."""
    from ml_exp.backends.sagemaker import endpoints
    from ml_exp.serving.bundle import archive, from_run

    config, run = open_run(experiment_dir, run_num)
    if not run.is_remote:
        raise UserError(
            where="STORAGE_URI",
            message=f"run_{run_num} is on local storage ({config.storage_uri}), and a SageMaker "
            f"endpoint loads its model from S3. Serve it on this machine with `exp serve --run {run_num}`, "
            "or run the experiment with STORAGE_URI = s3://bucket/prefix to deploy its model.",
        )
    problems = endpoints.check(config)
    if problems:
        raise UserError(where="settings", message="; ".join(problems))
    with tempfile.TemporaryDirectory(prefix="ml-exp-deploy-") as scratch:
        bundle = from_run(run, model_name, Path(scratch))
        model_data = run.path(serving_dir(bundle.info["model"]), MODEL_ARCHIVE)
        deployment = redact(endpoints.spec(config, bundle.info, model_data))
        deployment["cost"] = _cost(config)
        name = deployment["endpoint_name"]
        deployment["spec_uri"] = run.write_json(deployment_spec(name), deployment)
        if dry_run:
            return {**deployment, "status": "dry-run"}
        archive(run, bundle, config.experiment_dir)  # packed once in the run: serving/<model>/model.tar.gz, code/ too
    announce(f"deploying run_{run_num} model {deployment['model']} as SageMaker endpoint {name} ({_capacity(config)})")
    announce(deployment["cost"])
    sm = endpoints.client(config.aws_region)
    try:
        endpoints.create(sm, deployment)
    except Exception as exc:  # noqa: BLE001 - explained when it is an AWS error
        message = endpoints.aws_error(exc, f"SageMaker endpoint {name}", config)
        if message is None:
            raise
        raise UserError(where="exp deploy", message=message) from None
    record = {
        "endpoint": name,
        "model": deployment["model"],
        "deployed_at": now(),
        "by": _who(),
        "region": config.aws_region,
        "model_data": model_data,
        "image": endpoints.image(config),
        "capacity": _capacity(config),
        "spec_uri": deployment["spec_uri"],
        "status": "Creating",
    }
    _record(run, name, record)
    if not wait:
        return {**deployment, "status": "Creating"}
    try:
        endpoints.wait(sm, name, config.aws_region, poll_seconds, on_status=lambda n, s: announce(f"endpoint {n}: {s}"))
    except endpoints.EndpointFailed as exc:
        _record(run, name, {"status": exc.status, "failure_reason": exc.reason})
        raise UserError(where="exp deploy", message=str(exc)) from None
    _record(run, name, {"status": "InService"})
    return {**deployment, "status": "InService"}


def _cost(config: Config) -> str:
    """What the endpoint costs while it runs (the shipped price table; no pricing API)."""
    from ml_exp.backends.sagemaker.instances import endpoint_cost_line, table_note

    line = endpoint_cost_line(
        "cost", config.endpoint_instance_type, config.endpoint_instance_count, config.endpoint_serverless_memory_mb
    )
    return f"{line} ({table_note(config.aws_region)})"


def _capacity(config: Config) -> str:
    if config.endpoint_serverless_memory_mb:
        return f"serverless, {config.endpoint_serverless_memory_mb} MB"
    return f"{config.endpoint_instance_count} x {config.endpoint_instance_type}"


def _record(run: Run, name: str, fields: dict[str, Any]) -> None:
    """Add or update the deployment ``name`` in the run's manifest (``deployments``)."""

    def update(manifest: dict) -> None:
        deployments = manifest.setdefault("deployments", [])
        entry = next((d for d in deployments if d.get("endpoint") == name), None)
        if entry is None:
            deployments.append({"endpoint": name, **fields})
        else:
            entry.update(fields)

    run.update_manifest(update)


def list_endpoints(experiment_dir: Path) -> list[dict[str, Any]]:
    from ml_exp.backends.sagemaker import endpoints

    config = load_config(experiment_dir)
    try:
        return endpoints.listing(endpoints.client(config.aws_region), config.experiment_name)
    except Exception as exc:  # noqa: BLE001
        message = endpoints.aws_error(exc, f"listing the endpoints of {config.experiment_name}")
        if message is None:
            raise
        raise UserError(where="exp endpoints", message=message) from None


def undeploy(experiment_dir: Path, name: str) -> list[str]:
    """Delete endpoint ``name`` (one of this experiment's), its config and model, and note it in
    the manifest of the run it came from. Returns what was deleted."""
    from ml_exp.backends.sagemaker import endpoints

    config = load_config(experiment_dir)
    sm = endpoints.client(config.aws_region)
    try:
        tagged = endpoints.tags_of(sm, name)
        if tagged["experiment"] != config.experiment_name:
            raise UserError(
                where="NAME",
                message=f"endpoint {name} serves experiment {tagged['experiment']}, not "
                f"{config.experiment_name}; undeploy it from that experiment's folder",
            )
        deleted = endpoints.delete(sm, name)
    except (UserError, ValueError) as exc:
        raise UserError(where="NAME", message=str(exc)) from None
    except Exception as exc:  # noqa: BLE001
        message = endpoints.aws_error(exc, f"SageMaker endpoint {name}")
        if message is None:
            raise
        raise UserError(where="NAME", message=message) from None
    store = Store.for_config(config)
    if tagged.get("run", "").isdigit() and store.run_exists(int(tagged["run"])):
        _record(
            store.open_run(int(tagged["run"])),
            name,
            {"status": "Deleted", "undeployed_at": now(), "undeployed_by": _who()},
        )
    return deleted

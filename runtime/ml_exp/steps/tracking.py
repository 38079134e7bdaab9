"""Weights & Biases tracking: one wandb run per (run, model, step) and per tuning trial; a no-op
when disabled.

Each has a stable id (:func:`wandb_id`: experiment, run number, model, step, trial), and
``wandb.init`` resumes it, so a step interrupted and resumed (``exp run --run N``, a SageMaker
spot restart) is one wandb run. Each side points to the other: the manifest records the ids
(:func:`record`), and each wandb run's config holds the run's storage URI, its manifest, the git
commit and, inside a SageMaker job, the job's name. Everything logged here is also written to
the run's storage by the steps, so nothing depends on wandb being reachable (offline mode is the
default).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ml_exp.core.redact import redact
from ml_exp.experiment.context import Context
from ml_exp.storage.layout import MANIFEST

WANDB_ID_MAX = 64
# A SageMaker job's own name, in its container (the job that ran a step).
JOB_NAME_VARIABLE = "TRAINING_JOB_NAME"
# Where wandb keeps the address of a tracker service a process shares with its children.
SERVICE_VARIABLE = "WANDB_SERVICE"


def own_service(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without a wandb service inherited from a parent (a notebook, a test runner): a
    process that shares a service leaves its wandb runs open there when it is killed, and the
    resumed step's run is then refused as "in use". Each process of a step owns its service."""
    return {key: value for key, value in environ.items() if key != SERVICE_VARIABLE}


def wandb_name(ctx: Context, model: str, step: str, trial: str | None = None) -> str:
    """``run_<N>-<model>-<step>``, and ``run_<N>-<model>-tuning-trial_<k>`` for a tuning trial."""
    return "-".join([f"run_{ctx.run.num if ctx.run else 0}", model, step, *([trial] if trial else [])])


def wandb_id(ctx: Context, model: str, step: str, trial: str | None = None) -> str:
    """The stable id of that wandb run: readable (``<experiment>-r<N>-<model>-<step>[-<trial>]``,
    shortened to fit 64 characters) and ending in a hash of the whole, so that two experiments of
    one project, or names that read alike, never share an id."""
    parts = [ctx.config.experiment_name, str(ctx.run.num if ctx.run else 0), model, step, trial or ""]
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]
    readable = "-".join([ctx.config.experiment_name, f"r{parts[1]}", model, step, *([trial] if trial else [])])
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", readable)[: WANDB_ID_MAX - len(digest) - 1].strip("-.")
    return f"{readable}-{digest}"


def planned(ctx: Context, model: str, step: str, trial: str | None = None) -> dict[str, Any] | None:
    """What the manifest records of that wandb run before (or without) running it: id, name,
    project, entity, mode; None when tracking is off."""
    config = ctx.config
    if config.wandb_mode == "disabled":
        return None
    return {
        "wandb_id": wandb_id(ctx, model, step, trial),
        "name": wandb_name(ctx, model, step, trial),
        "project": config.wandb_project,
        "entity": config.wandb_entity or None,
        "mode": config.wandb_mode,
    }


def record(run: Any) -> dict[str, Any]:
    """What the manifest records of a live wandb run (its URL only when online)."""
    return {
        "wandb_id": run.id,
        "name": run.name,
        "project": run.project,
        "entity": run.entity or None,
        "mode": "offline" if run.offline else "online",
        "url": None if run.offline else run.url,
    }


@contextmanager
def tracked(
    ctx: Context, model: str, step: str, trial: str | None = None, extra_config: dict[str, Any] | None = None
) -> Iterator[Any]:
    """Yield a wandb run (or None when WANDB_MODE = disabled) of ``step`` (its job_type), for
    ``model`` (its folder key) or one of its tuning trials, resumed when an earlier attempt
    started it; finished on exit."""
    config = ctx.config
    if config.wandb_mode == "disabled":
        yield None
        return
    import wandb

    try:
        run = wandb.init(
            project=config.wandb_project,
            entity=config.wandb_entity or None,
            group=config.experiment_name,
            name=wandb_name(ctx, model, step, trial),
            id=wandb_id(ctx, model, step, trial),
            resume="allow",
            job_type=step,
            mode=config.wandb_mode,
            dir=str(config.experiment_dir),
            config={
                "settings": redact(dict(config.raw)),
                "model": model,
                "run": ctx.run.num if ctx.run else None,
                **({"trial": trial} if trial else {}),
                **_where(ctx),
                **(extra_config or {}),
            },
            reinit="create_new",
            settings=wandb.Settings(silent=True),
        )
    except Exception as exc:  # noqa: BLE001 - the run's storage has everything: tracking must not stop the step
        ctx.log.warning(
            "wandb: could not start run %s (%s: %s); %s goes on without tracking",
            wandb_id(ctx, model, step, trial),
            type(exc).__name__,
            exc,
            step,
        )
        yield None
        return
    ctx.log.debug("wandb %s run %s (%s)", config.wandb_mode, run.name, run.dir)
    try:
        yield run
    except BaseException:
        run.finish(exit_code=1)
        raise
    else:
        run.finish()


def log_model_reference(ctx: Context, wb: Any, model: str, folder: str) -> None:
    """Log the run's model folder as a wandb artifact that references its storage URI (the
    weights stay where they are; nothing is uploaded). A failure is a warning: the model is in
    the run's storage either way."""
    try:
        import wandb

        artifact = wandb.Artifact(
            f"{ctx.config.experiment_name}-run_{ctx.run.num}-{model}",
            type="model",
            metadata={"run_uri": ctx.run.uri, "folder": folder},
        )
        artifact.add_reference(ctx.run.path(folder), name=model, checksum=False)
        wb.log_artifact(artifact, aliases=["best", f"run_{ctx.run.num}"])
    except Exception as exc:  # noqa: BLE001 - tracking must not fail a finished step
        ctx.log.warning("could not log the model folder to wandb: %s: %s", type(exc).__name__, exc)


def _where(ctx: Context) -> dict[str, Any]:
    """Where the run's files are, for the wandb run's config: storage URI, manifest, git commit,
    and the SageMaker job when this runs in one."""
    if ctx.run is None:
        return {}
    where: dict[str, Any] = {"storage": {"run_uri": ctx.run.uri, "manifest": ctx.run.path(MANIFEST)}}
    try:
        where["git_commit"] = (ctx.run.read_manifest().get("git") or {}).get("commit")
    except Exception as exc:  # noqa: BLE001 - the pointer is a convenience; tracking goes on without it
        ctx.log.warning("wandb: could not read the git commit from the manifest: %s", exc)
    if os.environ.get(JOB_NAME_VARIABLE):
        where["sagemaker_job"] = os.environ[JOB_NAME_VARIABLE]
    return where

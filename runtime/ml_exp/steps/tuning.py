"""Tuning: a hyper-parameter search over the training path. This step owns what comes of it.

A search driver, the backend's (optuna locally, SageMaker's tuner), only runs trials: each trial
trains the model with the trial's values within the per-trial budget (:func:`trial_settings`)
into its trial folder, tracked as a run of the tuning step, and the driver hands back every
trial as a record (:data:`Trial`). This step writes, per model, ``best.json`` (the best trial,
its objective value and its values), ``trials.json`` and ``trials.csv`` (every trial), and one
wandb run that sums up the study. Training then uses the best values (:func:`best_params`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from ml_exp.config import Config
from ml_exp.config.search_space import as_settings
from ml_exp.core.errors import StepError
from ml_exp.core.names import TUNING
from ml_exp.experiment.context import Context
from ml_exp.steps import RunTask, Task, plan
from ml_exp.storage.layout import BEST, TRIALS, TRIALS_CSV, model_key, tuning_dir
from ml_exp.storage.store import Run

# A trial as a driver reports it: {"trial": "trial_<k>", "state": one of TRIAL_STATES,
# "value": the objective or None, "params": {name: value}} (+ "job_name" for a SageMaker trial).
Trial = dict[str, Any]
TRIAL_STATES = ("completed", "pruned", "failed", "stopped", "running", "waiting")


def run_tuning(ctx: Context, run_task: RunTask) -> dict[str, Any]:
    """Search each model of MODEL_NAMES: one task per model, whose driver (the backend's: optuna
    here, SageMaker's tuner there) runs the trials and returns them all."""
    best = {task.model: tune_model(ctx, task, run_task) for task in plan(ctx, TUNING) if task.model}
    return {
        "objective": ctx.config.objective,
        "direction": ctx.config.tuning_direction,
        "best": {name: {k: b[k] for k in ("best_trial", "value", "params")} for name, b in best.items()},
        "metrics": {name: {ctx.config.objective: b["value"]} for name, b in best.items()},
        "tracking": _tracking(ctx),
    }


def _tracking(ctx: Context) -> dict[str, Any]:
    """Per model, the wandb run summing up its study, and each trial's wandb run id."""
    from ml_exp.steps.tracking import planned, wandb_id

    tracking = {}
    for name in ctx.config.model_names:
        study = planned(ctx, model_key(name), TUNING)
        if study is not None:
            trials = ctx.run.read_json(f"{tuning_dir(name)}/{TRIALS}")
            tracking[name] = {
                **study,
                "trials": {t["trial"]: wandb_id(ctx, model_key(name), TUNING, t["trial"]) for t in trials},
            }
    return tracking


def tune_model(ctx: Context, task: Task, run_task: RunTask) -> dict[str, Any]:
    """The search of ``task.model`` (kept when an earlier attempt finished it); best.json's content."""
    model_name = task.model
    assert model_name is not None
    path = f"{tuning_dir(model_name)}/{BEST}"
    if ctx.run.exists(path):
        return ctx.run.read_json(path)
    trials = run_task(ctx, task)["trials"]
    unknown = sorted({t["state"] for t in trials} - set(TRIAL_STATES))
    assert not unknown, f"a search driver reported trial states {unknown}"
    return write_results(ctx, model_name, trials)


def trial_settings(config: Config, values: Mapping[str, float | int]) -> dict[str, str]:
    """A trial's settings: its values, and at most TUNING_TRIAL_EPOCHS epochs (the per-trial
    budget). Every driver applies it, locally per trial and inside a SageMaker trial job."""
    settings = as_settings(dict(values))
    if config.tuning_trial_epochs is not None:
        epochs = min(float(values.get("num_train_epochs", config.num_train_epochs)), config.tuning_trial_epochs)
        settings["NUM_TRAIN_EPOCHS"] = repr(epochs)
    return settings


def best_params(run: Run, model_name: str) -> dict[str, Any] | None:
    """The best values of a completed tuning of ``model_name`` in ``run``: ``{"from": <best.json
    URI>, "params": {...}}``, or None when the run has none."""
    path = f"{tuning_dir(model_name)}/{BEST}"
    if not run.exists(path):
        return None
    return {"from": run.path(path), "params": run.read_json(path)["params"]}


def write_results(ctx: Context, model_name: str, trials: list[Trial]) -> dict[str, Any]:
    config, folder = ctx.config, tuning_dir(model_name)
    ctx.run.write_json(f"{folder}/{TRIALS}", trials, overwrite=True)
    ctx.run.write_text(f"{folder}/{TRIALS_CSV}", _table(trials), overwrite=True)
    scored = [t for t in trials if t["state"] == "completed" and t.get("value") is not None]
    if not scored:
        raise StepError(
            f"tuning of {model_name}: no trial completed with a value of {config.objective} ({len(trials)} tried); "
            f"each trial must get {config.objective!r} (TUNING_OBJECTIVE, else METRIC_FOR_BEST_MODEL) from "
            "compute_metrics "
            f"on the validation split. See the trials in {ctx.run.path(folder, TRIALS)}"
        )
    pick = max if config.tuning_direction == "maximize" else min
    winner = pick(scored, key=lambda t: t["value"])  # ties: the earliest trial
    best = {
        "model": model_name,
        "objective": config.objective,
        "direction": config.tuning_direction,
        "best_trial": winner["trial"],
        "value": winner["value"],
        "params": winner["params"],
        "trials": len(trials),
        "backend": config.backend,
        **({"job_name": winner["job_name"]} if winner.get("job_name") else {}),
    }
    ctx.run.write_json(f"{folder}/{BEST}", best)
    _track_study(ctx, model_name, trials, best)
    return best


def _table(trials: list[Trial]) -> str:
    names = sorted({name for t in trials for name in t["params"]})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "state", "value", *names])
    for t in trials:
        writer.writerow([t["trial"], t["state"], t["value"], *(t["params"].get(n) for n in names)])
    return out.getvalue()


def _track_study(ctx: Context, model_name: str, trials: list[Trial], best: dict[str, Any]) -> None:
    from ml_exp.steps.tracking import tracked

    with tracked(ctx, model_key(model_name), TUNING, extra_config={"best": best}) as wb:
        if wb is not None:
            import wandb

            names = sorted({n for t in trials for n in t["params"]})
            table = wandb.Table(columns=["trial", "state", "value", *names])
            for t in trials:
                table.add_data(t["trial"], t["state"], t["value"], *(t["params"].get(n) for n in names))
            wb.log({"trials": table, "best_value": best["value"]})
            wb.summary.update({"best_trial": best["best_trial"], **{f"best/{k}": v for k, v in best["params"].items()}})

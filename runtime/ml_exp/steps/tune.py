"""Tuning: hyper-parameter search over the training path, with optuna (local backend).

A trial is a training run like any other (same launcher, so multi-process trials work) on the
trial's values, into ``tuning/<model>/trial_<k>/``. The study lives in the run's storage
(``tuning/<model>/study.db``, uploaded after every trial), so an interrupted tuning step
resumes with the trials still missing. Hopeless trials are pruned on the validation metric of
each epoch (optuna's median rule), decided on rank 0 and shared with every rank.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml_exp.config import Config
from ml_exp.context import Context
from ml_exp.search_space import Parameter, as_settings, parse_space
from ml_exp.steps import StepError, model_key

BEST = "best.json"
TRIALS = "trials.json"
STUDY = "study.db"
# Set for the workers of a trial, so that they report to (and are pruned by) the study.
STUDY_ENV = ("ML_EXP_OPTUNA_STORAGE", "ML_EXP_OPTUNA_STUDY", "ML_EXP_OPTUNA_TRIAL")
# train_trial(ctx, model_name, settings, output, tracking_name) trains one trial
TrainTrial = Callable[[Context, str, dict[str, str], str, str], None]


def tuning_dir(model_name: str) -> str:
    return f"tuning/{model_key(model_name)}"


def best_params(ctx: Context, model_name: str) -> dict[str, Any] | None:
    """The best values found by a completed tuning of ``model_name`` in this run (None if none)."""
    path = f"{tuning_dir(model_name)}/{BEST}"
    return ctx.run.read_json(path) if ctx.run.exists(path) else None


def run_tuning(ctx: Context, train_trial: TrainTrial) -> dict[str, Any]:
    parameters = parse_space(ctx.config.tuning_space)
    best = {name: tune_model(ctx, name, parameters, train_trial) for name in ctx.config.model_names}
    return {
        "objective": ctx.config.objective,
        "direction": ctx.config.tuning_direction,
        "best": {name: {k: b[k] for k in ("best_trial", "value", "params")} for name, b in best.items()},
        "metrics": {name: {ctx.config.objective: b["value"]} for name, b in best.items()},
    }


def tune_model(ctx: Context, model_name: str, parameters: tuple[Parameter, ...], train_trial: TrainTrial) -> dict[str, Any]:
    import optuna

    config, run, folder = ctx.config, ctx.run, tuning_dir(model_name)
    if run.exists(f"{folder}/{BEST}"):
        return run.read_json(f"{folder}/{BEST}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ml-exp-study-") as scratch:
        db = Path(scratch) / STUDY
        if run.exists(f"{folder}/{STUDY}"):
            db.write_bytes(run.read_bytes(f"{folder}/{STUDY}"))
        storage = f"sqlite:///{db}"
        study = optuna.create_study(
            study_name=model_key(model_name),
            storage=storage,
            load_if_exists=True,
            direction=config.tuning_direction,
            sampler=optuna.samplers.TPESampler(seed=config.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        )
        for stale in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
            study._storage.set_trial_state_values(stale._trial_id, optuna.trial.TrialState.FAIL)  # interrupted
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        remaining = config.tuning_trials - len(study.get_trials(deepcopy=False, states=finished))
        if remaining < config.tuning_trials:
            ctx.log.info("%s: study resumed, %d trial(s) left of %d", model_name, max(remaining, 0), config.tuning_trials)

        def objective(trial: Any) -> float:
            values = {p.name: _suggest(trial, p) for p in parameters}
            output = f"{folder}/trial_{trial.number}"
            settings = {**as_settings(values), **_budget(config, values)}
            settings.update(zip(STUDY_ENV, (storage, study.study_name, str(trial._trial_id))))
            train_trial(ctx, model_name, settings, output, f"tune-{trial.number}")
            summary = run.read_json(f"{output}/training_metrics.json")
            value = summary["best_eval"].get(config.objective)
            if value is None:
                raise StepError(f"trial {trial.number}: compute_metrics gave no {config.objective!r} (TUNING_OBJECTIVE)")
            if summary.get("pruned"):
                raise optuna.TrialPruned()
            return float(value)

        def save(study: Any, trial: Any) -> None:
            run.write_bytes(f"{folder}/{STUDY}", db.read_bytes(), overwrite=True)

        if remaining > 0:
            study.optimize(objective, n_trials=remaining, n_jobs=config.tuning_parallel_trials, callbacks=[save], catch=())
        return _write_results(ctx, model_name, study)


def _suggest(trial: Any, p: Parameter) -> float | int:
    if p.kind == "choice":
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.is_int:
        return trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)


def _budget(config: Config, values: dict[str, Any]) -> dict[str, str]:
    """TUNING_TRIAL_EPOCHS caps a trial's epochs (a smaller per-trial budget)."""
    if config.tuning_trial_epochs is None:
        return {}
    epochs = min(float(values.get("num_train_epochs", config.num_train_epochs)), config.tuning_trial_epochs)
    return {"NUM_TRAIN_EPOCHS": repr(epochs)}


def _write_results(ctx: Context, model_name: str, study: Any) -> dict[str, Any]:
    import optuna

    folder = tuning_dir(model_name)
    trials = [
        {"trial": f"trial_{t.number}", "state": t.state.name.lower(), "value": t.value, "params": t.params}
        for t in study.get_trials(deepcopy=False)
    ]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise StepError(f"tuning of {model_name}: no trial completed ({len(trials)} tried); see the trials in {ctx.run.path(folder, TRIALS)}")
    best_trial = study.best_trial
    best = {
        "model": model_name,
        "objective": ctx.config.objective,
        "direction": ctx.config.tuning_direction,
        "best_trial": f"trial_{best_trial.number}",
        "value": best_trial.value,
        "params": best_trial.params,
        "trials": len(trials),
        "backend": "local",
    }
    ctx.run.write_json(f"{folder}/{TRIALS}", trials, overwrite=True)
    ctx.run.write_text(f"{folder}/trials.csv", _table(trials), overwrite=True)
    ctx.run.write_json(f"{folder}/{BEST}", best)
    _track_study(ctx, model_name, trials, best)
    return best


def _table(trials: list[dict[str, Any]]) -> str:
    names = sorted({name for t in trials for name in t["params"]})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "state", "value", *names])
    for t in trials:
        writer.writerow([t["trial"], t["state"], t["value"], *(t["params"].get(n) for n in names)])
    return out.getvalue()


def _track_study(ctx: Context, model_name: str, trials: list[dict[str, Any]], best: dict[str, Any]) -> None:
    from ml_exp.tracking import tracked

    with tracked(ctx, model_key(model_name), "tuning", extra_config={"best": best}) as wb:
        if wb is not None:
            import wandb

            names = sorted({n for t in trials for n in t["params"]})
            table = wandb.Table(columns=["trial", "state", "value", *names])
            for t in trials:
                table.add_data(t["trial"], t["state"], t["value"], *(t["params"].get(n) for n in names))
            wb.log({"trials": table, "best_value": best["value"]})
            wb.summary.update({"best_trial": best["best_trial"], **{f"best/{k}": v for k, v in best["params"].items()}})


def pruning_callbacks(config: Config) -> list[Any]:
    """In a trial's workers: report each epoch's objective to the study, stop when pruned."""
    if not all(os.environ.get(name) for name in STUDY_ENV):
        return []
    from transformers import TrainerCallback

    storage, study_name, trial_id = (os.environ[name] for name in STUDY_ENV)
    objective = f"eval_{config.objective}"

    class Pruning(TrainerCallback):
        pruned = False

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
            import optuna
            import torch.distributed as dist

            decision = [False]
            if state.is_world_process_zero and metrics and objective in metrics:
                trial = optuna.trial.Trial(optuna.load_study(study_name=study_name, storage=storage), int(trial_id))
                trial.report(float(metrics[objective]), step=int(round(state.epoch or 0)))
                decision = [trial.should_prune()]
            if dist.is_available() and dist.is_initialized():
                dist.broadcast_object_list(decision, src=0)  # every rank stops together
            if decision[0]:
                self.pruned = True
                control.should_training_stop = True

    return [Pruning()]

"""The local search driver: an optuna study whose trials run through a trial runner.

Each trial trains the model with the trial's values (:func:`ml_exp.steps.tuning.trial_settings`)
through ``run_trial`` (the local backend's launcher, so multi-process trials work) into the
trial's folder. The study lives in the run's storage (the tuning folder's ``study.db``,
uploaded after every trial), so an interrupted search resumes with the trials still missing.
Hopeless trials are pruned on each epoch's validation objective (optuna's median rule), decided
on rank 0 and shared with every rank. What comes of the trials is the tuning step's business.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ml_exp.config import Config
from ml_exp.config.search_space import Parameter
from ml_exp.core.errors import StepError
from ml_exp.core.names import TUNING
from ml_exp.experiment.context import Context
from ml_exp.steps.tuning import Trial, trial_settings
from ml_exp.storage.layout import STUDY, TRAINING_METRICS, model_key, trial_dir, trial_name, tuning_dir

# Set for the workers of a trial, so that they report to (and are pruned by) the study.
STUDY_ENV = ("ML_EXP_OPTUNA_STORAGE", "ML_EXP_OPTUNA_STUDY", "ML_EXP_OPTUNA_TRIAL")
# run_trial(ctx, model_name, trial, environment): train one trial (ctx.config: its settings)
RunTrial = Callable[[Context, str, str, dict[str, str]], None]
STATES = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def optuna_search(ctx: Context, model_name: str, parameters: tuple[Parameter, ...], run_trial: RunTrial) -> list[Trial]:
    import optuna

    config, run, folder = ctx.config, ctx.run, tuning_dir(model_name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix=f"ml-exp-{TUNING}-study-", dir=run.scratch_area()) as scratch:
        db = Path(scratch) / STUDY
        if run.exists(f"{folder}/{STUDY}"):
            db.write_bytes(run.read_bytes(f"{folder}/{STUDY}"))
        storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
        study = optuna.create_study(
            study_name=model_key(model_name),
            storage=storage,
            load_if_exists=True,
            direction=config.tuning_direction,
            sampler=optuna.samplers.TPESampler(seed=config.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        )
        study_id = storage.get_study_id_from_name(study.study_name)
        for stale in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):  # interrupted
            storage.set_trial_state_values(
                storage.get_trial_id_from_study_id_trial_number(study_id, stale.number), optuna.trial.TrialState.FAIL
            )
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        remaining = config.tuning_trials - len(study.get_trials(deepcopy=False, states=finished))
        if remaining < config.tuning_trials:
            ctx.log.info(
                "%s: study resumed, %d trial(s) left of %d", model_name, max(remaining, 0), config.tuning_trials
            )

        def objective(trial: Any) -> float:
            values = {p.name: _suggest(trial, p) for p in parameters}
            name = trial_name(trial.number)
            trial_ctx = replace(
                ctx, config=config.with_overrides(trial_settings(config, values), source=f"{TUNING} {name}")
            )
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            run_trial(
                trial_ctx, model_name, name, dict(zip(STUDY_ENV, (f"sqlite:///{db}", study.study_name, str(trial_id))))
            )
            summary = run.read_json(f"{trial_dir(model_name, name)}/{TRAINING_METRICS}")
            value = summary["best_eval"].get(config.objective)
            if value is None:
                raise StepError(
                    f"{name} of {model_name}: compute_metrics gave no {config.objective!r} (TUNING_OBJECTIVE, else "
                    "METRIC_FOR_BEST_MODEL)"
                )
            if summary.get("pruned"):
                raise optuna.TrialPruned()
            return float(value)

        def save(study: Any, trial: Any) -> None:
            run.write_bytes(f"{folder}/{STUDY}", db.read_bytes(), overwrite=True)

        if remaining > 0:
            study.optimize(
                objective, n_trials=remaining, n_jobs=config.tuning_parallel_trials, callbacks=[save], catch=()
            )
        return [
            {
                "trial": trial_name(t.number),
                "state": STATES.get(t.state.name, t.state.name.lower()),
                "value": t.value,
                "params": t.params,
            }
            for t in study.get_trials(deepcopy=False)
        ]


def _suggest(trial: Any, p: Parameter) -> float | int:
    if p.kind == "choice":
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.is_int:
        return trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)


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

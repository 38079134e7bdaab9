"""`exp run`: validate, claim (or continue) a run, then run the chosen steps in order.

What runs is here; where it runs is the backend's business (``ml_exp.backends``). Every step
records its status, times and facts in the manifest; a completed step is never run again in
the same run, an interrupted or failed one is resumed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ml_exp.config import STEPS, Config, Problem, load_config
from ml_exp.context import Context
from ml_exp.manifest import new_manifest
from ml_exp.steps import StepError
from ml_exp.store import Run, Store
from ml_exp.udf import UDFs, load_udfs
from ml_exp.validate import validate

log = logging.getLogger("ml_exp")

# `exp run --smoke`: the whole pipeline on a small sample, before paying for GPUs.
SMOKE_RECORDS_PER_LABEL = 12
SMOKE_SETTINGS = {"NUM_TRAIN_EPOCHS": "1", "MAX_LENGTH": "32", "EARLY_STOPPING_PATIENCE": "0"}


class ProblemsFound(Exception):
    """Validation failed: nothing was claimed or run."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


class StepFailed(Exception):
    def __init__(self, run: Run, step: str, message: str):
        self.run, self.step, self.message = run, step, message
        super().__init__(f"{step} failed in run_{run.num}: {message}")


def run_pipeline(
    experiment_dir: str | os.PathLike[str] = ".",
    steps: Sequence[str] | None = None,
    run_num: int | None = None,
    smoke: bool = False,
    dry_run: bool = False,
    announce: Callable[[str], None] = print,
) -> Run:
    """Run the steps (default: those switched on in settings.ini) and return the run.

    ``run_num`` continues that existing run instead of claiming a new one; ``dry_run`` only
    shows (and saves in the run) what would be run: every SageMaker job specification.
    """
    overrides = _smoke_settings(Path(experiment_dir)) if smoke else {}
    environ = {**os.environ, **overrides}
    report = validate(experiment_dir, environ=environ, new_run=run_num is None)
    if not report.ok:
        raise ProblemsFound(report.problems)
    config = report.config
    assert config is not None
    chosen = [step for step in STEPS if step in (steps or config.steps)]

    store = Store(config.storage_uri, config.experiment_name)
    if run_num is None:
        run = store.claim_run(config.run_num, lambda num: {**new_manifest(config, num), "smoke": smoke, "dry_run": dry_run, "overrides": overrides})
        announce(f"run_{run.num}: {run.uri}")
    else:
        run = store.open_run(run_num)
        announce(f"run_{run.num} (continued): {run.uri}")
        recorded = run.read_manifest()
        if recorded.get("overrides") and not smoke:  # a smoke run goes on as a smoke run
            overrides, smoke = recorded["overrides"], bool(recorded.get("smoke"))
            config = load_config(config.experiment_dir, {**os.environ, **overrides})
    ctx = Context(config=config, run=run, log=logging.getLogger("ml_exp.experiment"), extra={"environment": overrides, "smoke": smoke})
    if dry_run:
        show_plan(ctx, chosen, announce)
        return run
    udfs = load_udfs(config.experiment_dir, config.udf_module, keep_loaded=True)

    run.update_manifest(lambda m: m.update(status="running", dry_run=False))
    for step in chosen:
        state = run.step(step)
        if state.get("status") == "completed":
            announce(f"{step}: already completed in run_{run.num} at {state.get('ended_at')}; skipped")
            continue
        if state.get("status") in ("running", "failed"):
            announce(f"{step}: resuming (attempt {state.get('attempt', 1) + 1}; the last one {state['status'] if state['status'] == 'failed' else 'was interrupted'})")
        else:
            announce(f"{step}: started")
        run.begin_step(step)
        try:
            facts = RUNNERS[step](ctx, udfs)
        except StepError as exc:
            _fail(run, step, str(exc))
            raise StepFailed(run, step, str(exc)) from exc
        except BaseException as exc:  # also KeyboardInterrupt: the step must not stay "running"
            _fail(run, step, f"{type(exc).__name__}: {exc}")
            raise
        finished = run.complete_step(step, **facts)
        announce(f"{step}: completed in {finished.get('duration_s', 0):.1f} s")
    _set_status(run, config)
    return run


# --- what each step runs, by backend: local processes, or SageMaker jobs from the image ---------
# Reconciliation always runs here: it reads the team's sources.


def _on_sagemaker(ctx: Context) -> bool:
    return ctx.config.backend == "sagemaker"


def _job(ctx: Context, step: str, model_name: str | None) -> dict[str, Any]:
    """Run a step as a SageMaker job; the container leaves its facts in jobs/<name>.result.json."""
    from ml_exp.backends import sagemaker

    job = sagemaker.run_step(ctx, step, model_name)
    return {**(job.get("result") or {}), "job_name": job["job_name"]}


def _run_reconciliation(ctx: Context, udfs: UDFs) -> dict[str, Any]:
    from ml_exp.steps.reconcile import run_reconciliation

    return run_reconciliation(ctx, udfs, sample_per_label=SMOKE_RECORDS_PER_LABEL if ctx.extra.get("smoke") else None)


def _run_preparation(ctx: Context, udfs: UDFs) -> dict[str, Any]:
    if _on_sagemaker(ctx):
        from ml_exp.steps import LABELS

        facts = _job(ctx, "preparation", None)
        if not ctx.run.exists(LABELS):
            raise StepError(f"preparation job {facts['job_name']} ended but wrote no {ctx.run.path(LABELS)}; see its logs")
        return facts
    from ml_exp.steps.prepare import run_preparation

    return run_preparation(ctx, udfs)


def _run_tuning(ctx: Context, udfs: UDFs) -> dict[str, Any]:
    if _on_sagemaker(ctx):
        from ml_exp.backends.sagemaker_tuning import tune
        from ml_exp.search_space import parse_space

        parameters = parse_space(ctx.config.tuning_space)
        best = {name: tune(ctx, name, parameters) for name in ctx.config.model_names}
        return {"objective": ctx.config.objective, "best": best, "metrics": {n: {ctx.config.objective: b["value"]} for n, b in best.items()}}
    from ml_exp.backends.local import train_trial
    from ml_exp.steps.tune import run_tuning

    return run_tuning(ctx, train_trial)


def _run_training(ctx: Context, udfs: UDFs) -> dict[str, Any]:
    from ml_exp.steps.train import run_training

    if _on_sagemaker(ctx):

        def train_one(ctx: Context, model_name: str) -> None:
            _job(_tuned(ctx, model_name), "training", model_name)

    else:
        from ml_exp.backends.local import train

        def train_one(ctx: Context, model_name: str) -> None:
            train(_tuned(ctx, model_name), model_name)

    facts = run_training(ctx, udfs, train_one)
    tuned = {name: _best(ctx, name) for name in ctx.config.model_names}
    facts["hyperparameters"] = {name: best for name, best in tuned.items() if best}  # recorded as such
    return facts


def _best(ctx: Context, model_name: str) -> dict[str, Any] | None:
    from ml_exp.steps.tune import best_params, tuning_dir

    best = best_params(ctx, model_name)
    return {"from": ctx.run.path(tuning_dir(model_name), "best.json"), "params": best["params"]} if best else None


def _tuned(ctx: Context, model_name: str) -> Context:
    """The context to train ``model_name`` with: the best values of this run's tuning, if any."""
    best = _best(ctx, model_name)
    if best is None:
        return ctx
    from dataclasses import replace

    from ml_exp.search_space import as_settings

    settings = {**ctx.extra.get("environment", {}), **as_settings(best["params"])}
    ctx.log.info("%s: training with the best values of tuning: %s", model_name, best["params"])
    config = load_config(ctx.config.experiment_dir, {**os.environ, **settings})
    return replace(ctx, config=config, extra={**ctx.extra, "environment": settings})


def _run_inference(ctx: Context, udfs: UDFs) -> dict[str, Any]:
    from ml_exp.steps import inference_dir
    from ml_exp.steps.infer import load_result, run_inference
    from ml_exp.steps.report import write_report

    results = {}
    for name in ctx.config.model_names:
        if not ctx.run.is_complete(inference_dir(name)):  # kept from an earlier, interrupted attempt
            if _on_sagemaker(ctx):
                _job(ctx, "inference", name)
            else:
                run_inference(ctx, udfs, name)
        results[name] = load_result(ctx.run, name)
    best = write_report(ctx, results)
    return {"metrics": {name: result["metrics"] for name, result in results.items()}, "best": best}


RUNNERS: Mapping[str, Callable[[Context, UDFs], dict[str, Any]]] = {
    "reconciliation": _run_reconciliation,
    "preparation": _run_preparation,
    "tuning": _run_tuning,
    "training": _run_training,
    "inference": _run_inference,
}


def show_plan(ctx: Context, steps: Sequence[str], announce: Callable[[str], None]) -> None:
    """`exp run --dry-run`: what each step would do; SageMaker job specifications are printed
    and saved in the run (jobs/<job name>.json), nothing is submitted."""
    import json

    config, run = ctx.config, ctx.run
    for step in steps:
        if run.step(step).get("status") == "completed":
            announce(f"{step}: already completed in run_{run.num}; would be skipped")
        elif step == "reconciliation" or not _on_sagemaker(ctx):
            where = "here" if step != "training" else f"here, {config.num_processes or 'auto'} process(es) per model"
            announce(f"{step}: would run {where} (backend {config.backend})")
        elif step == "tuning":
            from ml_exp.backends.sagemaker_tuning import tune
            from ml_exp.search_space import parse_space

            for model_name in config.model_names:
                planned = tune(ctx, model_name, parse_space(config.tuning_space), dry_run=True)
                announce(f"tuning: SageMaker tuning job for {model_name}:")
                announce(json.dumps(planned, indent=2, default=str))
        else:
            from ml_exp.backends import sagemaker

            for model_name in [None] if step == "preparation" else config.model_names:
                spec = sagemaker.run_step(ctx, step, model_name, dry_run=True)
                announce(f"{step}: job {spec['job_name']} (saved in {run.path('jobs', spec['job_name'] + '.json')}):")
                announce(json.dumps(spec.get("spec", spec), indent=2, default=str))
    run.update_manifest(lambda m: m.update(status="dry-run", dry_run=True))


def _smoke_settings(experiment_dir: Path) -> dict[str, str]:
    """Smoke settings, never larger than the experiment's own (MAX_LENGTH stays <= 32)."""
    overrides = dict(SMOKE_SETTINGS)
    try:
        own = load_config(experiment_dir)
        overrides["MAX_LENGTH"] = str(min(own.max_length, int(SMOKE_SETTINGS["MAX_LENGTH"])))
    except Exception:  # validation reports the settings' own problems
        pass
    return overrides


def _fail(run: Run, step: str, message: str) -> None:
    run.fail_step(step, message)
    run.update_manifest(lambda m: m.update(status="failed"))


def _set_status(run: Run, config: Config) -> None:
    def update(manifest: dict[str, Any]) -> None:
        wanted = [manifest.get("steps", {}).get(step, {}).get("status") for step in config.steps]
        manifest["status"] = "completed" if all(status == "completed" for status in wanted) else "partial"

    run.update_manifest(update)

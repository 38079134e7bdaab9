"""`exp run`: validate, claim (or continue) a run, then run the chosen steps in order.

What runs is here; where it runs is the backend's (:mod:`ml_exp.backends`), picked once from
BACKEND. Every step records its status, times and facts in the manifest; a completed step is
never run again in the same run, an interrupted or failed one is resumed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ml_exp.backends import backend_for
from ml_exp.backends.base import Backend
from ml_exp.config import Config, Problem, load_config
from ml_exp.context import Context
from ml_exp.manifest import new_manifest
from ml_exp.names import INFERENCE, PREPARATION, RECONCILIATION, STEP_NAMES, TRAINING, TUNING
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
    shows (and saves in the run) what each step would do, as the backend describes it.
    """
    overrides = _smoke_settings(Path(experiment_dir)) if smoke else {}
    environ = {**os.environ, **overrides}
    report = validate(experiment_dir, environ=environ, new_run=run_num is None)
    if not report.ok:
        raise ProblemsFound(report.problems)
    config = report.config
    assert config is not None
    chosen = [step for step in STEP_NAMES if step in (steps or config.steps)]

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
            config = config.with_overrides(overrides, source="the run's manifest (smoke)")
    ctx = Context(config=config, run=run, log=logging.getLogger("ml_exp.experiment"), smoke=smoke)
    backend = backend_for(config.backend)
    if dry_run:
        show_plan(ctx, backend, chosen, announce)
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
            facts = RUNNERS[step](ctx, udfs, backend)
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


# --- what each step runs; the backend runs it where it runs ------------------------------------


def _reconciliation(ctx: Context, udfs: UDFs, backend: Backend) -> dict[str, Any]:
    """Always here, whatever the backend: it reads the team's own sources."""
    from ml_exp.steps.reconciliation import run_reconciliation

    return run_reconciliation(ctx, udfs, sample_per_label=SMOKE_RECORDS_PER_LABEL if ctx.smoke else None)


def _preparation(ctx: Context, udfs: UDFs, backend: Backend) -> dict[str, Any]:
    return backend.prepare(ctx, udfs)


def _tuning(ctx: Context, udfs: UDFs, backend: Backend) -> dict[str, Any]:
    from ml_exp.steps.tuning import run_tuning

    return run_tuning(ctx, backend.search)


def _training(ctx: Context, udfs: UDFs, backend: Backend) -> dict[str, Any]:
    from ml_exp.steps.training import run_training

    return run_training(ctx, backend.train)


def _inference(ctx: Context, udfs: UDFs, backend: Backend) -> dict[str, Any]:
    from ml_exp.steps.inference import run_inference

    return run_inference(ctx, lambda ctx, model_name: backend.infer(ctx, udfs, model_name))


RUNNERS: Mapping[str, Callable[[Context, UDFs, Backend], dict[str, Any]]] = {
    RECONCILIATION: _reconciliation,
    PREPARATION: _preparation,
    TUNING: _tuning,
    TRAINING: _training,
    INFERENCE: _inference,
}
assert tuple(RUNNERS) == STEP_NAMES


def show_plan(ctx: Context, backend: Backend, steps: Sequence[str], announce: Callable[[str], None]) -> None:
    """`exp run --dry-run`: what each step would do (a backend that submits jobs saves their
    specifications in the run and shows them); nothing runs."""
    run = ctx.run
    for step in steps:
        if run.step(step).get("status") == "completed":
            announce(f"{step}: already completed in run_{run.num}; would be skipped")
        elif step == RECONCILIATION:
            announce(f"{step}: would run here (backend {backend.name})")
        else:
            for line in backend.describe(ctx, step):
                announce(line)
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

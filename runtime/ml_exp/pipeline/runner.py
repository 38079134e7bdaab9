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
from ml_exp.config import KNOWN_KEYS, SETTINGS, Config, load_config
from ml_exp.core.errors import Problem, ProblemsFound, UserError
from ml_exp.core.names import INFERENCE, PREPARATION, RECONCILIATION, STEP_NAMES, TRAINING, TUNING
from ml_exp.core.redact import redact_value
from ml_exp.experiment.context import Context
from ml_exp.experiment.functions import Functions, load_functions
from ml_exp.pipeline.validate import validate
from ml_exp.steps import RunTask, plan
from ml_exp.storage.code import changed_files, code_differs
from ml_exp.storage.errors import DamagedRun, io_problem
from ml_exp.storage.lease import take_lease
from ml_exp.storage.manifest import code_state, new_manifest
from ml_exp.storage.store import Run, Store, StoreError

log = logging.getLogger("ml_exp")

# `exp run --smoke`: the whole pipeline on a small sample, before paying for GPUs.
SMOKE_RECORDS_PER_LABEL = 12
SMOKE_SETTINGS = {"NUM_TRAIN_EPOCHS": "1", "MAX_LENGTH": "32", "EARLY_STOPPING_PATIENCE": "0"}
# Settings that choose what runs now or how it is watched, not what a step computes: a continued
# run (`exp run --run N`) takes them from now, every other one from the run's manifest.
FROM_NOW = frozenset({"RUN_NUM", "WANDB_MODE"} | {f"RUN_{step.upper()}" for step in STEP_NAMES})
ACCEPT_OPTION = "--accept-changed-settings"
ACCEPT_CODE_OPTION = "--accept-changed-code"


class SettingsChanged(ProblemsFound):
    """`exp run --run N` with settings that differ from the run's own: nothing was run."""

    def __init__(self, run_num: int, problems: list[Problem]):
        super().__init__(problems)
        self.run_num = run_num
        self.heading = f"run_{run_num} was started with other settings: {len(problems)} differ"
        self.advice = (
            f"A continued run uses the settings it started with. Restore these, start a new run (`exp run`), "
            f"or pass {ACCEPT_OPTION} to run the remaining steps with the current values (recorded in each step).",
        )


class CodeChanged(ProblemsFound):
    """`exp run --run N` after the experiment's module changed: nothing was run."""

    def __init__(self, run_num: int, problem: Problem):
        super().__init__([problem])
        self.heading = f"run_{run_num} was started with other code"
        self.advice = (
            f"A continued run runs the code it started with. Restore it, start a new run (`exp run`), or pass "
            f"{ACCEPT_CODE_OPTION} to run the remaining steps with the current code (recorded in each step).",
        )


def changed_code(run: Run, now: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded and current code state when the experiment's code differs from the code the run
    last ran (the latest step's record, else the run's start); None when it is the same."""
    manifest = run.read_manifest()
    records = [s["code"] for s in manifest.get("steps", {}).values() if isinstance(s.get("code"), dict)]
    recorded = records[-1] if records else manifest.get("code")
    return {"recorded": recorded, "now": now} if code_differs(recorded, now) else None


class StepFailed(UserError):
    """``done``: the steps completed by this call before ``step`` failed; ``note``: what else
    the user must know (the manifest could not be updated)."""

    def __init__(self, run: Run, step: str, message: str, done: Sequence[str] = (), note: str = ""):
        super().__init__(message, where=step)
        self.run, self.step, self.done, self.note = run, step, list(done), note
        self.heading = f"run_{run.num}: {step} failed"
        self.outcome = f"completed before it: {', '.join(done)}" if done else "no step completed in this call"
        marked = "could not be marked failed" if note else "is marked failed"  # honest when the manifest is stuck
        self.advice = (
            *([f"Also: {note}"] if note else []),
            f"run_{run.num}: {step} {marked}; fix it, then `exp run --run {run.num}` resumes from there.",
        )

    def __str__(self) -> str:
        return f"{self.step} failed in run_{self.run.num}: {self.message}"


def run_pipeline(
    experiment_dir: str | os.PathLike[str] = ".",
    steps: Sequence[str] | None = None,
    run_num: int | None = None,
    smoke: bool = False,
    dry_run: bool = False,
    announce: Callable[[str], None] = print,
    accept_changed_settings: bool = False,
    accept_changed_code: bool = False,
) -> Run:
    """Run the steps (default: those switched on in settings.ini) and return the run.

    ``run_num`` continues that existing run instead of claiming a new one, with the settings
    recorded in its manifest (:func:`resumed_config`; ``accept_changed_settings`` runs the
    remaining steps with the current ones instead); ``dry_run`` only shows (and saves in the
    run) what each step would do, as the backend describes it.
    """
    overrides = _smoke_settings(Path(experiment_dir)) if smoke else {}
    environ = {**os.environ, **overrides}
    report = validate(experiment_dir, environ=environ, new_run=run_num is None, steps=steps)
    if not report.ok:
        raise ProblemsFound(report.problems)
    config = report.config
    assert config is not None
    chosen = [step for step in STEP_NAMES if step in (steps or config.steps)]

    store = Store.for_config(config)
    changed: dict[str, dict[str, str]] = {}
    if run_num is None:
        run = store.claim_run(
            config.run_num,
            lambda num: {**new_manifest(config, num), "smoke": smoke, "dry_run": dry_run, "overrides": overrides},
        )
        announce(f"run_{run.num}: {run.uri}")
    else:
        run = store.open_run(run_num)
        config, smoke, changed = resumed_config(run, config, smoke, accept_changed_settings)
    code = code_state(config.experiment_dir, config.udf_module)
    code_change = changed_code(run, code) if run_num is not None and not dry_run else None
    if code_change and not accept_changed_code:
        was, now = code_change["recorded"], code

        def state(c: dict) -> str:
            sha = c.get("sources_sha256") or c.get("module_sha256")
            return f"SHA-256 {str(sha)[:12]}, commit {str(c.get('commit'))[:12]}"

        files = changed_files(was, now)
        which = f"{', '.join(files[:5])}{' …' if len(files) > 5 else ''}; " if files else ""
        message = f"changed since run_{run.num} last ran it ({which}{state(was)}; now {state(now)})"
        raise CodeChanged(run.num, Problem(config.udf_module, message))
    with take_lease(run) as lease:  # one writer per run, from here to the end
        if run_num is not None:
            announce(f"run_{run.num} (continued): {run.uri}")
            for key, change in changed.items():
                announce(
                    f"{key}: {change['recorded']!r} when run_{run.num} started, {change['now']!r} now: accepted "
                    f"({ACCEPT_OPTION})"
                )
        run.clear_scratch()  # a killed attempt's temporary files; only the lease holder may
        ctx = Context(config=config, run=run, log=logging.getLogger("ml_exp.experiment"), smoke=smoke)
        backend = backend_for(config.backend, config.experiment_dir)
        if dry_run:
            show_plan(ctx, backend, chosen, announce)
            return run
        udfs = load_functions(config.experiment_dir, config.udf_module, keep_loaded=True)
        run.update_manifest(lambda m: m.update(status="running", dry_run=False))
        done: list[str] = []
        for step in chosen:
            lease.check()
            state = run.step(step)
            if state.get("status") == "completed":
                announce(f"{step}: already completed in run_{run.num} at {state.get('ended_at')}; skipped")
                continue
            if state.get("status") in ("running", "failed"):
                announce(
                    f"{step}: resuming (attempt {state.get('attempt', 1) + 1}; the last one "
                    f"{state['status'] if state['status'] == 'failed' else 'was interrupted'})"
                )
            else:
                announce(f"{step}: started")
            # which settings this step ran with: the manifest's, but for the changes accepted now
            # and which code: the commit, dirty flag and module hash of now (and the change accepted)
            code_info = {"code": code, **({"code_changed": code_change["recorded"]} if code_change else {})}
            run.begin_step(step, **code_info, **({"settings_changed": changed} if changed else {}))
            try:
                facts = RUNNERS[step](ctx, udfs, backend)
            except (UserError, OSError) as exc:
                message = str(exc) if isinstance(exc, UserError) else io_problem(exc) or f"{type(exc).__name__}: {exc}"
                raise StepFailed(run, step, message, done, _fail(run, step, message)) from exc
            except BaseException as exc:  # also KeyboardInterrupt: the step must not stay "running"
                _fail(run, step, f"{type(exc).__name__}: {exc}")
                raise
            finished = run.complete_step(step, **facts)
            done.append(step)
            announce(f"{step}: completed in {finished.get('duration_s', 0):.1f} s")
        _set_status(run, config)
    return run


def resumed_config(
    run: Run, current: Config, smoke: bool, accept: bool
) -> tuple[Config, bool, dict[str, dict[str, str]]]:
    """The configuration to continue ``run`` with: the settings recorded in its manifest (those
    of FROM_NOW from now), the current value only where the user accepts it. Returns (config,
    smoke, the accepted changes: key -> recorded/now); SettingsChanged when not accepted."""
    manifest = run.read_manifest()
    recorded = manifest.get("settings")
    if not isinstance(recorded, dict):
        raise DamagedRun(
            f"run_{run.num}'s manifest has no settings snapshot, so it cannot be continued with the settings it "
            "started with; start a new run with `exp run`."
        )
    if smoke and not manifest.get("smoke"):
        raise ProblemsFound(
            [
                Problem(
                    "--smoke",
                    f"run_{run.num} is not a smoke run; a smoke model would land among its full results. Continue it "
                    "without --smoke, or start a smoke run with `exp run --smoke`",
                )
            ]
        )
    smoke = bool(manifest.get("smoke"))
    if smoke and isinstance(manifest.get("overrides"), dict):  # a smoke run goes on as a smoke run
        current = current.with_overrides(manifest["overrides"], source="the smoke settings")
    parse = {s.key: s.parse for s in SETTINGS}
    keys = sorted(k for k in recorded if k in KNOWN_KEYS and k not in FROM_NOW)
    # the manifest holds redacted values: a credential in a URL stays the current one, unrecorded
    unrecorded = {
        k for k in keys if str(recorded[k]) != current.raw[k] and str(recorded[k]) == redact_value(k, current.raw[k])
    }
    changed = {
        k: {"recorded": str(recorded[k]), "now": redact_value(k, current.raw[k])}
        for k in keys
        if k not in unrecorded and not _same(parse[k], str(recorded[k]), current.raw[k])
    }
    if changed and not accept:
        problems = [
            Problem(k, f"is {c['now']!r} now but was {c['recorded']!r} when run_{run.num} started")
            for k, c in changed.items()
        ]
        raise SettingsChanged(run.num, problems)
    kept = {k: str(recorded[k]) for k in keys if k not in changed and k not in unrecorded}
    try:
        return current.with_overrides(kept, source=f"run_{run.num}'s manifest"), smoke, changed
    except ProblemsFound as exc:  # recorded by another version of ml-exp, no longer valid
        raise ProblemsFound(exc.problems) from None


def _same(parse: Callable[[str], Any], recorded: str, now: str) -> bool:
    """Equal texts, or texts of the same value ("3" and "3.0" epochs)."""
    if recorded.strip() == now.strip():
        return True
    try:
        return parse(recorded) == parse(now)
    except ValueError:
        return False


# --- what each step runs; the backend runs its tasks where it runs them ----------------------


def _tasks_on(backend: Backend, functions: Functions) -> RunTask:
    return lambda ctx, task: backend.run(task, ctx, functions)


def _reconciliation(ctx: Context, functions: Functions, backend: Backend) -> dict[str, Any]:
    """Always here, whatever the backend: it reads the team's own sources."""
    from ml_exp.steps.reconciliation import run_reconciliation

    if ctx.config.data_from:  # another run's records and split, copied (steps/reuse.py)
        from ml_exp.steps.reuse import reuse_data

        return reuse_data(ctx)
    return run_reconciliation(ctx, functions, sample_per_label=SMOKE_RECORDS_PER_LABEL if ctx.smoke else None)


def _preparation(ctx: Context, functions: Functions, backend: Backend) -> dict[str, Any]:
    (task,) = plan(ctx, PREPARATION)
    return backend.run(task, ctx, functions)


def _tuning(ctx: Context, functions: Functions, backend: Backend) -> dict[str, Any]:
    from ml_exp.steps.tuning import run_tuning

    return run_tuning(ctx, _tasks_on(backend, functions))


def _training(ctx: Context, functions: Functions, backend: Backend) -> dict[str, Any]:
    from ml_exp.steps.training import run_training

    return run_training(ctx, _tasks_on(backend, functions))


def _inference(ctx: Context, functions: Functions, backend: Backend) -> dict[str, Any]:
    from ml_exp.steps.inference import run_inference

    return run_inference(ctx, _tasks_on(backend, functions))


RUNNERS: Mapping[str, Callable[[Context, Functions, Backend], dict[str, Any]]] = {
    RECONCILIATION: _reconciliation,
    PREPARATION: _preparation,
    TUNING: _tuning,
    TRAINING: _training,
    INFERENCE: _inference,
}
assert tuple(RUNNERS) == STEP_NAMES


def show_plan(ctx: Context, backend: Backend, steps: Sequence[str], announce: Callable[[str], None]) -> None:
    """`exp run --dry-run`: what each task of each step would do (a backend that submits jobs
    saves their specifications in the run and shows them); nothing runs."""
    run = ctx.run
    for step in steps:
        if run.step(step).get("status") == "completed":
            announce(f"{step}: already completed in run_{run.num}; would be skipped")
        elif step == RECONCILIATION:
            announce(f"{step}: would run here (backend {backend.name})")
        else:
            for task in plan(ctx, step):
                for line in backend.describe(task, ctx):
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


def _fail(run: Run, step: str, message: str) -> str:
    """Mark ``step`` failed; when even that cannot be written, say so (returned as a note)."""
    try:
        run.fail_step(step, message)
        run.update_manifest(lambda m: m.update(status="failed"))
    except (StoreError, OSError) as exc:
        return (
            f"the manifest could not be updated ({io_problem(exc) or exc}), so it still shows {step} as running; "
            f"once the storage is writable, `exp run --run {run.num}` resumes it."
        )
    return ""


def _set_status(run: Run, config: Config) -> None:
    def update(manifest: dict[str, Any]) -> None:
        wanted = [manifest.get("steps", {}).get(step, {}).get("status") for step in config.steps]
        manifest["status"] = "completed" if all(status == "completed" for status in wanted) else "partial"

    run.update_manifest(update)

"""``exp validate`` and ``exp run``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ml_exp.commands.app import ExperimentDir, announce, app, print_problems, user_errors


@app.command()
def validate(experiment_dir: ExperimentDir = Path(".")) -> None:
    """Check settings, the five functions, storage and tracking; report every problem at once.

    Exit status: 0 when ready to run, 1 when there are problems, 2 on usage errors.
    """
    from ml_exp.pipeline.validate import validate as run_checks

    report = run_checks(experiment_dir)
    if not report.ok:
        print_problems(report.problems)
        raise typer.Exit(1)
    config = report.config
    assert config is not None
    typer.echo(
        f"{config.experiment_name} is ready: steps {', '.join(config.steps)}; "
        f"models {', '.join(config.model_names)}; backend {config.backend}; storage {config.storage_uri}"
    )
    for note in report.notes:  # what the settings will do (KMS_KEY_ID), said before any compute
        typer.echo(note)


@app.command()
def run(
    experiment_dir: ExperimentDir = Path("."),
    steps: Annotated[
        str | None, typer.Option(help="Comma separated steps to run now (default: those switched on in settings.ini).")
    ] = None,
    run_num: Annotated[
        int | None,
        typer.Option(
            "--run", min=1, help="Continue this run: completed steps are skipped, failed or interrupted ones resumed."
        ),
    ] = None,
    smoke: Annotated[
        bool,
        typer.Option(
            "--smoke", help="The whole pipeline on a small sample (one short epoch), in a run marked as smoke."
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Show (and save in the run) what would run, every SageMaker job specification; submit nothing.",
        ),
    ] = False,
    accept_changed_settings: Annotated[
        bool,
        typer.Option(
            "--accept-changed-settings",
            help="With --run: run the remaining steps with the current settings where they differ from the run's own "
            "(recorded per step).",
        ),
    ] = False,
    accept_changed_code: Annotated[
        bool,
        typer.Option(
            "--accept-changed-code",
            help="With --run: run the remaining steps with the experiment's current code where it changed since "
            "the run last ran (recorded per step).",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also what the libraries say (Trainer logs, load reports, progress bars of datasets).",
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="For scripts: only problems and the run's final line.")
    ] = False,
) -> None:
    """Validate, then run the steps in a new run (or continue one with --run)."""
    from ml_exp.core.names import STEP_NAMES as STEPS

    chosen = [s.strip() for s in steps.split(",") if s.strip()] if steps else None
    unknown = [s for s in chosen or [] if s not in STEPS]
    if unknown or chosen == []:
        raise typer.BadParameter(
            f"unknown step(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(STEPS)}", param_hint="--steps"
        )

    if verbose and quiet:
        raise typer.BadParameter(
            "--verbose and --quiet contradict each other; choose one", param_hint="--verbose/--quiet"
        )
    from ml_exp.core.console import NORMAL, QUIET, VERBOSE, set_verbosity, setup_logging

    set_verbosity(VERBOSE if verbose else QUIET if quiet else NORMAL)
    from ml_exp.steps.tracking import SERVICE_VARIABLE

    os.environ.pop(SERVICE_VARIABLE, None)  # this run owns its tracker service (ml_exp.steps.tracking.own_service)
    setup_logging()
    from ml_exp.pipeline.runner import run_pipeline

    with user_errors("--run" if run_num else "STORAGE_URI"):
        done = run_pipeline(
            experiment_dir,
            steps=chosen,
            run_num=run_num,
            smoke=smoke,
            dry_run=dry_run,
            announce=announce,
            accept_changed_settings=accept_changed_settings,
            accept_changed_code=accept_changed_code,
        )
    if dry_run:
        typer.echo(f"run_{done.num}: dry run, nothing submitted; `exp run --run {done.num}` runs it.")
        return
    if quiet:
        typer.echo(f"run_{done.num}: {done.read_manifest().get('status')} {done.uri}")
        return
    from ml_exp.pipeline.summary import print_summary

    print_summary(done)

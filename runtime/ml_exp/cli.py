"""`exp`: validate, run and list the runs of the experiment in the current folder.

A thin layer: each command parses its options and calls config / validate / store.
Heavy modules are imported inside the commands, so that `exp --help` starts fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ml_exp import __version__

app = typer.Typer(
    name="exp",
    help="Run isolated, reproducible transformer classification experiments (ml-exp).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's help formatting costs 65 ms of start-up (docs/benchmarks.md)
)

ExperimentDir = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-C",
        envvar="ML_EXP_EXPERIMENT_DIR",
        help="Experiment folder (the one with settings.ini).",
        file_okay=False,
        exists=True,
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ml-exp {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Run isolated, reproducible transformer classification experiments (ml-exp)."""


NOTHING_DONE = "nothing was run or written"


def _print_problems(problems: list, done: str = NOTHING_DONE, heading: str = "") -> None:
    """Every text literally (settings, records and exceptions may hold '[...]', which rich would
    read as markup); ``done`` says what was done anyway."""
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, highlight=False)
    console.print(Text.assemble((heading or f"{len(problems)} problem(s) found", "bold red"), f" ({done}):"), soft_wrap=True)
    for problem in problems:
        console.print(Text.assemble("  ", (str(problem.where), "bold"), f": {problem.message}"), soft_wrap=True)


@app.command()
def validate(experiment_dir: ExperimentDir = Path(".")) -> None:
    """Check settings, the five functions, storage and tracking; report every problem at once.

    Exit status: 0 when ready to run, 1 when there are problems, 2 on usage errors.
    """
    from ml_exp.validate import validate as run_checks

    report = run_checks(experiment_dir)
    if not report.ok:
        _print_problems(report.problems)
        raise typer.Exit(1)
    config = report.config
    assert config is not None
    typer.echo(
        f"{config.experiment_name} is ready: steps {', '.join(config.steps)}; "
        f"models {', '.join(config.model_names)}; backend {config.backend}; storage {config.storage_uri}"
    )


@app.command()
def run(
    experiment_dir: ExperimentDir = Path("."),
    steps: Annotated[
        Optional[str],
        typer.Option(help="Comma separated steps to run now (default: those switched on in settings.ini)."),
    ] = None,
    run_num: Annotated[
        Optional[int],
        typer.Option("--run", min=1, help="Continue this run: completed steps are skipped, failed or interrupted ones resumed."),
    ] = None,
    smoke: Annotated[
        bool,
        typer.Option("--smoke", help="The whole pipeline on a small sample (one short epoch), in a run marked as smoke."),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show (and save in the run) what would run, every SageMaker job specification; submit nothing."),
    ] = False,
    accept_changed_settings: Annotated[
        bool,
        typer.Option("--accept-changed-settings", help="With --run: run the remaining steps with the current settings where they differ from the run's own (recorded per step)."),
    ] = False,
) -> None:
    """Validate, then run the steps in a new run (or continue one with --run)."""
    from ml_exp.names import STEP_NAMES as STEPS

    chosen = [s.strip() for s in steps.split(",") if s.strip()] if steps else None
    unknown = [s for s in chosen or [] if s not in STEPS]
    if unknown or chosen == []:
        raise typer.BadParameter(f"unknown step(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(STEPS)}", param_hint="--steps")

    _setup_logging()
    from ml_exp.pipeline import ACCEPT_OPTION, ProblemsFound, SettingsChanged, StepFailed, run_pipeline
    from ml_exp.store import StoreError

    try:
        done = run_pipeline(experiment_dir, steps=chosen, run_num=run_num, smoke=smoke, dry_run=dry_run, announce=_announce,
                            accept_changed_settings=accept_changed_settings)
    except SettingsChanged as exc:
        _print_problems(exc.problems, heading=f"run_{exc.run_num} was started with other settings: {len(exc.problems)} differ")
        typer.echo(f"A continued run uses the settings it started with. Restore these, start a new run (`exp run`), or pass "
                   f"{ACCEPT_OPTION} to run the remaining steps with the current values (recorded in each step).", err=True)
        raise typer.Exit(1) from None
    except ProblemsFound as exc:
        _print_problems(exc.problems)
        raise typer.Exit(1) from None
    except StepFailed as exc:
        completed = f"completed before it: {', '.join(exc.done)}" if exc.done else "no step completed in this call"
        _print_problems([_problem(exc.step, exc.message)], done=completed, heading=f"run_{exc.run.num}: {exc.step} failed")
        if exc.note:
            typer.echo(f"Also: {exc.note}", err=True)
        typer.echo(f"run_{exc.run.num}: {exc.step} is marked failed; fix it, then `exp run --run {exc.run.num}` resumes from there.", err=True)
        raise typer.Exit(1) from None
    except StoreError as exc:
        _print_problems([_problem("--run" if run_num else "STORAGE_URI", str(exc))])
        raise typer.Exit(1) from None
    if dry_run:
        typer.echo(f"run_{done.num}: dry run, nothing submitted; `exp run --run {done.num}` runs it.")
        return
    from ml_exp.summary import print_summary

    print_summary(done)


def _announce(message: str) -> None:
    typer.echo(message)


def _setup_logging() -> None:
    import logging

    from rich.logging import RichHandler

    from ml_exp.console import interactive

    if not interactive():  # logs and CI: no progress bars redrawn line after line
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False, show_time=False)])
    for noisy in ("httpx", "urllib3", "botocore", "s3fs", "aiobotocore", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _problem(where: str, message: str):
    from ml_exp.config import Problem

    return Problem(where, message)


@app.command()
def runs(
    experiment_dir: ExperimentDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per run) for scripts.")] = False,
) -> None:
    """List this experiment's runs: number, created, status of each step, best metric when known."""
    from ml_exp.config import ConfigError, load_config
    from ml_exp.runs import run_summaries, runs_table
    from ml_exp.store import Store, StoreError

    try:
        config = load_config(experiment_dir)
        summaries = run_summaries(Store(config.storage_uri, config.experiment_name), config.metric_for_best_model)
    except ConfigError as exc:
        _print_problems(exc.problems)
        raise typer.Exit(1) from None
    except StoreError as exc:
        _print_problems([_problem("STORAGE_URI", str(exc))])
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(summaries, indent=2))
        return
    from rich.console import Console

    Console().print(runs_table(config.experiment_name, summaries))


if __name__ == "__main__":  # pragma: no cover
    app(prog_name=os.environ.get("ML_EXP_PROG", "exp"))

"""`exp`: validate, run and list the runs of the experiment in the current folder.

A thin layer: each command parses its options and calls config / validate / store.
Heavy modules are imported inside the commands, so that `exp --help` starts fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
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
    from ml_exp.pipeline.validate import validate as run_checks

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
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Also what the libraries say (Trainer logs, load reports, progress bars of datasets)."),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="For scripts: only problems and the run's final line."),
    ] = False,
) -> None:
    """Validate, then run the steps in a new run (or continue one with --run)."""
    from ml_exp.core.names import STEP_NAMES as STEPS

    chosen = [s.strip() for s in steps.split(",") if s.strip()] if steps else None
    unknown = [s for s in chosen or [] if s not in STEPS]
    if unknown or chosen == []:
        raise typer.BadParameter(f"unknown step(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(STEPS)}", param_hint="--steps")

    if verbose and quiet:
        raise typer.BadParameter("--verbose and --quiet contradict each other; choose one", param_hint="--verbose/--quiet")
    from ml_exp.core.console import NORMAL, QUIET, VERBOSE, set_verbosity, setup_logging

    set_verbosity(VERBOSE if verbose else QUIET if quiet else NORMAL)
    from ml_exp.steps.tracking import SERVICE_VARIABLE

    os.environ.pop(SERVICE_VARIABLE, None)  # this run owns its tracker service (ml_exp.steps.tracking.own_service)
    setup_logging()
    from ml_exp.pipeline.runner import ACCEPT_OPTION, ProblemsFound, SettingsChanged, StepFailed, run_pipeline
    from ml_exp.storage.store import StoreError

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
    if quiet:
        typer.echo(f"run_{done.num}: {done.read_manifest().get('status')} {done.uri}")
        return
    from ml_exp.pipeline.summary import print_summary

    print_summary(done)


def _announce(message: str) -> None:
    from ml_exp.core.console import QUIET, verbosity

    if verbosity() != QUIET:
        typer.echo(message)


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
    from ml_exp.pipeline.runs import run_summaries, runs_table
    from ml_exp.storage.store import Store, StoreError

    try:
        config = load_config(experiment_dir)
        summaries = run_summaries(Store.for_config(config), config.metric_for_best_model)
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


@app.command()
def compare(
    runs: Annotated[Optional[list[int]], typer.Argument(help="Run numbers to compare (default: every run).", show_default=False)] = None,
    experiment_dir: ExperimentDir = Path("."),
    metric: Annotated[Optional[str], typer.Option(help="The metric to compare (default: METRIC_FOR_BEST_MODEL).")] = None,
    output: Annotated[Path, typer.Option(help="Where to write the chart of the metric per run.")] = Path("comparison-runs.png"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts (no chart).")] = False,
) -> None:
    """Runs side by side: the metric per run and model, status, time, and the settings that differ."""
    from ml_exp.pipeline.compare import compare_runs, comparison_png, comparison_table, differing_lines
    from ml_exp.config import ConfigError, load_config
    from ml_exp.storage.store import Store, StoreError

    try:
        config = load_config(experiment_dir)
        comparison = compare_runs(Store.for_config(config), metric or config.metric_for_best_model, runs)
    except ConfigError as exc:
        _print_problems(exc.problems)
        raise typer.Exit(1) from None
    except StoreError as exc:
        _print_problems([_problem("RUNS" if runs else "STORAGE_URI", str(exc))])
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(comparison, indent=2))
        return
    from rich.console import Console

    console = Console()
    console.print(comparison_table(config.experiment_name, comparison))
    lines = differing_lines(comparison)
    console.print("settings that differ:" if lines else "no setting differs between these runs", markup=False)
    for line in lines:
        console.print(f"  {line}", markup=False, highlight=False)
    output.write_bytes(comparison_png(comparison, f"{config.experiment_name}: {comparison['metric']} per run"))
    console.print(f"chart: {output}", markup=False, highlight=False, soft_wrap=True)


# --- from a run to production: predict, serve, deploy, endpoints, undeploy ----------------------

RunOption = Annotated[int, typer.Option("--run", min=1, help="The run whose model to use.")]
ModelOption = Annotated[Optional[str], typer.Option("--model", help="A model of the run (default: its best on the comparison metric).")]


@contextmanager
def _production_errors(where: str) -> Iterator[None]:
    """The errors of the production commands a user can fix, as problems (exit 1), not tracebacks."""
    from ml_exp.config import ConfigError
    from ml_exp.deploy.deployments import ProductionError
    from ml_exp.serving.predictor import RequestError
    from ml_exp.core.errors import StepError
    from ml_exp.storage.store import StoreError
    from ml_exp.experiment.functions import UDFError

    try:
        yield
    except (ConfigError, UDFError) as exc:
        _print_problems(exc.problems)
        raise typer.Exit(1) from None
    except ProductionError as exc:
        _print_problems([_problem(exc.where, exc.message)])
        raise typer.Exit(1) from None
    except (StoreError, StepError, RequestError) as exc:
        _print_problems([_problem(where, str(exc))])
        raise typer.Exit(1) from None


@app.command()
def predict(
    input_file: Annotated[str, typer.Argument(metavar="INPUT", help="JSON Lines records (the fields reconcile yields; label optional), or - for stdin.")],
    run_num: RunOption,
    model: ModelOption = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the predictions here (default: stdout).")] = None,
    experiment_dir: ExperimentDir = Path("."),
) -> None:
    """Predict records with a run's model on this machine: a JSON line per record (id, prediction, scores)."""
    import sys
    import tempfile

    from ml_exp.deploy.deployments import load_predictor, predict_lines

    source = "stdin" if input_file == "-" else input_file
    if input_file != "-" and not Path(input_file).is_file():
        raise typer.BadParameter(f"{input_file} is not a file", param_hint="INPUT")
    with _production_errors("--run"), tempfile.TemporaryDirectory(prefix="ml-exp-predict-") as scratch:
        predictor = load_predictor(experiment_dir, run_num, model, Path(scratch))
        lines = sys.stdin if input_file == "-" else open(input_file, encoding="utf-8")
        out = open(output, "w", encoding="utf-8") if output else sys.stdout
        try:
            count = predict_lines(predictor, lines, out, source)
        finally:
            if output:
                out.close()
            if lines is not sys.stdin:
                lines.close()
    if output:
        typer.echo(f"{count} predictions of run_{run_num} model {predictor.info['model']} in {output}", err=True)


@app.command()
def serve(
    run_num: RunOption,
    model: ModelOption = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port (SageMaker's is 8080).")] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    experiment_dir: ExperimentDir = Path("."),
) -> None:
    """Serve a run's model over HTTP as a SageMaker endpoint does: GET /ping, POST /invocations (JSON, JSON Lines)."""
    import tempfile

    from ml_exp.deploy.deployments import load_predictor
    from ml_exp.serving.server import serve as run_server

    with _production_errors("--run"), tempfile.TemporaryDirectory(prefix="ml-exp-serve-") as scratch:
        predictor = load_predictor(experiment_dir, run_num, model, Path(scratch))
        run_server(predictor, host=host, port=port, announce=lambda message: typer.echo(message, err=True))


@app.command()
def deploy(
    run_num: RunOption,
    model: ModelOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print and save (in the run) the requests; send nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the endpoint is in service.")] = True,
    experiment_dir: ExperimentDir = Path("."),
) -> None:
    """Deploy a run's model as a SageMaker endpoint named <experiment>-r<run>-<model>-<token>."""
    from ml_exp.core.console import setup_logging
    from ml_exp.deploy.deployments import deploy as deploy_model

    setup_logging()
    with _production_errors("--run"):
        done = deploy_model(experiment_dir, run_num, model, dry_run=dry_run, wait=wait, announce=_announce)
    if dry_run:
        typer.echo(json.dumps(done["requests"], indent=2))
        typer.echo(f"dry run, nothing sent: endpoint {done['endpoint_name']} described in {done['spec_uri']}", err=True)
        return
    typer.echo(f"endpoint {done['endpoint_name']}: {done['status']} (run_{run_num}, model {done['model']}; "
               f"recorded in run_{run_num}'s manifest)")


@app.command()
def endpoints(
    experiment_dir: ExperimentDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List this experiment's SageMaker endpoints (from their tags): status, run, model."""
    from ml_exp.deploy.deployments import list_endpoints

    with _production_errors("AWS"):
        found = list_endpoints(experiment_dir)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no endpoints of this experiment")
    for e in found:
        typer.echo(f"{e['endpoint']}  {e['status']}  run_{e['run']}  {e['model']}  {e['created']}")


@app.command()
def undeploy(
    name: Annotated[str, typer.Argument(help="The endpoint (as exp endpoints lists it).")],
    experiment_dir: ExperimentDir = Path("."),
) -> None:
    """Delete a SageMaker endpoint of this experiment, its endpoint config and its model."""
    from ml_exp.deploy.deployments import undeploy as delete_endpoint

    with _production_errors("NAME"):
        deleted = delete_endpoint(experiment_dir, name)
    typer.echo("deleted " + ", ".join(deleted))


if __name__ == "__main__":  # pragma: no cover
    app(prog_name=os.environ.get("ML_EXP_PROG", "exp"))

"""Choosing a model and promoting it: ``exp leaderboard`` (every experiment of the storage),
``exp register``, ``exp registry``, ``exp approve``, ``exp reject`` (the model registry)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ml_exp.commands.app import ExperimentDir, ModelOption, RunOption, app, user_errors

VersionArgument = Annotated[int, typer.Argument(min=1, help="A version, as exp registry lists it.")]
NoteOption = Annotated[str, typer.Option("--note", help="Why (recorded with who and when).")]


@app.command()
def leaderboard(
    experiment_dir: ExperimentDir = Path("."),
    storage: Annotated[
        str | None, typer.Option("--storage", help="The storage of experiments (default: STORAGE_URI).")
    ] = None,
    metric: Annotated[str | None, typer.Option(help="The metric to rank on (default: METRIC_FOR_BEST_MODEL).")] = None,
    labels: Annotated[
        str | None, typer.Option("--labels", help="Only runs with this label set (comma separated).")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only runs created on or after YYYY-MM-DD.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Only runs created on or before YYYY-MM-DD.")] = None,
    every_run: Annotated[
        bool, typer.Option("--all", help="Every completed run (default: each experiment's best per test split).")
    ] = False,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="production (the last approved version) or a registry version: each model on its test "
            "split compared with it, with a paired bootstrap confidence interval.",
        ),
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write the page (ranking, the metric over time) here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Every experiment in the storage ranked on its test metric, grouped by test split: only models
    tested on the same documents are ranked against each other."""
    from ml_exp.config import load_config
    from ml_exp.pipeline.leaderboard import leaderboard as board_of
    from ml_exp.pipeline.leaderboard import leaderboard_tables

    with user_errors("exp leaderboard"):
        config = load_config(experiment_dir)
        label_set = [label.strip() for label in labels.split(",") if label.strip()] if labels else None
        board = board_of(
            storage or config.storage_uri, metric or config.metric_for_best_model, label_set, since, until, every_run
        )
        if against:
            from ml_exp.pipeline.challenger import against as compare_with

            board = compare_with(board, _champion(config, against))
    if html_file is not None:
        from ml_exp.pipeline.leaderboard_html import leaderboard_html

        _write_atomically(html_file, leaderboard_html(board))
        typer.echo(f"leaderboard page: {html_file}", err=True)
    if as_json:
        typer.echo(json.dumps(board, indent=2))
        return
    from rich.console import Console

    console = Console()
    if not board["groups"]:
        console.print(f"no completed run with {board['metric']} in {board['storage_uri']}", markup=False)
    for table in leaderboard_tables(board):
        console.print(table)


@app.command()
def register(run_num: RunOption, model: ModelOption = None, experiment_dir: ExperimentDir = Path(".")) -> None:
    """Register a run's model in the model registry (MODEL_PACKAGE_GROUP), pending approval;
    with BACKEND = sagemaker also as a SageMaker model package."""
    from ml_exp.deploy.registry import register as register_model

    with user_errors("--run"):
        done = register_model(experiment_dir, run_num, model)
    where = f" (model package {done['sagemaker']['model_package_arn']})" if done.get("sagemaker") else ""
    typer.echo(
        f"{done['group']} version {done['version']}: run_{run_num} model {done['model']}, "
        f"{done['status']}{where}; recorded in {done['uri']} and run_{run_num}'s manifest"
    )


@app.command()
def registry(
    experiment_dir: ExperimentDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The registered versions of this use case: run, model, metric, status, endpoints."""
    from ml_exp.deploy.registry import versions

    with user_errors("STORAGE_URI"):
        found = versions(experiment_dir)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no version registered yet (exp register --run N)")
    for r in found:
        value = r["metrics"].get(r["metric"])
        endpoints = ", ".join(d["endpoint"] for d in r.get("deployments") or []) or "-"
        typer.echo(
            f"v{r['version']}  {r['experiment']}/run_{r['run']}  {r['model']}  {r['metric']} "
            f"{value if value is None else f'{value:.4f}'}  {r['status']}  endpoints: {endpoints}"
        )


@app.command()
def approve(version: VersionArgument, note: NoteOption = "", experiment_dir: ExperimentDir = Path(".")) -> None:
    """Approve a registered version for production (who and when recorded)."""
    _set(experiment_dir, version, "Approved", note)


@app.command()
def reject(version: VersionArgument, note: NoteOption = "", experiment_dir: ExperimentDir = Path(".")) -> None:
    """Reject a registered version (who and when recorded)."""
    _set(experiment_dir, version, "Rejected", note)


def _set(experiment_dir: Path, version: int, status: str, note: str) -> None:
    from ml_exp.deploy.registry import set_status

    with user_errors("VERSION"):
        done = set_status(experiment_dir, version, status, note)
    typer.echo(f"{done['group']} version {version} (run_{done['run']} of {done['experiment']}): {status}")


def _champion(config, against: str) -> dict:
    """The registry version ``against`` names: production (the last approved) or a number."""
    from ml_exp.core.errors import UserError
    from ml_exp.deploy.registry import registry_of

    registry = registry_of(config)
    if against == "production":
        found = registry.production()
        if found is None:
            raise UserError(where="--against", message=f"no approved version in {registry.root} (exp approve N).")
        return found
    if not against.isdigit():
        raise UserError(where="--against", message=f"{against!r}: give production or a version number.")
    return registry.read(int(against))


def _write_atomically(path: Path, text: str) -> None:
    """A temporary file in the same folder, then renamed: a reader never sees half a page."""
    import os
    import tempfile

    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent or ".", delete=False, suffix=".tmp") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)  # as a plain open() would have made it
    os.replace(f.name, path)

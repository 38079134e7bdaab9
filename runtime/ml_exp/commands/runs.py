"""``exp runs`` and ``exp compare``: the runs of this experiment, and runs side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ml_exp.commands.app import ExperimentDir, app, user_errors


@app.command()
def runs(
    experiment_dir: ExperimentDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per run) for scripts.")] = False,
) -> None:
    """List this experiment's runs: number, created, status of each step, best metric when known."""
    from ml_exp.config import load_config
    from ml_exp.pipeline.runs import run_summaries, runs_table
    from ml_exp.storage.manifest_schema import finite
    from ml_exp.storage.store import Store

    with user_errors("STORAGE_URI"):
        config = load_config(experiment_dir)
        summaries = run_summaries(Store.for_config(config), config.metric_for_best_model)
    if as_json:
        typer.echo(json.dumps(finite(summaries), indent=2, allow_nan=False))  # strict JSON: no bare NaN
        return
    from rich.console import Console

    Console().print(runs_table(config.experiment_name, summaries))


@app.command()
def compare(
    runs: Annotated[
        list[int] | None, typer.Argument(help="Run numbers to compare (default: every run).", show_default=False)
    ] = None,
    experiment_dir: ExperimentDir = Path("."),
    metric: Annotated[str | None, typer.Option(help="The metric to compare (default: METRIC_FOR_BEST_MODEL).")] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the chart of the metric per run (default: comparison-runs.png in the experiment "
            "folder).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts (no chart).")] = False,
) -> None:
    """Runs side by side: the metric per run and model, status, time, and the settings that differ."""
    from ml_exp.config import load_config
    from ml_exp.pipeline.compare import compare_runs, comparison_png, comparison_table, differing_lines
    from ml_exp.storage.manifest_schema import finite
    from ml_exp.storage.store import Store

    with user_errors("RUNS" if runs else "STORAGE_URI"):
        config = load_config(experiment_dir)
        comparison = compare_runs(Store.for_config(config), metric or config.metric_for_best_model, runs)
    if metric and comparison["known_metrics"] and metric not in comparison["known_metrics"]:
        with user_errors("--metric"):
            from ml_exp.core.errors import UserError

            known = ", ".join(comparison["known_metrics"])
            raise UserError(f"no run recorded a metric {metric!r}; the runs recorded: {known}")
    if as_json:
        typer.echo(json.dumps(finite(comparison), indent=2, allow_nan=False))
        return
    from rich.console import Console

    console = Console()
    console.print(comparison_table(config.experiment_name, comparison))
    lines = differing_lines(comparison)
    console.print("settings that differ:" if lines else "no setting differs between these runs", markup=False)
    for line in lines:
        console.print(f"  {line}", markup=False, highlight=False)
    from ml_exp.core.files import write_output

    output = output if output is not None else experiment_dir / "comparison-runs.png"  # -C's folder, not the cwd
    with user_errors("--output"):  # atomically, into new folders; never a folder's name
        write_output(
            output, comparison_png(comparison, f"{config.experiment_name}: {comparison['metric']} per run"), "--output"
        )
    console.print(f"chart: {output}", markup=False, highlight=False, soft_wrap=True)

"""The short summary `exp run` prints at the end: metrics per model and where things are."""

from __future__ import annotations

from typing import Any

from ml_exp.layout import MODELS, REPORT
from ml_exp.names import INFERENCE, TRAINING
from ml_exp.store import Run

# What the Trainer adds to validation metrics besides the user's own.
TRAINER_BOOKKEEPING = {"runtime", "samples_per_second", "steps_per_second", "epoch"}


def print_summary(run: Run) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    manifest = run.read_manifest()
    steps = manifest.get("steps", {})
    console = Console()
    validation = steps.get(TRAINING, {}).get("metrics") or {}
    test = steps.get(INFERENCE, {}).get("metrics") or {}
    columns = [(model, split, metrics) for split, per_model in (("validation", validation), ("test", test)) for model, metrics in per_model.items()]
    names = sorted({name for _, _, metrics in columns for name in metrics if name not in TRAINER_BOOKKEEPING})
    if names:
        table = Table(title=escape(f"{manifest['experiment']} run_{manifest['run']} ({manifest.get('status')})"))
        table.add_column("metric")
        for model, split, _ in columns:
            table.add_column(escape(f"{model}\n{split}"), justify="right")
        for name in names:
            table.add_row(escape(name), *(_cell(metrics.get(name)) for _, _, metrics in columns))
        console.print(table)
    console.print(escape(f"run_{manifest['run']} ({manifest.get('status')}): {run.uri}"))
    for folder in (MODELS, INFERENCE):
        if run.listdir(folder):
            console.print(escape(f"  {folder}: {run.path(folder)}/"))
    if run.exists(REPORT):
        console.print(escape(f"  report: {run.path(REPORT)}"))


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"

"""The short summary `exp run` prints at the end: metrics per model and where things are."""

from __future__ import annotations

from typing import Any


def print_summary(run: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    manifest = run.read_manifest()
    steps = manifest.get("steps", {})
    console = Console()
    validation = steps.get("training", {}).get("metrics") or {}
    test = steps.get("inference", {}).get("metrics") or {}
    names = sorted({metric for per_model in [*validation.values(), *test.values()] for metric in per_model})
    if names:
        table = Table(title=f"{manifest['experiment']} run_{manifest['run']} ({manifest.get('status')})")
        table.add_column("model")
        table.add_column("split")
        for name in names:
            table.add_column(name, justify="right")
        for split, per_model in (("validation", validation), ("test", test)):
            for model, metrics in per_model.items():
                table.add_row(model, split, *(_cell(metrics.get(name)) for name in names))
        console.print(table)
    console.print(f"run_{manifest['run']} ({manifest.get('status')}): {run.uri}")
    for folder in ("models", "inference"):
        if run.listdir(folder):
            console.print(f"  {folder}: {run.path(folder)}/")
    if run.exists("report.md"):
        console.print(f"  report: {run.path('report.md')}")


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"

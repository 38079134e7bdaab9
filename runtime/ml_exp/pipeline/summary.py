"""The short summary `exp run` prints at the end: metrics per model and where things are."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from ml_exp.core.names import INFERENCE, PREPARATION, TRAINING
from ml_exp.steps.coverage import coverage_line
from ml_exp.storage.layout import MODELS, REPORT, REPORT_HTML
from ml_exp.storage.store import Run

# What the Trainer adds to validation metrics besides the user's own.
TRAINER_BOOKKEEPING = {"runtime", "samples_per_second", "steps_per_second", "epoch"}


def print_summary(run: Run, console: Any = None) -> None:
    from rich.console import Console

    manifest = run.read_manifest()
    console = console or Console()
    table = summary_table(manifest)
    if table is not None:
        console.print(table)
    console.print(
        f"run_{manifest['run']} ({manifest.get('status')}): {run.uri}", markup=False, highlight=False, soft_wrap=True
    )
    for model, facts in (manifest.get("steps", {}).get(PREPARATION, {}).get("models") or {}).items():
        documents = facts.get("documents") or {}
        for split in ("train", "test"):
            if split in documents.get("splits", {}):
                line = coverage_line(split, documents["splits"][split])
                # wrapped to the terminal (80 columns off one), unlike the URLs below, which must stay whole
                console.print(
                    f"  {model} ({documents['strategy']}, MAX_LENGTH {documents['max_length']}) {line}",
                    markup=False,
                    highlight=False,
                )
        if documents.get("advice"):  # which DOCUMENT_STRATEGY fits the lengths, once per model
            console.print(f"  {model}: {documents['advice']}", markup=False, highlight=False)
    for folder in (MODELS, INFERENCE):
        if run.listdir(folder):
            console.print(f"  {folder}: {run.path(folder)}/", markup=False, highlight=False, soft_wrap=True)
    for report in (REPORT_HTML, REPORT):
        if run.exists(report):
            console.print(f"  report: {run.path(report)}", markup=False, highlight=False, soft_wrap=True)


def summary_table(manifest: dict[str, Any]) -> Any:
    """Per model and metric, its validation and test values: four columns, so that it fits a
    terminal of 80 columns whatever the number of models (None when there are no metrics)."""
    from rich.table import Table

    steps = manifest.get("steps", {})
    validation = steps.get(TRAINING, {}).get("metrics") or {}
    test = steps.get(INFERENCE, {}).get("metrics") or {}
    models = list(dict.fromkeys([*validation, *test]))
    if not models:
        return None
    table = Table(title=escape(f"{manifest['experiment']} run_{manifest['run']} ({manifest.get('status')})"))
    table.add_column("model", overflow="fold")
    table.add_column("metric", overflow="fold")
    table.add_column("validation", justify="right")
    table.add_column("test", justify="right")
    for model in models:
        names = sorted({*validation.get(model, {}), *test.get(model, {})} - TRAINER_BOOKKEEPING)
        for i, name in enumerate(names):
            table.add_row(
                escape(model) if i == 0 else "",
                escape(name),
                _cell(validation.get(model, {}).get(name)),
                _cell(test.get(model, {}).get(name)),
                end_section=i == len(names) - 1,
            )
    return table


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"

"""Summaries of an experiment's runs, for `exp runs` (a rich table or JSON)."""

from __future__ import annotations

import math
from typing import Any

from ml_exp.core.names import INFERENCE, STEP_NAMES, TOKENS, TRAINING, TUNING
from ml_exp.storage.store import Store, StoreError
from ml_exp.toolkit.metrics import greater_is_better

STATUS_STYLE = {"completed": "green", "running": "yellow", "failed": "red", "pending": "dim", "damaged": "bold red"}
# Where a step records its metrics: manifest["steps"][step]["metrics"] = {model: {name: value}}.
METRIC_STEPS = (INFERENCE, TRAINING, TUNING)


def run_summaries(store: Store, metric: str) -> list[dict[str, Any]]:
    """One dict per run, oldest first: number, created, status, per-step status, best metric."""
    summaries = []
    for run in store.runs():
        try:
            manifest = run.read_manifest()
        except StoreError as exc:  # one damaged run hides no other: it is listed, with the reason
            summaries.append(
                {
                    "run": run.num,
                    "created_at": None,
                    "status": "damaged",
                    "problem": str(exc),
                    "steps": {},
                    "best": None,
                    "uri": run.uri,
                }
            )
            continue
        steps = manifest.get("steps", {})
        summaries.append(
            {
                "run": run.num,
                "created_at": manifest.get("created_at"),
                "status": manifest.get("status"),
                "steps": {step: info.get("status") for step, info in steps.items()},
                "best": best_metric(steps, metric),
                "tracking": {step: info["tracking"] for step, info in steps.items() if info.get("tracking")},
                "aws": aws_cost(manifest),
                "uri": run.uri,
            }
        )
    return summaries


def is_number(value: Any) -> bool:
    """A metric's value that can be compared and drawn (not null, NaN, text or true/false)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def aws_cost(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The run's SageMaker jobs added up (``sagemaker_jobs``: each finished job's billable seconds
    and their cost at the shipped price table); None when it ran none. ``complete``: every job's
    bill is known (else the sums are lower bounds)."""
    jobs = manifest.get("sagemaker_jobs") or {}
    if not jobs:
        return None
    seconds = [job.get("billable_seconds") for job in jobs.values()]
    costs = [job.get("cost_usd") for job in jobs.values()]
    return {
        "jobs": len(jobs),
        "billable_seconds": sum(s or 0 for s in seconds),
        "cost_usd": round(sum(c or 0 for c in costs), 4),
        "complete": None not in seconds and None not in costs,
    }


def cost_text(aws: dict[str, Any] | None) -> str:
    """``$1.23 (3 jobs, 1.2 h)``; ``>= `` when a job's bill is unknown; ``-`` without SageMaker jobs."""
    if not aws:
        return "-"
    hours = aws["billable_seconds"] / 3600
    return f"{'' if aws['complete'] else '>= '}${aws['cost_usd']:.2f} ({aws['jobs']} jobs, {hours:.2g} h)"


def best_metric(steps: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """The best model's value of ``metric``, from the test set when known, else validation."""
    for step in METRIC_STEPS:
        per_model = steps.get(step, {}).get("metrics") or {}
        scored = [
            (values[metric], model)
            for model, values in per_model.items()
            if isinstance(values, dict) and is_number(values.get(metric))
        ]
        if scored:
            pick = max if greater_is_better(metric) else min
            value, model = pick(scored)
            return {"metric": metric, "value": value, "model": model, "step": step}
    return None


STATUS_MARK = {"completed": "✓", "failed": "✗", "running": "▶", "pending": "·"}


def runs_table(experiment_name: str, summaries: list[dict[str, Any]]):
    """One row per run; its steps in one column (each step's short name and a mark), so that
    the table fits a terminal of 80 columns; long cells wrap rather than being cut."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{escape(experiment_name)}: {len(summaries)} run(s)")
    table.add_column("run", justify="right")
    table.add_column("created", overflow="fold")
    table.add_column("steps (✓ done, ✗ failed, ▶ running, · pending)", overflow="fold")
    table.add_column("best", overflow="fold")
    table.add_column("AWS", overflow="fold")
    for summary in summaries:
        marks = []
        for step in STEP_NAMES:
            status = summary["steps"].get(step)
            if status:
                marks.append(f"[{STATUS_STYLE.get(status, 'white')}]{TOKENS[step]}{STATUS_MARK.get(status, '?')}[/]")
        best = summary["best"]
        best_cell = (
            f"{best['metric']} {best['value']:.4f} {escape(str(best['model']))} ({best['step']})" if best else "-"
        )
        created = escape((summary["created_at"] or "?").replace("T", " ")[:16])
        steps_cell = " ".join(marks) or "-"
        if summary.get("problem"):  # a damaged manifest: said, with the reason, in place of its steps
            steps_cell, best_cell = f"[{STATUS_STYLE['damaged']}]damaged[/]", escape(summary["problem"])
        table.add_row(str(summary["run"]), created, steps_cell, best_cell, cost_text(summary.get("aws")))
    return table

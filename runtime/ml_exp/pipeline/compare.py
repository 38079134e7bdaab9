"""`exp compare`: runs of one experiment side by side, over time.

For each run and model: the metric (on the test split when the run tested the model, else the
validation split), the run's status and time; and the settings that differ between the runs,
the data's fingerprint (reconciliation) among them, since retraining on new data is the usual
reason runs differ. ``comparison-runs.png`` draws the metric per run and model.
"""

from __future__ import annotations

import io
from typing import Any

from ml_exp.core.names import INFERENCE, RECONCILIATION, TRAINING
from ml_exp.pipeline.runs import aws_cost, cost_text, is_number
from ml_exp.storage.store import Store, StoreError
from ml_exp.toolkit.metrics import greater_is_better
from ml_exp.toolkit.plots import literal_text, short

DATA = "data fingerprint"  # compared as a setting: the reconciled records' digest


def compare_runs(store: Store, metric: str, numbers: list[int] | None = None) -> dict[str, Any]:
    """The comparison of ``numbers`` (default: every run) on ``metric``."""
    existing = store.run_numbers()
    missing = sorted(set(numbers or []) - set(existing))
    if missing:
        raise StoreError(f"no run {', '.join(f'run_{n}' for n in missing)} in {store.root} (existing runs: {existing})")
    runs = []
    for run in store.runs():
        if numbers and run.num not in numbers:
            continue
        try:
            manifest = run.read_manifest()
        except StoreError as exc:  # one damaged run hides no other: it is listed, with the reason
            runs.append(
                {"run": run.num, "created_at": None, "status": "damaged", "problem": str(exc), "smoke": False}
                | {"models": {}, "settings": {}, "aws": None}
            )
            continue
        steps = manifest.get("steps", {})
        models: dict[str, Any] = {}
        names = [list(values) for s in steps.values() for values in (s.get("metrics") or {}).values()]
        for split, step in (("test", INFERENCE), ("validation", TRAINING)):
            for model, values in (steps.get(step, {}).get("metrics") or {}).items():
                if model not in models and isinstance(values, dict) and is_number(values.get(metric)):
                    models[model] = {"value": values[metric], "split": split}
        settings = dict(manifest.get("settings") or {})
        settings[DATA] = steps.get(RECONCILIATION, {}).get("fingerprint") or "-"
        runs.append(
            {
                "run": run.num,
                "created_at": manifest.get("created_at"),
                "status": manifest.get("status"),
                "smoke": bool(manifest.get("smoke")),
                "models": models,
                "settings": settings,
                "aws": aws_cost(manifest),
                "metric_names": names,
            }
        )
    readable = [r for r in runs if r["status"] != "damaged"]
    keys = sorted({key for r in readable for key in r["settings"]} - {"RUN_NUM"})
    differing = [key for key in keys if len({r["settings"].get(key) for r in readable}) > 1]
    for r in runs:
        r["settings"] = {key: r["settings"].get(key) for key in differing}
    scored = [(m["value"], r["run"], model) for r in runs for model, m in r["models"].items()]
    best = (max if greater_is_better(metric) else min)(scored) if scored else None
    known = sorted({name for r in runs for step in r.pop("metric_names", ()) for name in step})
    return {
        "known_metrics": known,
        "metric": metric,
        "greater_is_better": greater_is_better(metric),
        "runs": runs,
        "differing_settings": differing,
        "best": {"run": best[1], "model": best[2], "value": best[0]} if best else None,
    }


def comparison_table(experiment_name: str, comparison: dict[str, Any]) -> Any:
    """Runs x models on the metric: five narrow columns (80-column terminals)."""
    from rich.markup import escape
    from rich.table import Table

    metric, best = comparison["metric"], comparison["best"] or {}
    table = Table(title=f"{escape(experiment_name)}: {metric} per run and model")
    table.add_column("run", justify="right")
    table.add_column("created", overflow="fold")
    table.add_column("status", overflow="fold")
    table.add_column("model", overflow="fold")
    table.add_column(metric, justify="right", overflow="fold")
    for r in comparison["runs"]:
        when = (r["created_at"] or "?").replace("T", " ")[:16]
        status = (
            escape(f"{r['status']}: {r['problem']}")
            if r.get("problem")
            else f"{r['status']}{' (smoke)' if r['smoke'] else ''}"
            + (f" {cost_text(r['aws'])}" if r.get("aws") else "")
        )
        rows = r["models"].items() or [("-", None)]
        for i, (model, m) in enumerate(rows):
            mark = " *" if (r["run"], model) == (best.get("run"), best.get("model")) else ""
            value = f"{m['value']:.4f} {m['split'][:4]}{mark}" if m else "-"
            table.add_row(
                str(r["run"]) if i == 0 else "",
                when if i == 0 else "",
                status if i == 0 else "",
                escape(model),
                value,
                end_section=i == len(rows) - 1,
            )
    return table


def differing_lines(comparison: dict[str, Any]) -> list[str]:
    """One line per setting that differs: ``KEY: run_1=a, run_2=b``."""
    return [
        f"{key}: " + ", ".join(f"run_{r['run']}={r['settings'].get(key)}" for r in comparison["runs"])
        for key in comparison["differing_settings"]
    ]


@literal_text
def comparison_png(comparison: dict[str, Any], title: str) -> bytes:
    """The metric per run (x) for each model (one line each)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    models = sorted({model for r in comparison["runs"] for model in r["models"]})
    for model in models:
        points = [(r["run"], r["models"][model]["value"]) for r in comparison["runs"] if model in r["models"]]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=short(model))
    axes.set_xticks([r["run"] for r in comparison["runs"]])
    axes.set(xlabel="run", ylabel=comparison["metric"], title=title)
    if models:
        axes.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

"""What the inference step writes for a model and reports to wandb: CSV cells, JSON files,
the per-class report, and the test metrics with the confusion matrix as wandb sees them."""

from __future__ import annotations

import json
from numbers import Real
from pathlib import Path
from typing import Any


def csv_column(column: Any) -> list[str]:
    """A column of the predictions as the CSV writes it (scores with 6 significant digits)."""
    import pyarrow as pa

    values = column.to_pylist()
    if pa.types.is_floating(column.type):
        return [f"{v:.6g}" for v in values]
    if pa.types.is_list(column.type):  # multi-label: a JSON list per cell, e.g. ["contract", "policy"]
        return ["" if v is None else csv_text(json.dumps(v)) for v in values]
    return ["" if v is None else csv_text(v) if isinstance(v, str) else v for v in values]


# A cell a spreadsheet would read as a formula (OWASP, CSV injection): = + - @, tab, carriage return.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """``text`` as a CSV cell no spreadsheet runs: a leading ' when it starts like a formula (OWASP's
    advice; the csv module quotes the rest). The JSON and Parquet outputs keep the text as it is."""
    return f"'{text}" if text.startswith(FORMULA_START) else text


# --- metrics and outputs -------------------------------------------------------------------------


def as_number(value: Any) -> float | None:
    """A float for Python numbers and 0-d numpy/torch scalars; None for anything else."""
    if isinstance(value, Real):
        return float(value)
    if getattr(value, "shape", None) in ((), []):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return None


def classification_report(predictions: list[int], references: list[int], labels: list[str]) -> dict:
    from sklearn.metrics import classification_report

    return classification_report(
        references,
        predictions,
        labels=list(range(len(labels))),
        target_names=list(labels),
        output_dict=True,
        zero_division=0,
    )


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=plain) + "\n", encoding="utf-8")


def plain(value: Any) -> Any:
    """numpy scalars (sklearn's report) as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def log_to_wandb(wb: Any, log: Any, metrics: dict, report: dict, labels: list[str], png: Path, n: int) -> None:
    """Test metrics, per-class report and confusion matrix to wandb. Everything here is also in the
    run's storage, so a tracking failure is a warning, not a failed step."""
    try:
        import wandb

        wb.log({**{f"test/{name}": value for name, value in metrics.items()}, "test/records": n})
        table = wandb.Table(columns=["label", "precision", "recall", "f1-score", "support"])
        for label in labels:
            row = report.get(label, {})
            table.add_data(label, row.get("precision"), row.get("recall"), row.get("f1-score"), row.get("support"))
        wb.log(
            {"test/per_class": table, "test/confusion_matrix": wandb.Image(str(png), caption="confusion matrix (test)")}
        )
        for name, value in metrics.items():
            wb.summary[f"test/{name}"] = value
    except Exception as exc:  # noqa: BLE001 - tracking must not fail a finished step
        log.warning("could not log inference results to wandb: %s: %s", type(exc).__name__, exc)

"""The models of a run side by side: ``comparison.json``, ``report.md``, ``report.html``
(:mod:`ml_exp.steps.report_html`) and ``comparison.png`` at the run root, rebuilt from the
per-model inference results (so overwriting them is safe)."""

from __future__ import annotations

import io
from typing import Any

from ml_exp.config import Config
from ml_exp.core.errors import StepError
from ml_exp.experiment.context import Context
from ml_exp.storage.layout import (
    COMPARISON,
    COMPARISON_PNG,
    CONFUSION_MATRIX_PNG,
    PREDICTIONS,
    PREDICTIONS_CSV,
    REPORT,
    inference_dir,
)
from ml_exp.storage.store import Run
from ml_exp.toolkit.metrics import greater_is_better
from ml_exp.toolkit.plots import literal_text, short


def write_report(ctx: Context, results: dict[str, dict]) -> dict:
    """Compare the models of ``results`` (model name -> what ``run_inference`` returned) on
    ``METRIC_FOR_BEST_MODEL`` and write the comparison at the run root.

    Returns ``{"best_model": ..., "metric": ..., "value": ...}``. Raises :class:`StepError` when
    no model has the metric.
    """
    run, config = ctx.run, ctx.config
    metric = config.metric_for_best_model
    if not results:
        raise StepError("no inference results to compare; switch RUN_INFERENCE on for at least one model.")
    models = {
        name: {k: float(v) for k, v in dict(result.get("metrics") or {}).items()} for name, result in results.items()
    }
    scored = {name: m[metric] for name, m in models.items() if metric in m}
    if not scored:
        available = sorted({k for m in models.values() for k in m})
        raise StepError(
            f"METRIC_FOR_BEST_MODEL = {metric} is not among the metrics of any model "
            f"({', '.join(available) or 'none'}); "
            "set METRIC_FOR_BEST_MODEL to one of them or return it from compute_metrics."
        )
    pick = max if greater_is_better(metric) else min
    best = pick(scored, key=lambda name: scored[name])  # ties: the first model in MODEL_NAMES order
    value = scored[best]
    missing = sorted(set(models) - set(scored))
    if missing:
        ctx.log.warning("models without %s (left out of the comparison): %s", metric, ", ".join(missing))

    comparison = {
        "metric": metric,
        "greater_is_better": greater_is_better(metric),
        "best_model": best,
        "value": value,
        "experiment": config.experiment_name,
        "run": run.num,
        "models": models,
        "test_records": {name: result.get("test_records") for name, result in results.items()},
    }
    run.write_json(COMPARISON, comparison, overwrite=True)
    run.write_text(REPORT, _markdown(config, run, results, models, metric, best), overwrite=True)
    run.write_bytes(
        COMPARISON_PNG,
        comparison_png(scored, metric, best, title=f"{config.experiment_name} run_{run.num}"),
        overwrite=True,
    )
    from ml_exp.steps.report_html import write_html_report

    write_html_report(ctx, comparison)
    ctx.log.info("best model on %s: %s (%.4f)", metric, best, value)
    return {"best_model": best, "metric": metric, "value": value}


def _markdown(
    config: Config, run: Run, results: dict[str, dict], models: dict[str, dict[str, float]], metric: str, best: str
) -> str:
    names: list[str] = [metric]
    for m in models.values():
        names += [k for k in m if k not in names]

    def cell(text: str, bold: bool) -> str:
        return f"**{text}**" if bold else text

    direction = "higher" if greater_is_better(metric) else "lower"
    lines = [
        f"# {config.experiment_name} — run {run.num}: model comparison",
        "",
        f"Models compared on the test split by **{metric}** ({direction} is better). "
        f"Best model: **{best}** ({metric} = {models[best][metric]:.4f}).",
        "",
        "| model | " + " | ".join(names) + " | test records | inference |",
        "|---|" + "---:|" * len(names) + "---:|---|",
    ]
    for name, m in models.items():
        bold = name == best
        values = [cell(f"{m[k]:.4f}", bold) if k in m else "—" for k in names]
        folder = inference_dir(name)
        records = results[name].get("test_records")
        lines.append(
            f"| {cell(_escape(name), bold)} | "
            + " | ".join(values)
            + f" | {'' if records is None else records} | [{folder}/]({folder}/) |"
        )
    lines += ["", f"![comparison]({COMPARISON_PNG})", ""]
    for name in models:
        folder = inference_dir(name)
        lines += [
            f"## {_escape(name)}",
            "",
            f"Outputs: [{folder}/]({folder}/) — {results[name].get('uri', '')}",
            "",
            f"![confusion matrix of {_escape(name)}]({folder}/{CONFUSION_MATRIX_PNG})",
            "",
            *_decisions(run, name),
            *_evidence(run, folder),
        ]
    return "\n".join(lines)


def _decisions(run: Run, name: str) -> list[str]:
    from ml_exp.steps.report_decisions import decision_lines, read_decisions, threshold_rows

    saved, tested = read_decisions(run, name)
    lines = [f"{line}\n" for line in decision_lines(saved, tested)]
    rows = threshold_rows(saved)
    if rows:
        lines += ["| label | threshold | precision | recall |", "|---|---:|---:|---:|"]
        lines += [f"| {_escape(label)} | {t:.3f} | {p:.3f} | {r:.3f} |" for label, t, p, r, _ in rows]
        lines.append("")
    return lines


EVIDENCE_ROWS = 20  # the report is read by a person; the whole table is predictions.csv


def _evidence(run: Run, folder: str) -> list[str]:
    """Where each of the first test documents was decided: its page (multi-page records) or its
    characters (long documents read in windows); nothing when no prediction names either."""
    import pyarrow.parquet as pq

    if not run.exists(f"{folder}/{PREDICTIONS}"):
        return []
    try:
        with run.open(f"{folder}/{PREDICTIONS}") as handle:
            table = pq.read_table(handle)
    except (OSError, ValueError):
        return []  # the report of an older run without predictions still gets written
    names = set(table.column_names)
    rows = table.slice(0, EVIDENCE_ROWS).to_pylist()
    if not any(r.get("evidence_page") is not None or r.get("evidence_start") is not None for r in rows):
        return []

    def where(row: dict) -> str:
        if isinstance(row.get("predicted_label"), list):  # multi-label: each predicted label's window
            return (
                "; ".join(
                    where({"evidence_page": page, "evidence_start": start, "evidence_end": end})
                    for page, start, end in zip(
                        row.get("evidence_page") or [None] * len(row["predicted_label"]),
                        row.get("evidence_start") or [None] * len(row["predicted_label"]),
                        row.get("evidence_end") or [None] * len(row["predicted_label"]),
                    )
                )
                or "—"
            )
        if row.get("evidence_page") is not None:
            return f"page {row['evidence_page']}"
        if row.get("evidence_start") is not None:
            return f"characters {row['evidence_start']}–{row['evidence_end']}"
        return "—"

    def labels(value: Any) -> str:
        return _escape(", ".join(value) if isinstance(value, list) else value)

    windows = "windows" in names
    lines = [
        f"Evidence: where the first {len(rows)} test documents were decided (all in {PREDICTIONS_CSV}).",
        "",
        "| id | true label | predicted | evidence |" + (" windows |" if windows else ""),
        "|---|---|---|---|" + ("---:|" if windows else ""),
    ]
    for row in rows:
        cells = [_escape(row.get("id", "")), labels(row["true_label"]), labels(row["predicted_label"]), where(row)]
        lines.append("| " + " | ".join(cells) + " |" + (f" {row['windows']} |" if windows else ""))
    return [*lines, ""]


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


@literal_text
def comparison_png(scores: dict[str, float], metric: str, best: str, title: str = "") -> bytes:
    """A bar chart of ``metric`` per model (the best one highlighted), rendered with Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(scores)
    figure = Figure(figsize=(max(5.0, 1.2 * len(names) + 2), 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colors = ["tab:orange" if name == best else "tab:blue" for name in names]
    bars = axes.bar(range(len(names)), [scores[n] for n in names], color=colors)
    axes.set_xticks(
        range(len(names)),
        labels=[short(name) for name in names],
        rotation=30 if len(names) > 3 else 0,
        ha="right" if len(names) > 3 else "center",
    )
    axes.bar_label(bars, fmt="%.4f", padding=2)
    axes.set_ylabel(metric)
    axes.set_xlabel("model")
    top = max(scores.values(), default=1.0)
    if 0 <= min(scores.values(), default=0.0) and top <= 1.0:
        axes.set_ylim(0, 1.08)
    axes.set_title(title or f"{metric} per model")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


@literal_text
def confusion_matrix_png(matrix: list[list[int]], labels: list[str], title: str = "") -> bytes:
    """A PNG of the confusion matrix: true labels down, predicted across, counts in the cells."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(labels)
    side = min(4 + 0.5 * k, 24)
    figure = Figure(figsize=(side + 1.5, side), dpi=100)
    FigureCanvasAgg(figure)  # the Agg backend, without touching pyplot's global state
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = [short(label) for label in labels]  # whole in the per-class report beside it
    axes.set_xticks(range(k), labels=ticks, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(k), labels=ticks)
    axes.set_xlabel("Predicted label")
    axes.set_ylabel("True label")
    if title:
        axes.set_title(title)
    peak = max((max(row) for row in matrix), default=0)
    fontsize = max(5, min(10, 120 // max(k, 1)))
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axes.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if peak and count > peak / 2 else "black",
            )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

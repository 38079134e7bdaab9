"""``report.html``: the run in one self-contained page (images embedded, no network).

The models compared on the test split, then per model its confusion matrix, per-class
precision/recall/F1 and training curves (loss and the best-model metric per epoch, from the
training log); the data (records per label in each split); the settings that made the run; and
links to the run's files. Rebuilt from what the run holds, like ``report.md``.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from ml_exp.core.names import PREPARATION, RECONCILIATION, TRAINING
from ml_exp.core.redact import redact
from ml_exp.experiment.context import Context
from ml_exp.steps.coverage import coverage_line
from ml_exp.storage.layout import (
    CLASSIFICATION_REPORT,
    COMPARISON_PNG,
    CONFUSION_MATRIX_PNG,
    DOCUMENT_LENGTHS_PNG,
    MANIFEST,
    REPORT,
    REPORT_HTML,
    TRAINING_METRICS,
    inference_dir,
    model_dir,
    prepared_dir,
)
from ml_exp.storage.store import Run
from ml_exp.toolkit.metrics import greater_is_better
from ml_exp.toolkit.plots import literal_text

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;
padding:0 1rem;color:#1f2328}
h1{font-size:1.6rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0}th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f6f8fa}tr.best td{font-weight:600;background:#fff8c5}
img{max-width:100%;height:auto;border:1px solid #eee}
.models{display:grid;grid-template-columns:repeat(auto-fit,minmax(30rem,1fr));gap:1.5rem}
.muted{color:#59636e}.wide{overflow-x:auto}code{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px}
"""


def write_html_report(ctx: Context, comparison: dict[str, Any]) -> str:
    """Write ``report.html`` at the run root; returns its URL."""
    run, config = ctx.run, ctx.config
    manifest = run.read_manifest()
    metric, best = comparison["metric"], comparison["best_model"]
    parts = [
        f"<h1>{_e(config.experiment_name)} — run {run.num}</h1>",
        f"<p class=muted>{_e(manifest.get('created_at', ''))} · {_e(run.uri)} · git "
        f"{_e((manifest.get('git') or {}).get('commit', '—'))}</p>",
        _comparison(run, comparison),
        "<h2>Models</h2><div class=models>",
    ]
    for name in comparison["models"]:
        parts.append(_model(run, name, metric, name == best))
    parts += [
        "</div>",
        _data(manifest),
        _documents(run, manifest),
        _settings(manifest),
        _files(run, list(comparison["models"])),
    ]
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{_e(config.experiment_name)} run {run.num}</title><style>{STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
    return run.write_text(REPORT_HTML, page, overwrite=True)


def _comparison(run: Run, comparison: dict[str, Any]) -> str:
    metric, models = comparison["metric"], comparison["models"]
    names = [metric] + sorted({k for m in models.values() for k in m} - {metric})
    direction = "higher" if greater_is_better(metric) else "lower"
    rows = []
    for name, values in models.items():
        cells = "".join(f"<td>{values[k]:.4f}</td>" if k in values else "<td>—</td>" for k in names)
        records = (comparison.get("test_records") or {}).get(name)
        rows.append(
            f"<tr{' class=best' if name == comparison['best_model'] else ''}><td>{_e(name)}</td>{cells}"
            f"<td>{records if records is not None else ''}</td></tr>"
        )
    head = "".join(f"<th>{_e(k)}</th>" for k in names)
    return (
        f"<h2>Models compared</h2><p>On the test split by <b>{_e(metric)}</b> ({direction} is better); best: "
        f"<b>{_e(comparison['best_model'])}</b> ({comparison['value']:.4f}).</p>"
        f"<div class=wide><table><thead><tr><th>model</th>{head}<th>test "
        f"records</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        + (_image(run.read_bytes(COMPARISON_PNG), f"{metric} per model") if run.exists(COMPARISON_PNG) else "")
    )


def _model(run: Run, name: str, metric: str, best: bool) -> str:
    folder = inference_dir(name)
    parts = [f"<section><h3>{_e(name)}{' (best)' if best else ''}</h3>"]
    if run.exists(f"{folder}/{CONFUSION_MATRIX_PNG}"):
        parts.append(_image(run.read_bytes(f"{folder}/{CONFUSION_MATRIX_PNG}"), f"confusion matrix of {name}"))
    if run.exists(f"{folder}/{CLASSIFICATION_REPORT}"):
        report = run.read_json(f"{folder}/{CLASSIFICATION_REPORT}")
        rows = "".join(
            f"<tr><td>{_e(label)}</td>"
            + "".join(f"<td>{values.get(k, 0):.3f}</td>" for k in ("precision", "recall", "f1-score"))
            + f"<td>{int(values.get('support', 0))}</td></tr>"
            for label, values in report.items()
            if isinstance(values, dict) and label not in ("macro avg", "weighted avg", "micro avg", "samples avg")
        )
        parts.append(
            "<table><thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    parts.append(_decisions(run, name))
    path = f"{model_dir(name)}/{TRAINING_METRICS}"
    if run.exists(path):
        history = run.read_json(path).get("log_history") or []
        curves = training_curves_png(history, metric, name)
        if curves:
            parts.append(_image(curves, f"training curves of {name}"))
    parts.append("</section>")
    return "".join(parts)


def _decisions(run: Run, name: str) -> str:
    """Calibration, thresholds and review routing (steps/report_decisions.py)."""
    from ml_exp.steps.report_decisions import (
        decision_lines,
        read_decisions,
        reliability_png,
        review_curve_png,
        threshold_rows,
    )

    saved, tested = read_decisions(run, name)
    parts = [f"<p>{_e(line)}</p>" for line in decision_lines(saved, tested)]
    rows = threshold_rows(saved)
    if rows:
        body = "".join(
            f"<tr><td>{_e(label)}</td><td>{t:.3f}</td><td>{p:.3f}</td><td>{r:.3f}</td><td>{'yes' if met else 'no'}</td>"
            "</tr>"
            for label, t, p, r, met in rows
        )
        parts.append(
            f"<p>Each label's threshold (LABEL_THRESHOLDS = {_e(saved.get('label_thresholds', ''))}), chosen on the "
            "validation split:</p><table><thead><tr><th>label</th><th>threshold</th><th>precision</th><th>recall</th>"
            f"<th>rule met</th></tr></thead><tbody>{body}</tbody></table>"
        )
    if saved.get("calibration"):
        parts.append(_image(reliability_png(saved["calibration"], f"{name}: reliability"), f"reliability of {name}"))
    if (saved.get("review") or {}).get("curve"):
        parts.append(_image(review_curve_png(saved["review"], f"{name}: review"), f"coverage and precision of {name}"))
    return "".join(parts)


def _data(manifest: dict[str, Any]) -> str:
    steps = manifest.get("steps", {})
    counts = steps.get(PREPARATION, {}).get("label_counts")
    if not counts:
        reconciled = steps.get(RECONCILIATION, {}).get("counts")
        if not reconciled:
            return ""
        counts = {"all records": reconciled}
    splits = list(counts)
    labels = sorted({label for per in counts.values() for label in per})
    rows = "".join(
        f"<tr><td>{_e(label)}</td>" + "".join(f"<td>{counts[s].get(label, 0)}</td>" for s in splits) + "</tr>"
        for label in labels
    )
    # records per split (in multi-label a record counts once per label it carries, so not the sum)
    sizes = steps.get(PREPARATION, {}).get("split_sizes") or {}
    totals = "".join(f"<td><b>{sizes.get(s, sum(counts[s].values()))}</b></td>" for s in splits)
    weights = {
        m: v.get("class_weights")
        for m, v in (steps.get(TRAINING, {}).get("models") or {}).items()
        if v.get("class_weights")
    }
    note = f"<p class=muted>Class weights (CLASS_WEIGHTS = balanced): {_e(weights)}</p>" if weights else ""
    return (
        f"<h2>Data</h2><table><thead><tr><th>label</th>{''.join(f'<th>{_e(s)}</th>' for s in splits)}</tr></thead>"
        f"<tbody>{rows}<tr><td><b>records</b></td>{totals}</tr></tbody></table>{note}"
    )


def _documents(run: Run, manifest: dict[str, Any]) -> str:
    """What each model sees of the documents (preparation's coverage), with the length histogram."""
    models = manifest.get("steps", {}).get(PREPARATION, {}).get("models") or {}
    parts = []
    for name, facts in models.items():
        documents = facts.get("documents")
        if not documents:
            continue
        rows = "".join(f"<li>{_e(coverage_line(split, values))}</li>" for split, values in documents["splits"].items())
        parts.append(
            f"<h3>{_e(name)}</h3><p>DOCUMENT_STRATEGY = <b>{_e(documents['strategy'])}</b>, MAX_LENGTH = "
            f"{documents['max_length']}</p><ul>{rows}</ul>"
        )
        png = f"{prepared_dir(name)}/{DOCUMENT_LENGTHS_PNG}"
        if run.exists(png):
            parts.append(_image(run.read_bytes(png), f"document lengths for {name}"))
    return "<h2>Documents</h2>" + "".join(parts) if parts else ""


def _settings(manifest: dict[str, Any]) -> str:
    settings = redact(manifest.get("settings") or {})  # a manifest of an older ml-exp was not redacted
    rows = "".join(
        f"<tr><td><code>{_e(k)}</code></td><td style='text-align:left'>{_e(v)}</td></tr>" for k, v in settings.items()
    )
    return f"<h2>Settings</h2><table><tbody>{rows}</tbody></table>"


def _files(run: Run, models: list[str]) -> str:
    links = [
        (MANIFEST, "the manifest: settings, versions, each step's status and facts"),
        (REPORT, "this report as Markdown"),
    ]
    links += [(f"{model_dir(m)}/", f"the model {m}") for m in models] + [
        (f"{inference_dir(m)}/", f"the predictions of {m}") for m in models
    ]
    items = "".join(
        f"<li><a href='{html.escape(path, quote=True)}'>{_e(path)}</a> — {_e(what)}</li>" for path, what in links
    )
    return f"<h2>Files</h2><p class=muted>Relative to {_e(run.uri)}</p><ul>{items}</ul>"


@literal_text
def training_curves_png(history: list[dict[str, Any]], metric: str, title: str) -> bytes | None:
    """Loss (training and validation) and the best-model metric per epoch, from the Trainer's log."""
    train = [(h["epoch"], h["loss"]) for h in history if "loss" in h and "epoch" in h]
    evals = [h for h in history if "eval_loss" in h and "epoch" in h]
    if not train and not evals:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.4), dpi=100)
    FigureCanvasAgg(figure)
    loss, score = figure.subplots(1, 2)
    if train:
        loss.plot(*zip(*train), marker="o", label="training")
    if evals:
        loss.plot([h["epoch"] for h in evals], [h["eval_loss"] for h in evals], marker="o", label="validation")
        points = [(h["epoch"], h[f"eval_{metric}"]) for h in evals if f"eval_{metric}" in h]
        if points:
            score.plot(*zip(*points), marker="o", color="tab:green")
    loss.set(xlabel="epoch", ylabel="loss", title="loss")
    loss.legend()
    score.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f"<p><img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{data}'></p>"


def _e(value: Any) -> str:
    return html.escape(str(value))

"""``leaderboard.html``: the leaderboard in one self-contained page (the chart embedded, no
network), in report.html's style: a ranking per test split, and the metric over time (each
experiment's runs by date, one line per experiment)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from ml_exp.pipeline.leaderboard import NO_FINGERPRINT

# report.html's look (ml_exp.steps.report_html.STYLE; the pipeline does not import a step's module)
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;
padding:0 1rem;color:#1f2328}
h1{font-size:1.6rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0}th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f6f8fa}tr.best td{font-weight:600;background:#fff8c5}
img{max-width:100%;height:auto;border:1px solid #eee}.muted{color:#59636e}.wide{overflow-x:auto}
"""


def leaderboard_html(board: dict[str, Any]) -> str:
    metric = board["metric"]
    parts = [
        f"<h1>Leaderboard — {_e(metric)}</h1>",
        f"<p class=muted>{_e(board['storage_uri'])} · models are ranked only against models tested on the same "
        "documents (the same test-split fingerprint)</p>",
    ]
    if board.get("champion"):
        c = board["champion"]
        parts.append(
            f"<p>Compared with production: {_e(c['group'])} version {c['version']} ({_e(c['experiment'])}/run_"
            f"{c['run']}, {_e(c['model'])}); 95% paired bootstrap intervals of the difference.</p>"
        )
    for group in board["groups"]:
        parts.append(_group(group, metric, "champion" in board))
    png = metric_over_time_png(board)
    if png:
        data = base64.b64encode(png).decode()
        parts += [
            "<h2>The metric over time</h2>",
            f'<img alt="{_e(metric)} over time" src="data:image/png;base64,{data}">',
        ]
    body = "\n".join(parts)
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Leaderboard {_e(metric)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>\n"
    )


def _group(group: dict[str, Any], metric: str, versus: bool) -> str:
    fingerprint = group["test_fingerprint"]
    title = (
        "Test split unknown (prepared before ml-exp recorded it): not ranked"
        if fingerprint == NO_FINGERPRINT
        else f"Test split {fingerprint[:12]} ({group['test_records']} documents)"
    )
    head = ["#", "experiment / run", "model", metric, "training (s)", "parameters", "docs/s", "created"]
    head += ["vs production"] if versus else []
    rows = []
    for row in group["rows"]:
        size = row["model_size"]
        cells = [
            row["rank"] or "—",
            f"{row['experiment']}/run_{row['run']}",
            row["model"],
            f"{row['value']:.4f}",
            f"{row['training_s']:.0f}" if row["training_s"] else "—",
            f"{size['parameters']:,}" if size else "—",
            f"{row['documents_per_s']:.1f}" if row["documents_per_s"] else "—",
            (row["created_at"] or "")[:16].replace("T", " "),
        ]
        if versus:
            result = row.get("against")
            cells.append(
                f"{result['difference']:+.4f} [{result['interval'][0]:+.4f}, {result['interval'][1]:+.4f}] "
                f"{result['verdict']}"
                if result
                else "—"
            )
        css = ' class="best"' if row["rank"] == 1 else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (
        f"<h2>{_e(title)}</h2><div class=wide><table><thead><tr>{header}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def metric_over_time_png(board: dict[str, Any]) -> bytes | None:
    """Each experiment's runs (x: when created, y: the metric), one line per experiment."""
    from datetime import datetime

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series: dict[str, list[tuple[datetime, float]]] = {}
    for group in board["groups"]:
        for row in group["rows"]:
            if row["created_at"]:
                series.setdefault(row["experiment"], []).append(
                    (datetime.fromisoformat(row["created_at"]), row["value"])
                )
    if not series:
        return None
    figure = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for experiment, points in sorted(series.items()):
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=experiment)
    axes.set(xlabel="run created", ylabel=board["metric"])
    axes.legend(fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)

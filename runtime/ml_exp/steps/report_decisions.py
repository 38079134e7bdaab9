"""The report's part on how a model decides (issue 25): its calibration (reliability diagram and
expected calibration error before and after temperature scaling), each label's threshold
(multi-label) and the review routing (coverage against precision, and what held on the test
split). Read from ``models/<model>/decisions.json`` (validation) and
``inference/<model>/decisions.json`` (test)."""

from __future__ import annotations

import io
from typing import Any

from ml_exp.storage.layout import inference_dir, model_dir
from ml_exp.storage.store import Run
from ml_exp.toolkit.decisions import DECISIONS
from ml_exp.toolkit.plots import literal_text


def read_decisions(run: Run, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(validation decisions saved with the model, how they held on the test split); empty dicts
    for a model trained before they existed."""
    saved, tested = f"{model_dir(name)}/{DECISIONS}", f"{inference_dir(name)}/{DECISIONS}"
    return (run.read_json(saved) if run.exists(saved) else {}, run.read_json(tested) if run.exists(tested) else {})


def decision_lines(saved: dict[str, Any], tested: dict[str, Any]) -> list[str]:
    """Plain sentences (Markdown and HTML alike): calibration, thresholds, review."""
    lines = []
    calibration = saved.get("calibration")
    if calibration:
        test_ece = (tested.get("calibration") or {}).get("test_ece")
        lines.append(
            f"Calibration: temperature {_temperature(calibration['temperature'])}; expected calibration error on "
            f"the validation split {calibration['before']['ece']:.3f} before, {calibration['after']['ece']:.3f} after"
            + (f"; {test_ece:.3f} on the test split" if test_ece is not None else "")
            + "."
        )
    review = tested.get("review")
    if review:
        lines.append(
            f"Review routing (REVIEW_TARGET_PRECISION = {review['target_precision']}): "
            + (
                "no confidence reached the target on the validation split: every prediction needs review."
                if review["threshold"] is None
                else f"predictions at confidence >= {review['threshold']:.3f} go straight through: "
                f"{_share(review['validation_coverage'])} of the validation documents at precision "
                f"{_number(review['validation_precision'])}; on the test split {_share(review['test_coverage'])} at "
                f"precision {_number(review['test_precision'])}."
            )
        )
    return lines


def threshold_rows(saved: dict[str, Any]) -> list[tuple[str, float, float, float, bool]]:
    """(label, threshold, validation precision, validation recall, target met) per label."""
    return [
        (label, t["threshold"], t["precision"], t["recall"], t["met"])
        for label, t in (saved.get("thresholds") or {}).items()
    ]


@literal_text
def reliability_png(calibration: dict[str, Any], title: str) -> bytes:
    """Reliability diagram: each confidence bin's share right against its mean confidence, before
    and after temperature scaling (a calibrated model lies on the diagonal)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.6, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for when, color in (("before", "tab:orange"), ("after", "tab:blue")):
        bins = calibration[when]["bins"]
        axes.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            marker="o",
            color=color,
            label=f"{when} (ECE {calibration[when]['ece']:.3f})",
        )
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="share right", title=title)
    axes.legend(loc="upper left", fontsize=8)
    return _png(figure)


@literal_text
def review_curve_png(review: dict[str, Any], title: str) -> bytes:
    """Coverage (share of documents automated) against their precision as the confidence threshold
    falls, on the validation split; the target and the chosen threshold's point marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curve = review["curve"]
    figure = Figure(figsize=(4.6, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(curve["coverage"], curve["precision"], color="tab:blue", label="validation")
    axes.axhline(review["target"], color="tab:red", linestyle="--", linewidth=1, label=f"target {review['target']}")
    if review.get("threshold") is not None:
        axes.plot(
            [review["coverage"]], [review["precision"]], marker="o", color="tab:red",
            label=f"threshold {review['threshold']:.3f}",
        )  # fmt: skip
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="coverage (automated share)", ylabel="precision", title=title)
    axes.legend(loc="lower left", fontsize=8)
    return _png(figure)


def _png(figure: Any) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _temperature(value: Any) -> str:
    if isinstance(value, list):
        return "per label " + ", ".join(f"{t:.2f}" for t in value)
    return f"{value:.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

"""Metrics: which way is better, and the evaluation modules shipped with the runtime.

``classification.py`` is an ``evaluate.Metric`` script (loaded with ``evaluate.load(<path>)``,
offline); :data:`CLASSIFICATION` is its absolute path. Nothing heavy is imported here: the script
itself is only imported by ``evaluate``.
"""

from __future__ import annotations

from pathlib import Path

CLASSIFICATION = str(Path(__file__).resolve().with_name("classification.py"))


def greater_is_better(metric: str) -> bool:
    """As HF ``TrainingArguments``: a metric is maximised unless it is a loss."""
    return not metric.endswith("loss")

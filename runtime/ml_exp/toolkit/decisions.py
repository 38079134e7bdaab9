"""From a document's scores to what is decided about it: calibrated scores, the predicted label(s),
how confident that is, and whether a person should check it (issue 25).

Training fits the choices on the validation split (:mod:`ml_exp.steps.calibrate`) and saves them
with the model as ``decisions.json``; the inference step, ``exp predict``, ``exp serve`` and
endpoints read them back through :class:`Decisions`, so all of them decide alike. A model
without the file (trained before it existed, or CALIBRATION = none and no review) decides as
ever: the most probable class, its uncalibrated probability.

Calibration works on document scores (after the windows of a long document are combined):
single-label ``softmax(log p / T)``, which for one window is exactly temperature scaling of the
logits; multi-label ``sigmoid(logit(p) / T_label)`` per label. Importing this module is cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_exp.core.names import MULTI_LABEL, SINGLE_LABEL

DECISIONS = "decisions.json"
# probabilities are clipped this far from 0 and 1 before a log or logit
EPSILON = 1e-7
# what transformers' config.problem_type says for each PROBLEM_TYPE
HF_PROBLEM_TYPES = {SINGLE_LABEL: "single_label_classification", MULTI_LABEL: "multi_label_classification"}


def is_multi_label_model(model: Any) -> bool:
    """Whether a transformers model was trained multi-label (its config's problem_type)."""
    return getattr(getattr(model, "config", None), "problem_type", None) == HF_PROBLEM_TYPES[MULTI_LABEL]


def probabilities(logits: Any, multi_label: bool) -> Any:
    """Logits -> probabilities (numpy): softmax over classes, or a sigmoid per label. numpy only:
    the CPU serving image has no scipy."""
    import numpy as np

    values = np.asarray(logits, dtype=np.float64)
    if multi_label:
        return 0.5 * (1.0 + np.tanh(0.5 * values))  # the sigmoid, without overflow for large |x|
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def document_logits(scores: Any, multi_label: bool) -> Any:
    """Document probabilities back to the logits a temperature divides: log p, or logit(p)."""
    import numpy as np

    p = np.clip(np.asarray(scores, dtype=np.float64), EPSILON, 1 - EPSILON)
    return np.log(p / (1 - p)) if multi_label else np.log(p)


@dataclass(frozen=True)
class Decisions:
    """How one model decides. ``temperature``: one float (single-label), one per label
    (multi-label) or None (uncalibrated); ``thresholds``: each label's probability threshold
    (multi-label); ``review_threshold``: the confidence under which a prediction needs review
    (None with a review target: nothing reached it, every prediction needs review)."""

    labels: list[str]
    problem_type: str = SINGLE_LABEL
    temperature: float | list[float] | None = None
    thresholds: list[float] | None = None
    review_target: float | None = None
    review_threshold: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def multi_label(self) -> bool:
        return self.problem_type == MULTI_LABEL

    @classmethod
    def read(cls, folder: Path, labels: list[str], multi_label: bool = False) -> Decisions:
        """The decisions saved in a model folder; without the file, the plain ones."""
        path = Path(folder) / DECISIONS
        if not path.is_file():
            return cls(list(labels), MULTI_LABEL if multi_label else SINGLE_LABEL)
        return cls.from_dict(json.loads(path.read_text()), labels, str(path))

    @classmethod
    def from_dict(cls, saved: dict[str, Any], labels: list[str], where: str = DECISIONS) -> Decisions:
        if list(saved.get("labels", [])) != list(labels):
            raise ValueError(f"{where} is for labels {saved.get('labels')}, not the model's {list(labels)}")
        thresholds = saved.get("thresholds")
        review = saved.get("review") or {}
        return cls(
            labels=list(labels),
            problem_type=saved.get("problem_type", SINGLE_LABEL),
            temperature=(saved.get("calibration") or {}).get("temperature"),
            thresholds=[float(thresholds[label]["threshold"]) for label in labels] if thresholds else None,
            review_target=review.get("target"),
            review_threshold=review.get("threshold"),
            facts=saved,
        )

    def calibrated(self, scores: Any) -> Any:
        """Document probabilities (documents x labels) with the temperature applied."""
        import numpy as np

        scores = np.asarray(scores, dtype=np.float64)
        if self.temperature is None or not len(scores):
            return scores
        scaled = document_logits(scores, self.multi_label) / np.asarray(self.temperature, dtype=np.float64)
        return probabilities(scaled, self.multi_label)

    def predicted(self, scores: Any) -> Any:
        """Class ids (single-label) or 0/1 rows (multi-label: probability >= the label's threshold)."""
        import numpy as np

        scores = np.asarray(scores, dtype=np.float64)
        if not self.multi_label:
            return scores.argmax(axis=-1)
        thresholds = np.asarray(self.thresholds if self.thresholds else [0.5] * scores.shape[-1])
        return (scores >= thresholds).astype(np.int64)

    def confidence(self, scores: Any) -> Any:
        """How sure each document's decision is: the top probability (single-label); the least
        sure of its labels' yes/no decisions (multi-label)."""
        import numpy as np

        scores = np.asarray(scores, dtype=np.float64)
        if not self.multi_label:
            return scores.max(axis=-1)
        chosen = self.predicted(scores).astype(bool)
        return np.where(chosen, scores, 1 - scores).min(axis=-1)

    def needs_review(self, scores: Any) -> list[bool] | None:
        """Per document, whether a person should check it (None: REVIEW_TARGET_PRECISION was off)."""
        if self.review_target is None:
            return None
        from ml_exp.toolkit.review import needs_review

        return needs_review(self.confidence(scores), self.review_threshold)

    def label_names(self, predicted_row: Any) -> str | list[str]:
        """One prediction as label name(s)."""
        if not self.multi_label:
            return self.labels[int(predicted_row)]
        return [label for label, chosen in zip(self.labels, predicted_row) if chosen]

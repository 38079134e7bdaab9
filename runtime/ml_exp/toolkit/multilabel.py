"""Metrics for multi-label classification (issue 25 item 1: a document may carry several labels).

``multi_label_metrics`` takes multi-hot predictions and references (one row per document, one 0/1
column per label) and returns what a multi-label experiment is judged on. ``tune_label_thresholds`` picks
each label's probability threshold on the validation split by a ``LABEL_THRESHOLDS`` rule. Importing
this module is cheap: numpy and sklearn are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ml_exp.config.parsers import parse_threshold_rule

__all__ = ["multi_label_metrics", "parse_threshold_rule", "tune_label_thresholds"]

# A label with no positive (or no negative) validation example has no curve to tune on.
DEFAULT_THRESHOLD = 0.5


def _as_multi_hot(values: Any, what: str, num_labels: int) -> Any:
    import numpy as np

    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(
            f"multi_label_metrics: {what} must be multi-hot rows (one row per document, one 0/1 column per label); "
            f"got shape {array.shape}"
        )
    if array.shape[1] != num_labels:
        raise ValueError(
            f"multi_label_metrics: {what} have {array.shape[1]} columns but there are {num_labels} labels; "
            "pass one column per label (index = label id)"
        )
    if array.size and not np.isin(array, (0, 1)).all():
        raise ValueError(
            f"multi_label_metrics: {what} must hold only 0 and 1 (multi-hot); threshold probabilities or logits "
            "first (for example probabilities >= 0.5)"
        )
    return array.astype(np.int64)


def multi_label_metrics(predictions: Any, references: Any, labels: Sequence[str]) -> dict[str, float]:
    """Micro, macro and samples F1, per-label precision/recall, subset accuracy and Hamming loss.

    ``predictions`` and ``references`` are multi-hot (lists or numpy arrays of shape documents x
    labels, 0/1); ``labels`` are the label names (index = column). A document with no label is a row
    of zeros. Every label counts, also one absent from both (its scores are 0, not a warning).
    Returns ``subset_accuracy`` (every label of a document right), ``hamming_loss``,
    ``precision_micro``, ``recall_micro``, ``f1_micro``, the same with ``_macro`` and ``_samples``,
    and ``precision_<label>`` / ``recall_<label>`` / ``f1_<label>`` for each label.
    """
    from sklearn.metrics import accuracy_score, hamming_loss, precision_recall_fscore_support

    names = list(labels)
    if not names:
        raise ValueError("multi_label_metrics: labels is empty; pass the label names (index = column)")
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"multi_label_metrics: labels {duplicates} occur more than once; each label names one column")
    preds = _as_multi_hot(predictions, "predictions", len(names))
    refs = _as_multi_hot(references, "references", len(names))
    if preds.shape[0] != refs.shape[0]:
        raise ValueError(
            f"multi_label_metrics: {preds.shape[0]} predictions but {refs.shape[0]} references; pass one prediction "
            "per reference"
        )
    if not refs.shape[0]:
        raise ValueError("multi_label_metrics: no predictions to score (empty predictions and references)")
    result = {"subset_accuracy": float(accuracy_score(refs, preds)), "hamming_loss": float(hamming_loss(refs, preds))}
    for average in ("micro", "macro", "samples"):
        precision, recall, f1, _ = precision_recall_fscore_support(refs, preds, average=average, zero_division=0)
        result[f"precision_{average}"] = float(precision)
        result[f"recall_{average}"] = float(recall)
        result[f"f1_{average}"] = float(f1)
    precision, recall, f1, _ = precision_recall_fscore_support(refs, preds, average=None, zero_division=0)
    for index, name in enumerate(names):
        result[f"precision_{name}"] = float(precision[index])
        result[f"recall_{name}"] = float(recall[index])
        result[f"f1_{name}"] = float(f1[index])
    return result


def tune_label_thresholds(
    probabilities: Any, references: Any, labels: Sequence[str], rule: str = "f1"
) -> dict[str, dict[str, Any]]:
    """Each label's threshold on its probability, chosen on validation data by ``rule``.

    ``probabilities`` are sigmoid outputs (documents x labels), ``references`` multi-hot. Returns per
    label ``threshold``, the validation ``precision`` and ``recall`` at it, and ``met``: False when
    ``precision:<p>`` cannot be reached (the threshold with the best precision is kept) or the label
    had no positive and no negative example to tune on (``DEFAULT_THRESHOLD``).
    """
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    kind, target = parse_threshold_rule(rule)
    names = list(labels)
    probs = np.asarray(probabilities, dtype=float)
    refs = _as_multi_hot(references, "references", len(names))
    if probs.shape != refs.shape:
        raise ValueError(
            f"tune_label_thresholds: probabilities have shape {probs.shape} but references {refs.shape}; pass one "
            "probability per document and label"
        )
    tuned: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(names):
        truth, scores = refs[:, index], probs[:, index]
        if kind == "fixed" or truth.min() == truth.max():
            threshold = target if kind == "fixed" else DEFAULT_THRESHOLD
            predicted = scores >= threshold
            hits = int((predicted & (truth == 1)).sum())
            tuned[name] = {
                "threshold": threshold,
                "precision": hits / max(int(predicted.sum()), 1),
                "recall": hits / max(int(truth.sum()), 1),
                "met": kind == "fixed",
            }
            continue
        # precision/recall have one more entry than thresholds (the point at recall 0); drop it
        precision, recall, thresholds = precision_recall_curve(truth, scores)
        precision, recall = precision[:-1], recall[:-1]
        if kind == "f1":
            f1 = np.divide(
                2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0
            )
            best, met = int(np.argmax(f1)), True
        else:
            reaching = np.flatnonzero(precision >= target)
            met = bool(reaching.size)
            # thresholds ascend: the first that reaches the target keeps the most recall
            best = int(reaching[0]) if met else int(np.argmax(precision))
        tuned[name] = {
            "threshold": float(thresholds[best]),
            "precision": float(precision[best]),
            "recall": float(recall[best]),
            "met": met,
        }
    return tuned

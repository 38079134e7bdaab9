"""Metrics for multi-label classification (issue 25 item 1: a document may carry several labels).

``multi_label_metrics`` takes multi-hot predictions and references (one row per document, one 0/1
column per label) and returns what a multi-label experiment is judged on. Importing this module is
cheap: numpy and sklearn are imported inside the function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["multi_label_metrics"]


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

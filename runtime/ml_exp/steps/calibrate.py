"""After training, on the validation split: the temperature, each label's threshold (multi-label)
and the review threshold, saved with the model as ``decisions.json`` (issue 25).

The inference step then reports how they hold on the test split; ``exp predict``, ``exp serve``
and endpoints use them (:class:`ml_exp.toolkit.decisions.Decisions`). Also the Trainer's
``compute_metrics`` turns validation logits into document predictions here, so that training
measures documents as inference decides them.
"""

from __future__ import annotations

from typing import Any

from ml_exp.core.names import MULTI_LABEL, SINGLE_LABEL
from ml_exp.toolkit.decisions import Decisions, document_logits, probabilities
from ml_exp.toolkit.documents import combine, combine_labels

# bins of the reliability diagram and the expected calibration error
BINS = 10
# points of the coverage-precision curve kept for the report
CURVE_POINTS = 101


def document_scores(logits: Any, documents: Any, how: str, multi_label: bool) -> Any:
    """Window logits -> one row of probabilities per document (``documents``: (each document's
    first row, rows) or None when every row is a document), combined as inference combines them."""
    probs = probabilities(logits, multi_label)
    if documents is None:
        return probs
    starts, _ = documents
    return (combine_labels if multi_label else combine)(probs, starts, how)[0]


def document_references(references: Any, documents: Any) -> Any:
    import numpy as np

    references = np.asarray(references)
    if documents is not None:
        references = references[documents[0]]
    return references.astype(np.int64)


def fit_decisions(scores: Any, references: Any, labels: list[str], config: Any) -> dict[str, Any]:
    """What ``decisions.json`` holds, fitted on the validation documents' ``scores`` (documents x
    labels) and ``references`` (class ids, or 0/1 rows in multi-label)."""
    import numpy as np

    from ml_exp.toolkit.calibration import fit_temperature
    from ml_exp.toolkit.multilabel import tune_label_thresholds
    from ml_exp.toolkit.review import coverage_precision_curve, review_threshold

    multi_label = config.problem_type == MULTI_LABEL
    saved: dict[str, Any] = {
        "problem_type": MULTI_LABEL if multi_label else SINGLE_LABEL,
        "labels": list(labels),
        "validation_documents": int(len(scores)),
    }
    if config.calibration == "temperature" and len(scores):
        temperature = fit_temperature(document_logits(scores, multi_label), references, multi_label=multi_label)
        after = Decisions(list(labels), saved["problem_type"], temperature).calibrated(scores)
        saved["calibration"] = {
            "method": "temperature",
            "temperature": temperature,
            "before": reliability(scores, references, multi_label),
            "after": reliability(after, references, multi_label),
        }
    decisions = Decisions.from_dict(saved, labels)
    calibrated = decisions.calibrated(scores)
    if multi_label:
        saved["label_thresholds"] = config.label_thresholds
        saved["thresholds"] = tune_label_thresholds(calibrated, references, labels, config.label_thresholds)
        decisions = Decisions.from_dict(saved, labels)
    if config.review_target_precision is not None and len(scores):
        confidence = decisions.confidence(calibrated)
        correct = right(decisions.predicted(calibrated), references, multi_label)
        saved["review"] = review_threshold(confidence, correct, config.review_target_precision)
        curve = coverage_precision_curve(confidence, correct)
        keep = np.unique(np.linspace(0, len(curve["coverage"]) - 1, CURVE_POINTS).astype(int))
        saved["review"]["curve"] = {name: [values[i] for i in keep] for name, values in curve.items()}
    return saved


def right(predicted: Any, references: Any, multi_label: bool) -> Any:
    """Per document, whether the prediction is right (multi-label: every label of it)."""
    import numpy as np

    predicted, references = np.asarray(predicted), np.asarray(references)
    return (predicted == references).all(axis=-1) if multi_label else predicted == references


def reliability(scores: Any, references: Any, multi_label: bool, bins: int = BINS) -> dict[str, Any]:
    """Expected calibration error and the reliability diagram's bins (mean confidence, share
    right, documents): single-label on the top class, multi-label on every (document, label)."""
    import numpy as np

    from ml_exp.toolkit.calibration import expected_calibration_error

    scores, references = np.asarray(scores, dtype=np.float64), np.asarray(references)
    if multi_label:
        confidence, outcome = scores.ravel(), references.ravel().astype(np.float64)
    else:
        confidence = scores.max(axis=-1)
        outcome = (scores.argmax(axis=-1) == references).astype(np.float64)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    table = [
        {
            "confidence": float(confidence[index == b].mean()),
            "accuracy": float(outcome[index == b].mean()),
            "count": int((index == b).sum()),
        }
        for b in range(bins)
        if (index == b).any()
    ]
    return {"ece": expected_calibration_error(confidence, outcome, bins), "bins": table}


def predictions_for_metrics(scores: Any, multi_label: bool) -> list:
    """What compute_metrics receives as predictions: class ids, or 0/1 rows at 0.5 (during
    training: the thresholds are chosen once it ends)."""
    import numpy as np

    scores = np.asarray(scores)
    return ((scores >= 0.5).astype(np.int64) if multi_label else scores.argmax(axis=-1)).tolist()


def best_evaluation(evaluations: list[tuple[Any, Any]], history: list[dict[str, Any]], best_step: Any) -> Any:
    """The (document scores, references) of the evaluation that chose the best model, when this
    process made every evaluation of the log (not after a resume); None otherwise."""
    steps = [h.get("step") for h in history if any(k.startswith("eval_") for k in h)]
    if len(steps) != len(evaluations) or not steps:
        return None
    at = steps.index(best_step) if best_step in steps else len(steps) - 1
    return evaluations[at]


def validation_decisions(
    trainer: Any, validation: Any, labels: list[str], config: Any, documents: Any, evaluated: Any = None
) -> dict:
    """The best model on the validation split, then :func:`fit_decisions`. ``evaluated``: the
    best evaluation's (document scores, references), which spare predicting the split again;
    else it is predicted (every rank takes part)."""
    import numpy as np

    if evaluated is not None:
        return fit_decisions(evaluated[0], evaluated[1], labels, config)
    compute, trainer.compute_metrics = trainer.compute_metrics, None  # logits only: no metrics again
    try:
        output = trainer.predict(validation, metric_key_prefix="calibration")
    finally:
        trainer.compute_metrics = compute
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    if trainer.eval_order is not None:  # predicted in length order: back to the split's
        logits = np.asarray(logits)[np.argsort(np.asarray(trainer.eval_order))]
    references = validation.select_columns(["label"]).with_format("numpy")[:]["label"]
    multi_label = config.problem_type == MULTI_LABEL
    scores = document_scores(logits, documents, config.chunk_aggregation, multi_label)
    return fit_decisions(scores, document_references(references, documents), labels, config)

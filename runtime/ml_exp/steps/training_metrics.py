"""The Trainer's ``compute_metrics`` as the training step builds it: the experiment's
compute_metrics on documents (a long document's windows combined as inference combines them),
class ids in single-label, 0/1 rows per label in multi-label; rehearsed once before training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ml_exp.core.errors import StepError
from ml_exp.core.names import MULTI_LABEL
from ml_exp.experiment.context import Context
from ml_exp.experiment.functions import Functions, user_error
from ml_exp.steps.calibrate import document_references, document_scores, predictions_for_metrics
from ml_exp.toolkit.documents import WINDOW, document_starts


def validation_documents(validation: Any) -> Any:
    """(each document's first row, rows) of the validation split when documents have several
    windows (DOCUMENT_STRATEGY = chunks), else None. The Trainer evaluates the split in order."""
    if WINDOW not in validation.column_names:
        return None
    starts = document_starts(validation.with_format(None).data.column(WINDOW).to_numpy())
    return (starts, len(validation)) if len(starts) < len(validation) else None


def trainer_metrics(
    udfs: Functions, labels: list[str], ctx: Context, documents: Any = None
) -> Callable[..., dict[str, float]]:
    """The Trainer's compute_metrics: the user's, per document (``documents``: each one's first
    row; its windows' scores are combined by CHUNK_AGGREGATION), never per window."""
    import numpy as np

    wanted = ctx.config.metric_for_best_model
    multi_label = ctx.config.problem_type == MULTI_LABEL

    def compute(prediction: Any, rehearsal: bool = False) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        if documents is not None and len(logits) != documents[1]:  # the windows' order ties them to documents
            raise StepError(
                f"the Trainer returned {len(logits)} validation predictions for {documents[1]} windows; cannot "
                "combine them per document"
            )
        scores = document_scores(np.asarray(logits), documents, ctx.config.chunk_aggregation, multi_label)
        references = document_references(prediction.label_ids, documents)
        if not rehearsal:  # each evaluation's document scores: the best one's are calibrated on after training
            compute.evaluations.append((scores, references))
        predicted = predictions_for_metrics(scores, multi_label)
        # before training, with the labels as the predictions: say so, since no model has run yet
        called = "compute_metrics (called before training on the validation labels)" if rehearsal else "compute_metrics"
        try:
            metrics = udfs.compute_metrics(predicted, references.tolist(), labels, ctx)
        except Exception as exc:
            raise StepError(user_error(called, exc, ctx.experiment_dir)) from exc
        if not isinstance(metrics, dict) or wanted not in metrics:
            raise StepError(
                f"{called} returned {sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__}; "
                f"it must return a dict holding METRIC_FOR_BEST_MODEL = {wanted}"
            )
        try:
            values = {name: float(value) for name, value in metrics.items()}
        except (TypeError, ValueError) as exc:
            raise StepError(
                f"{called} returned a value that is not a number ({exc}); return a dict of metric name -> number"
            ) from None
        if (
            math.isnan(values[wanted]) and not rehearsal
        ):  # the Trainer would compare NaNs and keep an arbitrary "best" model
            raise StepError(
                f"compute_metrics returned {wanted} = nan (METRIC_FOR_BEST_MODEL) on the validation split; return a "
                "number (e.g. 0.0 when undefined)"
            )
        return values

    compute.evaluations = []  # type: ignore[attr-defined]
    return compute


def rehearse(compute: Callable[..., dict[str, float]], validation: Any, num_labels: int) -> None:
    """compute_metrics once on the validation split's own labels, before training: a function that
    fails or lacks METRIC_FOR_BEST_MODEL shows now, not after the first epoch."""
    import numpy as np

    if len(validation):
        references = np.asarray(validation.select_columns(["label"]).with_format("numpy")[:]["label"])
        if references.ndim == 2:  # multi-label 0/1 rows: logits that say each row back
            logits = (references.astype(np.float32) * 2 - 1) * 8.0
        else:
            logits = np.eye(num_labels, dtype=np.float32)[references] * 8.0
        compute(type("Rehearsal", (), {"predictions": logits, "label_ids": references})(), rehearsal=True)

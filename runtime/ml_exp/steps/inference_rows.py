"""The inference step's rows: each test document's combined scores -> its row of predictions.parquet,
its prediction and reference for compute_metrics, its cell of the confusion matrix, and how the
decisions saved with the model (calibration, thresholds, review: ``decisions.json``) hold on the
test split. Single-label rows are as they always were; multi-label rows list labels.
"""

from __future__ import annotations

from array import array
from typing import Any

from ml_exp.core.errors import StepError
from ml_exp.storage.layout import TEST
from ml_exp.toolkit.decisions import Decisions
from ml_exp.toolkit.documents import PAGE, WINDOW_END, WINDOW_START, combine, combine_labels

# reliability bins of the test split's calibration error (as training's, steps/calibrate.py)
BINS = 10
EVIDENCE = ((WINDOW_START, "evidence_start"), (WINDOW_END, "evidence_end"), (PAGE, "evidence_page"))


def prediction_schema(decisions: Decisions) -> Any:
    import pyarrow as pa

    labels = decisions.labels
    one = (lambda t: pa.list_(t)) if decisions.multi_label else (lambda t: t)  # noqa: E731
    fields = [("id", pa.string()), ("true_label", one(pa.string())), ("predicted_label", one(pa.string()))]
    fields += [(f"score_{label}", pa.float32()) for label in labels]
    fields += [
        ("windows", pa.int32()),
        # per predicted label in multi-label: the window that gives it its highest probability
        ("evidence_window", one(pa.int32())),
        ("evidence_start", one(pa.int64())),
        ("evidence_end", one(pa.int64())),
        ("evidence_page", one(pa.int32())),  # the deciding window's page, when encode gives pages
    ]
    if decisions.review_target is not None:
        fields += [("confidence", pa.float32()), ("needs_review", pa.bool_())]
    return pa.schema(fields)


class PredictionRows:
    """Accumulates the test documents' rows (``buffer``, column -> values, for the writers) and
    what the step reports once every document is scored."""

    def __init__(self, decisions: Decisions, aggregation: str):
        import numpy as np

        self.decisions, self.aggregation = decisions, aggregation
        self.labels, self.k = decisions.labels, len(decisions.labels)
        self.schema = prediction_schema(decisions)
        self.buffer: dict[str, list] = {name: [] for name in self.schema.names}
        multi = decisions.multi_label
        self.predictions: Any = [] if multi else array("q")
        self.references: Any = [] if multi else array("q")
        # single-label: true x predicted; multi-label: documents with true label i where j was predicted
        self.matrix = np.zeros((self.k, self.k), dtype=np.int64)
        self.bins = np.zeros((3, BINS))  # per bin: count, summed confidence, summed outcome
        self.routed = [0, 0, 0]  # documents, automated, automated and right

    def add(self, probs: Any, truth: Any, starts: Any, done: int, head: dict[str, Any]) -> None:
        """The documents starting at ``starts`` (rows of ``head`` up to ``done``): ``probs`` their
        windows' scores, ``truth`` each document's reference (class id, or its 0/1 row)."""
        import numpy as np

        d = self.decisions
        if d.multi_label:
            raw, evidence = combine_labels(probs, starts, self.aggregation)
        else:
            raw, evidence = combine(probs, starts, self.aggregation)
        scores = d.calibrated(raw)
        predicted = d.predicted(scores)
        if not d.multi_label and truth.size and (truth.min() < 0 or truth.max() >= self.k):
            raise StepError(f"the {TEST} split has label ids outside 0..{self.k - 1}.")
        flags = d.needs_review(scores)  # None without a review target
        self._measure(scores, predicted, truth, flags)
        out = self.buffer
        out["id"].extend(str(head["id"][s]) for s in starts)
        out["true_label"].extend(d.label_names(t) for t in truth)
        out["predicted_label"].extend(d.label_names(p) for p in predicted)
        for c, label in enumerate(self.labels):
            out[f"score_{label}"].extend(scores[:, c].tolist())
        out["windows"].extend(np.diff(np.append(starts, done)).tolist())
        if d.multi_label:  # each predicted label's own deciding window
            chosen = [np.flatnonzero(row) for row in predicted]
            out["evidence_window"].extend(evidence[i, c].tolist() for i, c in enumerate(chosen))
            for column, name in EVIDENCE:
                values = head.get(column)
                out[name].extend(
                    None if values is None else [_or_none(values[starts[i] + evidence[i, j]]) for j in c]
                    for i, c in enumerate(chosen)
                )
        else:
            deciding = starts + evidence
            out["evidence_window"].extend(evidence.tolist())
            for column, name in EVIDENCE:
                spans = head[column][deciding] if column in head else np.full(len(starts), -1)
                out[name].extend(_or_none(v) for v in spans)
        if flags is not None:
            out["confidence"].extend(d.confidence(scores).tolist())
            out["needs_review"].extend(flags)

    def _measure(self, scores: Any, predicted: Any, truth: Any, flags: list[bool] | None) -> None:
        import numpy as np

        d = self.decisions
        if d.multi_label:
            self.predictions.extend(predicted.tolist())
            self.references.extend(np.asarray(truth).tolist())
            for t_row, p_row in zip(truth, predicted):
                self.matrix[np.ix_(np.flatnonzero(t_row), np.flatnonzero(p_row))] += 1
            right = (predicted == truth).all(axis=-1)
            confidence, outcome = scores.ravel(), np.asarray(truth, dtype=np.float64).ravel()
        else:
            np.add.at(self.matrix, (truth, predicted), 1)
            self.predictions.extend(int(p) for p in predicted)
            self.references.extend(int(t) for t in truth)
            right = predicted == truth
            confidence, outcome = scores.max(axis=-1), right.astype(np.float64)
        index = np.minimum((confidence * BINS).astype(int), BINS - 1)
        np.add.at(self.bins, (0, index), 1)
        np.add.at(self.bins, (1, index), confidence)
        np.add.at(self.bins, (2, index), outcome)
        if flags is not None:
            automated = ~np.asarray(flags, dtype=bool)
            self.routed[0] += len(right)
            self.routed[1] += int(automated.sum())
            self.routed[2] += int((automated & right).sum())

    def test_facts(self) -> dict[str, Any]:
        """How the validation split's decisions held on the test split (the inference folder's
        ``decisions.json``): calibration error, and the review threshold's coverage and precision."""
        import numpy as np

        count, confidence, outcome = self.bins
        seen = count > 0
        facts: dict[str, Any] = {"problem_type": self.decisions.problem_type}
        facts["calibration"] = {
            "temperature": self.decisions.temperature,
            "test_ece": float((np.abs(confidence[seen] - outcome[seen]) / count.sum()).sum()) if seen.any() else None,
            "validation": {
                when: (self.decisions.facts.get("calibration") or {}).get(when, {}).get("ece")
                for when in ("before", "after")
            },
        }
        if self.decisions.thresholds is not None:
            facts["thresholds"] = dict(zip(self.labels, self.decisions.thresholds))
        if self.decisions.review_target is not None:
            documents, automated, right = self.routed
            validation = self.decisions.facts.get("review") or {}
            facts["review"] = {
                "target_precision": self.decisions.review_target,
                "threshold": self.decisions.review_threshold,
                "validation_coverage": validation.get("coverage"),
                "validation_precision": validation.get("precision"),
                "test_coverage": automated / documents if documents else None,
                "test_precision": right / automated if automated else None,
            }
        return facts


def _or_none(value: Any) -> int | None:
    return int(value) if value >= 0 else None

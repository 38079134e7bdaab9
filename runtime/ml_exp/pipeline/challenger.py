"""Champion and challenger: is a new model better than the approved one beyond noise?

Both models' per-document predictions on the same test split (each run's
``inference/<model>/predictions.parquet``) are paired by document id, and the difference of
the metric (challenger - champion) is bootstrapped: the documents are resampled with
replacement, the same resample for both models, ``RESAMPLES`` times (seeded, so a comparison
is reproducible), giving a percentile confidence interval. "Better" means the whole interval
is above zero. The metrics are computed from confusion matrices, all resamples at once.
"""

from __future__ import annotations

from typing import Any

from ml_exp.core.errors import UserError
from ml_exp.storage.layout import PREDICTIONS, inference_dir
from ml_exp.storage.run import Run
from ml_exp.storage.store import transport_for

RESAMPLES = 2000
LEVEL = 0.95
METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted", "f1_micro")


def run_at(uri: str) -> Run:
    """The run folder at ``uri`` (``<storage>/<experiment>/run_<N>``)."""
    experiment_uri, _, folder = uri.rstrip("/").rpartition("/")
    storage_uri = experiment_uri.rpartition("/")[0]
    return Run(transport_for(storage_uri), experiment_uri, int(folder.split("_")[1]))


def predictions(run: Run, model: str) -> dict[str, tuple[str, str]]:
    """Document id -> (true label, predicted label) of a run's model on its test split."""
    import pyarrow.parquet as pq

    with run.open(f"{inference_dir(model)}/{PREDICTIONS}") as f:
        table = pq.read_table(f, columns=["id", "true_label", "predicted_label"]).to_pydict()
    return {i: (t, p) for i, t, p in zip(table["id"], table["true_label"], table["predicted_label"])}


def compare(
    champion: dict[str, tuple[str, str]],
    challenger: dict[str, tuple[str, str]],
    metric: str,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Any]:
    """The metric of both, their difference and its paired bootstrap interval."""
    import numpy as np

    if metric not in METRICS:
        raise UserError(where="--metric", message=f"the comparison computes {', '.join(METRICS)}, not {metric!r}.")
    if set(champion) != set(challenger) or any(champion[i][0] != challenger[i][0] for i in champion):
        raise UserError(
            where="--against",
            message="the two models were not tested on the same documents (ids or labels differ); compare runs "
            "whose test-split fingerprints are equal (reuse the data with DATA_FROM).",
        )
    ids = sorted(champion)
    labels = sorted({champion[i][0] for i in ids} | {champion[i][1] for i in ids} | {challenger[i][1] for i in ids})
    index = {label: k for k, label in enumerate(labels)}
    true = np.array([index[champion[i][0]] for i in ids])
    a = np.array([index[champion[i][1]] for i in ids])
    b = np.array([index[challenger[i][1]] for i in ids])
    n, k = len(ids), len(labels)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples)  # resamples x n
    full = np.ones((1, n), dtype=np.int64)

    def scores(pred: np.ndarray, w: np.ndarray) -> np.ndarray:
        cells = np.zeros((n, k * k))
        cells[np.arange(n), true * k + pred] = 1
        return _metric((w @ cells).reshape(-1, k, k), metric)

    diffs = scores(b, weights) - scores(a, weights)
    low, high = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    champion_value, challenger_value = float(scores(a, full)[0]), float(scores(b, full)[0])
    return {
        "metric": metric,
        "documents": n,
        "champion": champion_value,
        "challenger": challenger_value,
        "difference": challenger_value - champion_value,
        "interval": [float(low), float(high)],
        "level": level,
        "resamples": resamples,
        "verdict": "better" if low > 0 else "worse" if high < 0 else "no difference beyond noise",
    }


def _metric(matrices: Any, metric: str) -> Any:
    """``metric`` of each confusion matrix (rows: true, columns: predicted)."""
    import numpy as np

    tp = np.diagonal(matrices, axis1=1, axis2=2)
    support, predicted = matrices.sum(axis=2), matrices.sum(axis=1)
    total = matrices.sum(axis=(1, 2))
    if metric in ("accuracy", "f1_micro"):
        return tp.sum(axis=1) / np.maximum(total, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    if metric == "f1_weighted":
        return (f1 * support).sum(axis=1) / np.maximum(total, 1)
    per_class = {"f1_macro": f1, "precision_macro": precision, "recall_macro": recall}[metric]
    return per_class.mean(axis=1)


def against(board: dict[str, Any], champion: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Each row of the champion's test split compared with the champion (a registry record);
    rows of other test splits cannot be (``against`` None)."""
    test = ((champion.get("fingerprints") or {}).get("splits") or {}).get("test")
    champion_predictions = predictions(run_at(champion["run_uri"]), champion["model"])
    for group in board["groups"]:
        for row in group["rows"]:
            same = group["test_fingerprint"] == test and row["uri"] != champion["run_uri"]
            row["against"] = (
                compare(champion_predictions, predictions(run_at(row["uri"]), row["model"]), board["metric"], seed=seed)
                if same
                else None
            )
    board["champion"] = {k: champion.get(k) for k in ("group", "version", "experiment", "run", "model", "status")}
    return board

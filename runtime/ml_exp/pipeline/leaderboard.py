"""`exp leaderboard`: every experiment in a storage, ranked, but only against models tested on the
same documents.

A row is a completed run of an experiment with its best model's test metrics (the inference
step's), its training cost (training and tuning time; SageMaker billable seconds and cost when
it ran jobs), its model's size (parameters and bytes, from the safetensors header) and its
inference speed (test documents per second of the inference step, model loading included), and
the fingerprint of its test split (preparation's). Rows are grouped by that fingerprint: only
rows of one group are ranked against each other. A run prepared before ml-exp recorded the
fingerprint has none and is listed apart, unranked.
"""

from __future__ import annotations

import json
import struct
from datetime import datetime
from typing import Any

from ml_exp.core.names import INFERENCE, PREPARATION, TRAINING, TUNING
from ml_exp.pipeline.runs import aws_cost
from ml_exp.storage.layout import REGISTRY, model_dir
from ml_exp.storage.store import Store, StoreError, transport_for
from ml_exp.toolkit.metrics import greater_is_better

NO_FINGERPRINT = "unknown"


def experiments(storage_uri: str) -> list[str]:
    """The experiments in ``storage_uri``: its folders holding runs (the registry is not one)."""
    transport = transport_for(storage_uri)
    names = [n for n in transport.listdir(transport.storage_uri) if n != REGISTRY and not n.startswith(".")]
    return sorted(n for n in names if _has_runs(storage_uri, n))


def _has_runs(storage_uri: str, name: str) -> bool:
    try:
        return bool(Store(storage_uri, name).run_numbers())
    except StoreError:
        return False


def leaderboard_rows(storage_uri: str, metric: str) -> list[dict[str, Any]]:
    """One row per completed run (with test metrics) of every experiment in ``storage_uri``."""
    rows = []
    for name in experiments(storage_uri):
        store = Store(storage_uri, name)
        for run in store.runs():
            try:
                manifest = run.read_manifest()
            except StoreError:  # a damaged run is `exp runs`'s to show; it ranks nowhere
                continue
            row = run_row(run, manifest, metric)
            if row is not None:
                rows.append(row)
    return rows


def run_row(run: Any, manifest: dict[str, Any], metric: str) -> dict[str, Any] | None:
    steps = manifest.get("steps") or {}
    inference = steps.get(INFERENCE) or {}
    per_model = {m: v for m, v in (inference.get("metrics") or {}).items() if isinstance(v, dict) and metric in v}
    if manifest.get("status") != "completed" or not per_model:
        return None
    pick = max if greater_is_better(metric) else min
    model = pick(per_model, key=lambda m: per_model[m][metric])
    preparation = steps.get(PREPARATION) or {}
    test_records = (preparation.get("split_sizes") or {}).get("test")
    duration = inference.get("duration_s")
    return {
        "experiment": manifest.get("experiment", run.experiment_name),
        "run": run.num,
        "model": model,
        "created_at": manifest.get("created_at"),
        "value": per_model[model][metric],
        "metrics": per_model[model],
        "labels": preparation.get("labels"),
        "test_fingerprint": (preparation.get("split_fingerprints") or {}).get("test") or NO_FINGERPRINT,
        "data_fingerprint": (steps.get("reconciliation") or {}).get("fingerprint"),
        "data_from": (steps.get("reconciliation") or {}).get("data_from"),
        "test_records": test_records,
        "training_s": sum((steps.get(s) or {}).get("duration_s") or 0 for s in (TRAINING, TUNING)) or None,
        "aws": aws_cost(manifest),
        "model_size": model_size(run, model),
        "documents_per_s": round(test_records / duration, 2) if test_records and duration else None,
        "registry": manifest.get("registry"),
        "uri": run.uri,
    }


def model_size(run: Any, model: str) -> dict[str, int] | None:
    """Parameters and bytes of a run's model, read from its safetensors header (8 bytes of length,
    then JSON: each tensor's dtype, shape and byte range), without loading it."""
    try:
        with run.open(f"{model_dir(model)}/model.safetensors") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (StoreError, OSError, ValueError, struct.error):
        return None
    tensors = [t for k, t in header.items() if k != "__metadata__"]
    parameters = 0
    for tensor in tensors:
        count = 1
        for dim in tensor["shape"]:
            count *= dim
        parameters += count
    return {"parameters": parameters, "bytes": max((t["data_offsets"][1] for t in tensors), default=0)}


def leaderboard(
    storage_uri: str,
    metric: str,
    labels: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    every_run: bool = False,
) -> dict[str, Any]:
    """The rows (filtered by label set and date), grouped by test-split fingerprint and ranked
    within each group on ``metric``; unless ``every_run``, an experiment's best run per group."""
    first, last = (_day(since, "--since") if since else ""), (_day(until, "--until") if until else "")
    rows = leaderboard_rows(storage_uri, metric)
    if labels:
        rows = [r for r in rows if sorted(r["labels"] or []) == sorted(labels)]
    rows = [r for r in rows if (r["created_at"] or "") >= first and (not last or (r["created_at"] or "")[:10] <= last)]
    better = greater_is_better(metric)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (-r["value"] if better else r["value"], r["created_at"] or "")):
        group = groups.setdefault(row["test_fingerprint"], [])
        if every_run or not any(r["experiment"] == row["experiment"] for r in group):
            group.append(row)
    listed = []
    for fingerprint, group in groups.items():
        for rank, row in enumerate(group, 1):
            row["rank"] = rank if fingerprint != NO_FINGERPRINT else None
        listed.append({"test_fingerprint": fingerprint, "test_records": group[0]["test_records"], "rows": group})
    # the largest group first (the comparison most models share), the unknown one last
    listed.sort(key=lambda g: (g["test_fingerprint"] == NO_FINGERPRINT, -len(g["rows"])))
    return {"storage_uri": storage_uri, "metric": metric, "greater_is_better": better, "groups": listed}


def _day(text: str, option: str) -> str:
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        raise StoreError(f"{option}={text!r}: give a date as YYYY-MM-DD.") from None


def leaderboard_tables(board: dict[str, Any]) -> list[Any]:
    """A rich table per group of the same test split."""
    from rich.markup import escape
    from rich.table import Table

    from ml_exp.pipeline.runs import cost_text

    tables = []
    for group in board["groups"]:
        fingerprint = group["test_fingerprint"]
        if fingerprint == NO_FINGERPRINT:
            title = "test split unknown (prepared before ml-exp recorded it): not ranked"
        else:
            title = f"test split {fingerprint[:12]} ({group['test_records']} documents): ranked only against each other"
        table = Table(title=title)
        for column, justify in (("#", "right"), ("experiment / run", "left"), ("model", "left")):
            table.add_column(column, justify=justify, overflow="fold")
        table.add_column(board["metric"], justify="right")
        table.add_column("training", justify="right", overflow="fold")
        table.add_column("size", justify="right")
        table.add_column("docs/s", justify="right")
        versus = "champion" in board
        if versus:
            champion = board["champion"]
            table.add_column(f"vs v{champion['version']} (95% CI)", justify="right", overflow="fold")
        for row in group["rows"]:
            size = row["model_size"]
            training = f"{row['training_s']:.0f} s" if row["training_s"] else "-"
            if row["aws"]:
                training += f" {cost_text(row['aws'])}"
            cells = [_versus(row.get("against"))] if versus else []
            table.add_row(
                str(row["rank"] or "-"),
                escape(f"{row['experiment']}/run_{row['run']}"),
                escape(row["model"]),
                f"{row['value']:.4f}",
                training,
                f"{size['parameters'] / 1e6:.2f}M" if size else "-",
                f"{row['documents_per_s']:.1f}" if row["documents_per_s"] else "-",
                *cells,
            )
        tables.append(table)
    return tables


def _versus(result: dict[str, Any] | None) -> str:
    if not result:
        return "-"
    low, high = result["interval"]
    return f"{result['difference']:+.4f} [{low:+.4f}, {high:+.4f}] {result['verdict']}"

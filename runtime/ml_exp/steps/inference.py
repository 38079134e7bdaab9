"""Inference testing: every trained model on the test split of its prepared data, then the models compared.

``run_inference`` is the step: it hands each model not yet tested in this run to the backend
(here, or a SageMaker job), then writes the comparison (:mod:`ml_exp.steps.report`);
``infer_model`` is what tests one model, wherever it runs.

It reads a model's prepared data (``id``, ``label``, the encoded inputs, where each window is)
and its trained model, and writes its inference folder (one complete folder, never
overwritten): predictions as Parquet and CSV, one row per document (id, true_label,
predicted_label, one ``score_<label>`` column per class, ``windows``, and the evidence: the window
that decided the prediction, ``evidence_window``, its character span in the encoded text,
``evidence_start`` / ``evidence_end``, or its page, ``evidence_page``), the experiment's
``compute_metrics`` on documents, a per-class report and the confusion matrix (JSON and PNG). Memory stays flat:
the split is memory-mapped and read block by block, predictions stream to the writers; only
int predictions/references and the matrix are kept.
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ml_exp.core.console import interactive
from ml_exp.core.errors import StepError
from ml_exp.core.names import INFERENCE
from ml_exp.experiment.context import Context
from ml_exp.experiment.functions import Functions, user_error
from ml_exp.steps import RunTask, Task, tracking_records
from ml_exp.steps.inference_outputs import as_number, classification_report, csv_column, log_to_wandb, write_json
from ml_exp.steps.inference_rows import PredictionRows
from ml_exp.steps.report import confusion_matrix_png
from ml_exp.storage.layout import (
    CLASSIFICATION_REPORT,
    CONFUSION_MATRIX,
    CONFUSION_MATRIX_PNG,
    LABELS,
    METRICS,
    MODEL_LABELS,
    PREDICTIONS,
    PREDICTIONS_CSV,
    TEST,
    inference_dir,
    model_dir,
    model_key,
    prepared_dir,
)
from ml_exp.storage.store import OutputExistsError, Run
from ml_exp.toolkit.decisions import DECISIONS, Decisions
from ml_exp.toolkit.documents import PAGE, WINDOW, WINDOW_END, WINDOW_START, document_starts
from ml_exp.toolkit.scoring import Scorer, accepted_inputs, length_batches, load_classifier, model_inputs

# Rows buffered before a Parquet row group is written (bounded memory per group).
PARQUET_ROWS_PER_GROUP = 65_536
# Rows read and scored together: sorted by length within a block, in batches of
# PER_DEVICE_EVAL_BATCH_SIZE. Bounds memory whatever the size of the split.
BATCHES_PER_BLOCK = 32


def run_inference(ctx: Context, run_task: RunTask) -> dict[str, Any]:
    """Test every model of MODEL_NAMES, a task each that the backend runs until inference/<model>/
    is complete (one already tested in this run is kept), then compare them."""
    from ml_exp.steps.report import write_report

    results, live = {}, {}
    for name in ctx.config.model_names:
        if not ctx.run.is_complete(inference_dir(name)):  # kept from an earlier, interrupted attempt
            live[name] = (run_task(ctx, Task(INFERENCE, name)) or {}).get("tracking")
        results[name] = load_result(ctx.run, name)
    best = write_report(ctx, results)
    tracking = tracking_records(ctx, INFERENCE, {name: live.get(name) for name in ctx.config.model_names})
    return {
        "metrics": {name: result["metrics"] for name, result in results.items()},
        "best": best,
        "tracking": tracking,
    }


def infer_model(ctx: Context, udfs: Functions, model_name: str) -> dict:
    """Run ``model_name``'s trained model on the test split and write ``inference/<key>/``.

    Returns ``{"metrics": <compute_metrics result>, "test_records": n, "uri": <folder URL>}``.
    Raises :class:`StepError` for problems the user can fix (missing inputs, label maps that
    disagree, a failing ``compute_metrics``), and the store's ``OutputExistsError`` when this
    run already has a complete inference folder for the model.
    """
    run, log = ctx.run, ctx.log
    if run is None:
        raise StepError("inference needs a run (ctx.run is None); start it with exp run")
    key = model_key(model_name)
    target = inference_dir(model_name)
    if run.is_complete(target):  # fail before any compute; put_dir would refuse at the end anyway
        raise OutputExistsError(
            f"{run.path(target)} already exists; refusing to overwrite it (run outputs are never "
            "overwritten). Start a new run (RUN_NUM = auto) to test the model again."
        )

    from ml_exp.steps.tracking import record, tracked

    with tempfile.TemporaryDirectory(prefix=f"ml-exp-{INFERENCE}-{key}-", dir=run.scratch_area()) as scratch:
        scratch_dir = Path(scratch)
        prepared = run.local_input(prepared_dir(model_name), scratch_dir / "inputs")
        trained = run.local_input(model_dir(model_name), scratch_dir / "inputs")
        labels = _labels(run, trained, model_name)
        out = scratch_dir / "out"
        out.mkdir()

        with tracked(ctx, key, INFERENCE) as wb:
            rows = _predict(ctx, model_name, prepared, trained, labels, out, udfs)
            n = len(rows.references)
            log.info("inference %s: %d test documents scored", model_name, n)

            metrics = _user_metrics(udfs, ctx, model_name, rows.predictions, rows.references, labels)
            report = classification_report(rows.predictions, rows.references, labels)
            decided = rows.test_facts()
            _say_decisions(log, model_name, decided)
            write_json(out / METRICS, metrics)
            write_json(out / CLASSIFICATION_REPORT, report)
            write_json(out / DECISIONS, decided)
            matrix = rows.matrix.tolist()
            write_json(out / CONFUSION_MATRIX, {"labels": list(labels), "matrix": matrix})
            del rows
            (out / CONFUSION_MATRIX_PNG).write_bytes(confusion_matrix_png(matrix, labels, title=f"{model_name} — test"))

            uri = run.put_dir(str(out), target)
            log.info("inference %s: outputs in %s", model_name, uri)
            if wb is not None:
                log_to_wandb(wb, log, metrics, report, labels, out / CONFUSION_MATRIX_PNG, n)
            tracked_as = record(wb) if wb is not None else None

    return {"metrics": metrics, "test_records": n, "uri": uri, "tracking": tracked_as, "decisions": decided}


def _say_decisions(log: Any, model_name: str, decided: dict[str, Any]) -> None:
    """One line on the review routing's test coverage and precision, next to its target."""
    review = decided.get("review")
    if review:
        precision = review["test_precision"]
        log.info(
            "inference %s: review at confidence >= %s: %.0f%% of the test documents go straight through, at "
            "precision %s (target %s)",
            model_name,
            "-" if review["threshold"] is None else f"{review['threshold']:.3f}",
            100 * (review["test_coverage"] or 0),
            "-" if precision is None else f"{precision:.3f}",
            review["target_precision"],
        )


def load_result(run: Run, model_name: str) -> dict:
    """What :func:`infer_model` returned, read back from a complete ``inference/<key>/`` folder
    (to rebuild the report, or to skip a model already tested when a step is resumed)."""
    import pyarrow.parquet as pq

    folder = inference_dir(model_name)
    if not run.is_complete(folder):
        raise StepError(
            f"{run.path(folder)} is missing or incomplete: run the inference step for {model_name!r} first."
        )
    metrics = run.read_json(f"{folder}/{METRICS}")
    with run.open(f"{folder}/{PREDICTIONS}") as f:
        records = pq.ParquetFile(f).metadata.num_rows
    decided = run.read_json(f"{folder}/{DECISIONS}") if run.exists(f"{folder}/{DECISIONS}") else None
    return {"metrics": metrics, "test_records": records, "uri": run.path(folder), "decisions": decided}


# --- inputs ------------------------------------------------------------------------------------


def _labels(run: Run, trained: Path, model_name: str) -> list[str]:
    try:
        data_labels = run.read_json(LABELS)
    except Exception as exc:
        raise StepError(f"{run.path(LABELS)} cannot be read ({exc}); run the preparation step first.") from None
    model_labels_file = trained / MODEL_LABELS
    if model_labels_file.is_file():
        model_labels = json.loads(model_labels_file.read_text())
        if list(model_labels) != list(data_labels):
            raise StepError(
                f"the label map of model {model_name!r} ({model_labels_file.name}: {model_labels}) differs from the "
                f"prepared data's ({LABELS}: {data_labels}); train the model on this run's prepared data."
            )
    if not isinstance(data_labels, list) or not data_labels:
        raise StepError(f"{run.path(LABELS)} must be a non-empty list of label names (index = class id).")
    return [str(label) for label in data_labels]


def _load(prepared: Path, trained: Path, labels: list[str], model_name: str):
    import datasets

    try:
        splits = datasets.load_from_disk(str(prepared))  # memory-mapped
    except Exception as exc:
        raise StepError(
            f"the prepared data of model {model_name!r} ({prepared}) cannot be loaded: {exc}; "
            "re-run the preparation step in a new run."
        ) from exc
    if not isinstance(splits, datasets.DatasetDict) or TEST not in splits:
        found = list(splits.keys()) if isinstance(splits, datasets.DatasetDict) else "a single Dataset"
        raise StepError(f"the prepared data of model {model_name!r} has no {TEST!r} split (found: {found}).")
    test = splits[TEST]
    for column in ("id", "label"):
        if column not in test.column_names:
            raise StepError(
                f"the {TEST} split of model {model_name!r} has no {column!r} column (columns: {test.column_names})."
            )
    feature = test.features["label"]
    names = getattr(feature, "names", None)  # None in multi-label: 0/1 per label, named by labels.json
    if names is not None and list(names) != list(labels):
        raise StepError(f"the {TEST} split's label names {list(names)} differ from {LABELS} {labels}.")

    model, tokenizer = load_classifier(trained, labels, model_name)
    inputs = model_inputs(model, test.column_names)
    if not inputs:
        raise StepError(
            f"the {TEST} split of model {model_name!r} has no model inputs (columns: {test.column_names}; "
            f"the model accepts {accepted_inputs(model)}); check encode()."
        )
    return test, model, tokenizer, inputs


# --- the forward pass, streamed ------------------------------------------------------------------


def _predict(
    ctx: Context, model_name: str, prepared: Path, trained: Path, labels: list[str], out: Path, udfs: Any = None
):
    """Score the test split block by block, one prediction per document, streamed to
    predictions.parquet/.csv in the split's order.

    Within a block the rows are scored longest first, in batches of similar lengths (less
    padding), and put back in order; a document's windows are combined (CHUNK_AGGREGATION) once
    its last window is scored. Returns the :class:`PredictionRows` (predictions, references,
    confusion matrix and the test split's decisions facts)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    test, model, tokenizer, inputs = _load(prepared, trained, labels, model_name)
    rows = test.num_rows
    if rows == 0:
        raise StepError(
            f"the {TEST} split of model {model_name!r} is empty; give reconcile() more records or "
            "raise the test share of SPLIT_RATIOS."
        )
    batch_size = ctx.config.per_device_eval_batch_size
    collate = None
    if getattr(udfs, "collate", None) is not None:  # the experiment batches its rows itself, as in training
        from ml_exp.toolkit.collate import batch_maker
        from ml_exp.toolkit.scoring import saved_processor

        collate = batch_maker(udfs, saved_processor(prepared), ctx)
    mixed = getattr(ctx.config, "mixed_precision", "no")
    scorer = Scorer(model, tokenizer, inputs, len(labels), model_name, mixed, collate=collate)
    try:
        decisions = Decisions.read(trained, labels, scorer.multi_label)
    except ValueError as exc:
        raise StepError(f"model {model_name!r}: {exc}; train it again in a new run.") from None
    rows_out_of = PredictionRows(decisions, ctx.config.chunk_aggregation)
    schema, buffer = rows_out_of.schema, rows_out_of.buffer
    where = [c for c in (WINDOW, WINDOW_START, WINDOW_END, PAGE) if c in test.column_names]
    data = test.select_columns(["id", "label", *where, *inputs])
    pending: dict[str, Any] | None = None  # the windows of a document whose last window may be in the next block

    def flush(writer: Any, rows_out: Any, end: bool = False) -> None:
        """Write the buffered rows in row groups of PARQUET_ROWS_PER_GROUP (the rest at the end)."""
        while len(buffer["id"]) >= PARQUET_ROWS_PER_GROUP or (end and buffer["id"]):
            size = min(PARQUET_ROWS_PER_GROUP, len(buffer["id"]))
            table = pa.table({name: values[:size] for name, values in buffer.items()}, schema=schema)
            writer.write_table(table)
            rows_out.writerows(zip(*(csv_column(table.column(i)) for i in range(table.num_columns))))
            for values in buffer.values():
                del values[:size]

    def emit(block: dict[str, Any], last: bool) -> dict[str, Any] | None:
        """Predictions for the documents complete in ``block``; returns the rest (or None)."""
        starts = document_starts(block[WINDOW])
        done = len(block[WINDOW]) if last else (int(starts[-1]) if len(starts) else 0)
        if done == 0:
            return block
        head = {name: values[:done] for name, values in block.items()}
        starts = starts[starts < done]
        rows_out_of.add(head["probs"], head["label"][starts], starts, done, head)
        return None if last or done == len(block[WINDOW]) else {name: values[done:] for name, values in block.items()}

    block_rows = batch_size * BATCHES_PER_BLOCK
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
        disable=not interactive(),
    )
    with (
        pq.ParquetWriter(str(out / PREDICTIONS), schema) as writer,
        open(out / PREDICTIONS_CSV, "w", newline="", encoding="utf-8") as csv_file,
        progress,
    ):
        rows_out = csv.writer(csv_file)
        rows_out.writerow(schema.names)
        task = progress.add_task(f"inference {model_name}", total=rows)
        seen = 0
        for batch in data.iter(batch_size=block_rows):
            count = len(batch["id"])
            block = {
                "id": np.asarray(batch["id"], dtype=object),
                "label": np.asarray(batch["label"], dtype=np.int64),
                WINDOW: np.asarray(batch[WINDOW], dtype=np.int64)
                if WINDOW in batch
                else np.zeros(count, dtype=np.int64),
                "probs": _scores_by_length(scorer, batch, inputs, batch_size),
            }
            block.update(
                {c: np.asarray(batch[c], dtype=np.int64) for c in (WINDOW_START, WINDOW_END, PAGE) if c in batch}
            )
            if pending is not None:
                block = {name: np.concatenate([pending[name], values]) for name, values in block.items()}
            seen += count
            pending = emit(block, last=seen >= rows)
            flush(writer, rows_out)
            progress.advance(task, count)
        if pending is not None:
            emit(pending, last=True)
        flush(writer, rows_out, end=True)
    return rows_out_of


def _scores_by_length(scorer: Scorer, batch: Mapping[str, list], inputs: list[str], batch_size: int) -> Any:
    """The block's softmax scores in its order, computed longest rows first in batches of
    ``batch_size`` (on a GPU, by tokens: :func:`ml_exp.toolkit.scoring.length_batches`): rows of similar lengths share a
    batch, so little of it is padding."""
    import numpy as np

    count = len(batch[inputs[0]])
    known = "input_ids" in batch and "input_ids" in inputs
    lengths = np.asarray([len(v) for v in batch["input_ids"]]) if known else np.zeros(count)
    order = np.argsort(-lengths, kind="stable")
    on_gpu = getattr(getattr(scorer, "device", None), "type", None) == "cuda"
    probs = None
    for start, end in length_batches(lengths[order], batch_size, by_tokens=known and on_gpu):
        chosen = order[start:end]
        part = scorer.scores({c: [batch[c][i] for i in chosen] for c in inputs})
        if probs is None:
            probs = np.empty((count, part.shape[1]), dtype=np.float32)
        probs[chosen] = part
    return probs


def _user_metrics(
    udfs: Functions, ctx: Context, model_name: str, predictions: list[int], references: list[int], labels: list[str]
) -> dict[str, float]:
    where = getattr(getattr(udfs, "module", None), "__name__", None) or "experiment"
    try:
        result = udfs.compute_metrics(predictions, references, list(labels), ctx)
    except Exception as exc:
        raise StepError(
            f"{user_error(f'{where}.compute_metrics', exc, ctx.experiment_dir)} (inference of model {model_name!r} "
            f"on {len(references)} test records); fix compute_metrics."
        ) from exc
    if not isinstance(result, Mapping):
        raise StepError(
            f"{where}.compute_metrics returned {type(result).__name__} for model {model_name!r}; "
            "return a dict of metric name -> number."
        )
    metrics: dict[str, float] = {}
    for name, value in result.items():
        number = as_number(value)
        if number is None or (name == ctx.config.metric_for_best_model and math.isnan(number)):
            raise StepError(
                f"{where}.compute_metrics returned {name!r} = {value!r} for model {model_name!r}; "
                f"every value must be a number{' (METRIC_FOR_BEST_MODEL, not NaN)' if number is not None else ''}."
            )
        metrics[str(name)] = number
    return metrics

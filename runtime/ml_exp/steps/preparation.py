"""Preparation: split the reconciled records (stratified) and encode them for every model.

The split and the label list are computed once and shared by every model, so that models of a
comparison job are trained and tested on exactly the same records.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ml_exp.core.errors import StepError
from ml_exp.core.names import MULTI_LABEL, PREPARATION, SINGLE_LABEL
from ml_exp.experiment.context import Context
from ml_exp.experiment.functions import Functions, user_error, user_frames
from ml_exp.steps.columns import read_records, split_characters, split_column, split_fingerprint
from ml_exp.steps.coverage import (
    Documents,
    document_coverage,
    lengths_png,
    warn_if_degenerate,
    warn_if_empty,
    warn_if_truncated,
)
from ml_exp.steps.drawing import Drawing
from ml_exp.steps.encode_splits import OWNER, encode_splits
from ml_exp.storage.layout import (
    ASSIGNED_SPLIT,
    DOCUMENT_LENGTHS_PNG,
    LABELS,
    MODEL_LABELS,
    PROCESSOR,
    RECONCILED,
    RECORD_FIELDS,
    SPLIT,
    SPLITS,
    prepared_dir,
)
from ml_exp.toolkit.documents import Windowing, check_encoded, to_rows

# Model inputs a classifier can start from; encode must return at least one of them.
PROBE_ROWS = 8


def run_preparation(ctx: Context, udfs: Functions) -> dict[str, Any]:
    with Drawing() as drawing:  # first: it imports matplotlib while this process imports datasets
        return _prepare(ctx, udfs, drawing)


def _prepare(ctx: Context, udfs: Functions, drawing: Drawing) -> dict[str, Any]:
    import datasets

    config = ctx.config
    with tempfile.TemporaryDirectory(prefix=f"ml-exp-{PREPARATION}-", dir=ctx.run.scratch_area()) as scratch:
        shards = sorted(str(p) for p in ctx.run.local_input(RECONCILED, scratch).glob("part-*.parquet"))
        raw = read_records(shards, os.path.join(scratch, "cache"))
        multi_label = config.problem_type == MULTI_LABEL
        check_label_kind(raw, multi_label)
        if multi_label:
            labels = sorted({name for names in raw.data.column("label").to_pylist() for name in names})
            if not labels:
                raise StepError("every reconciled record has an empty label list; multi-label needs at least 1 label")
            raw = raw.cast_column("label", datasets.List(datasets.ClassLabel(names=labels)))
        else:
            labels = sorted(raw.unique("label"))
            if len(labels) < 2:
                raise StepError(
                    f"the reconciled records have {len(labels)} label(s) ({', '.join(labels)}); classification needs "
                    "at least 2"
                )
            raw = raw.cast_column("label", datasets.ClassLabel(names=labels))
        if ctx.run.exists(ASSIGNED_SPLIT):  # DATA_FROM: every record where the source run put it
            raw = assign_splits(raw, ctx.run.read_bytes(ASSIGNED_SPLIT))
        splits = split_records(raw, config.split_ratios, config.seed, ctx)
        # before encoding: its sorted ids and index mapping are gone before the encoded splits exist
        fingerprints = {name: split_fingerprint(part) for name, part in splits.items()}
        ctx.run.write_bytes(SPLIT, split_table(splits), overwrite=_rewriting(ctx))
        sizes = {name: len(part) for name, part in splits.items()}
        counts = {name: label_counts(part, labels) for name, part in splits.items()}
        warn_if_degenerate(counts, ctx)
        ctx.run.write_json(LABELS, labels, overwrite=_rewriting(ctx))

        content = [c for c in raw.column_names if c not in RECORD_FIELDS]
        per_model = {}
        for model_name in config.model_names:
            per_model[model_name] = _encode_for(model_name, splits, content, labels, ctx, udfs, Path(scratch), drawing)
    return {
        "labels": labels,
        "split_sizes": sizes,
        "label_counts": counts,
        "split_fingerprints": fingerprints,
        "models": per_model,
    }


def split_table(splits: Any) -> bytes:
    """``data/split.parquet``: each record's id and split (what DATA_FROM reuses)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [split_column(part, "id") for part in splits.values()]
    ids = pa.chunked_array([chunk for column in columns for chunk in column.chunks], columns[0].type)
    names = pa.array([name for name, part in splits.items() for _ in range(len(part))], pa.string())
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": ids, "split": names}), buffer)
    return buffer.getvalue()


def assign_splits(raw: Any, table: bytes) -> Any:
    """The records with the split the DATA_FROM run gave each (StepError when one has none)."""
    import io

    import pyarrow.parquet as pq

    assigned = pq.read_table(io.BytesIO(table)).to_pydict()
    split_of = dict(zip(assigned["id"], assigned["split"]))
    missing = [i for i in split_column(raw, "id").to_pylist() if i not in split_of]
    if missing:
        raise StepError(
            f"DATA_FROM: {len(missing)} record(s) (e.g. id {missing[0]!r}) have no split in the source run's "
            f"{SPLIT}; its records and split disagree, name another run."
        )
    return raw.map(lambda batch: {"split": [split_of[i] for i in batch["id"]]}, batched=True)


def label_counts(split: Any, labels: list[str]) -> dict[str, int]:
    """Records per label in one split (every label, zeros included), read in one batch
    (multi_label: the records that carry each label)."""
    import numpy as np
    import pyarrow.compute as pc

    column = split_column(split, "label")
    if is_multi_label(split):
        column = pc.list_flatten(column)
    counts = np.bincount(np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64), minlength=len(labels))
    return {label: int(n) for label, n in zip(labels, counts)}


def is_multi_label(split: Any) -> bool:
    """Whether a split's ``label`` column holds label lists (PROBLEM_TYPE = multi_label)."""
    return hasattr(split.features["label"], "feature")


def check_label_kind(raw: Any, multi_label: bool) -> None:
    """The reconciled labels are of PROBLEM_TYPE's kind (DATA_FROM may name a run of the other)."""
    import pyarrow as pa

    lists = pa.types.is_list(raw.data.column("label").type) or pa.types.is_large_list(raw.data.column("label").type)
    if lists != multi_label:
        raise StepError(
            f"the reconciled records' labels are {'lists' if lists else 'single class names'} but PROBLEM_TYPE = "
            f"{MULTI_LABEL if multi_label else SINGLE_LABEL}; set PROBLEM_TYPE to match, or reconcile again (a "
            "DATA_FROM run keeps the labels it was reconciled with)"
        )


def multi_hot(ids: Any, num_labels: int) -> Any:
    """Label id lists -> rows of 0/1 (numpy, records x labels)."""
    import numpy as np

    rows = np.zeros((len(ids), num_labels), dtype=np.int64)
    for row, chosen in enumerate(ids):
        rows[row, list(chosen)] = 1
    return rows


def split_records(raw, ratios: tuple[float, float, float], seed: int, ctx: Context):
    """train/validation/test: records with a ``split`` go there, the rest is split stratified."""
    import datasets

    pinned, free = _pinned(raw)
    train_ratio, validation_ratio, test_ratio = ratios
    held_out = validation_ratio + test_ratio
    parts: dict[str, Any]
    if len(free) >= 3:
        first = _split(free, held_out, seed, ctx)
        second = _split(first["test"], test_ratio / held_out, seed, ctx)
        parts = {"train": first["train"], "validation": second["train"], "test": second["test"]}
    else:
        parts = {name: free.select([]) for name in SPLITS}
    splits = datasets.DatasetDict(
        {name: datasets.concatenate_datasets([parts[name], pinned[name]]).remove_columns("split") for name in SPLITS}
    )
    for name, part in splits.items():
        if len(part) == 0:
            raise StepError(
                f"the {name} split is empty ({len(raw)} records, SPLIT_RATIOS = {','.join(map(str, ratios))}); "
                "reconcile more records or change SPLIT_RATIOS"
            )
    return splits


def _pinned(raw: Any) -> tuple[dict[str, Any], Any]:
    """The records whose ``split`` names one (per split), and those free to split: selected
    from the column in one pass (a filter per split called Python once per record)."""
    import numpy as np

    chosen = np.asarray(split_column(raw, "split").to_pylist(), dtype=object)
    pinned = {name: raw.select(np.flatnonzero(chosen == name)) for name in SPLITS}
    return pinned, raw.select(np.flatnonzero(np.equal(chosen, None)))


def _split(dataset, test_size: float, seed: int, ctx: Context):
    """Stratified by label. The labels are read in one batch: datasets' own
    ``train_test_split(stratify_by_column=...)`` reads them row by row (~90 µs a record)."""
    import math

    import numpy as np
    from datasets.arrow_dataset import stratified_shuffle_split_generate_indices

    n_test = math.ceil(test_size * len(dataset))
    if is_multi_label(dataset):
        return _split_multi_label(dataset, n_test, seed)
    try:
        labels = split_column(dataset, "label").to_numpy()
        train, test = next(
            stratified_shuffle_split_generate_indices(
                labels, len(dataset) - n_test, n_test, rng=np.random.default_rng(seed)
            )
        )
    except ValueError as exc:  # a label with too few records to stratify
        ctx.log.warning("stratified split impossible (%s); splitting at random", exc)
        return dataset.train_test_split(test_size=test_size, seed=seed)
    return {"train": dataset.select(train), "test": dataset.select(test)}


def _split_multi_label(dataset: Any, n_test: int, seed: int) -> dict[str, Any]:
    """Iterative stratification (Sechidis et al., 2011; Szymanski & Kajdanowicz, 2017), as the
    ``iterative-stratification`` package implements it: every label, and the pairs of labels,
    keep their share in both parts."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    rows = multi_hot(split_column(dataset, "label").to_pylist(), _num_labels(dataset))
    cut = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
    train, test = next(cut.split(rows, rows))
    return {"train": dataset.select(sorted(train)), "test": dataset.select(sorted(test))}


def _num_labels(dataset: Any) -> int:
    return len(dataset.features["label"].feature.names)


def _encode_for(
    model_name: str,
    splits,
    content: list[str],
    labels: list[str],
    ctx: Context,
    udfs: Functions,
    scratch: Path,
    drawing: Drawing,
) -> dict[str, Any]:

    try:
        processor = udfs.load_processor(model_name, ctx)
    except Exception as exc:
        raise StepError(user_error(f"load_processor({model_name!r})", exc, ctx.experiment_dir)) from exc
    windowing = Windowing.of(ctx.config, processor)
    multi_label = is_multi_label(splits["train"])

    def encode(batch: dict[str, list], training: bool | Sequence[bool] = False) -> dict[str, list]:
        try:
            output = udfs.encode(batch, processor, ctx)
        except Exception as exc:
            ids = ", ".join(map(repr, batch["id"][:3])) + (", ..." if len(batch["id"]) > 3 else "")
            raise StepError(
                f"encode for {model_name!r} raised {type(exc).__name__} on a batch of records {ids}: "
                f"{exc}{user_frames(exc, ctx.experiment_dir)}"
            ) from exc
        check_encoded(model_name, batch, output)
        if multi_label:  # the model's targets: one 0/1 per label (BCE), carried by each window
            batch = {**batch, "label": multi_hot(batch["label"], len(labels)).astype("float32").tolist()}
        return to_rows(batch, output, windowing, training, owner_column=OWNER)

    probe = splits["train"].select(range(min(PROBE_ROWS, len(splits["train"])))).to_dict()
    columns = sorted(set(encode(probe, training=True)) - {OWNER})  # its first call: the warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    encode(probe, training=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu  # cpu: every thread's
    probe_characters = sum(len(str(v)) for name in content for v in probe.get(name, []) if isinstance(v, str))
    characters = {name: split_characters(part, content) for name, part in splits.items()}
    scale = sum(characters.values()) / max(probe_characters, 1)
    workers = _workers(wall * scale, cpu * scale)
    batch_size = records_per_batch(characters["train"], len(splits["train"]))
    if workers:  # the map's workers are forked: no drawing process (and its threads) here meanwhile
        drawing.pause()
    try:
        encoded = encode_splits(
            splits,
            encode,
            "train",
            workers=workers,
            batch_size=batch_size,
            desc=f"encoding {sum(map(len, splits.values()))} records for {model_name}",
            columns=columns,
        )
    except StepError:
        raise
    except Exception as exc:  # datasets' own checks of the output (e.g. types that vary by batch)
        raise StepError(
            f"encode for {model_name!r} failed while encoding all records: {type(exc).__name__}: {exc}"
        ) from exc
    local = scratch / "prepared" / prepared_dir(model_name)
    documents = Documents.of(encoded)  # read once, for the picture, the coverage and the warnings
    lengths = {name: docs.lengths for name, docs in documents.items()}
    # drawn in the drawing process while the splits are saved
    png = drawing.draw(lengths_png, lengths, ctx.config.max_length, ctx.config.document_strategy, model_name)
    encoded.save_to_disk(str(local))
    (local / MODEL_LABELS).write_text(json.dumps(labels))
    if hasattr(processor, "save_pretrained"):
        # Training and inference use this very processor: the ids were made by it.
        processor.save_pretrained(str(local / PROCESSOR))
    coverage = document_coverage(encoded, ctx.config, windowing, documents)
    picture = png.png()
    if picture is not None:
        (local / DOCUMENT_LENGTHS_PNG).write_bytes(picture)
    warn_if_truncated(coverage, ctx, model_name)
    warn_if_empty(encoded, ctx, model_name, documents)
    ctx.run.put_dir(str(local), prepared_dir(model_name), overwrite=_rewriting(ctx), move=True)
    return {
        "columns": [c for c in columns if c not in ("id", "label")],
        "rows": {name: len(part) for name, part in encoded.items()},
        "workers": workers,
        "batch_size": batch_size,
        "documents": coverage,
    }


# Characters of text encoded per batch: bounds the memory of a batch whatever the documents'
# lengths (a 300-page document is about a million characters).
CHARACTERS_PER_BATCH = 1_000_000
MAX_RECORDS_PER_BATCH = 1000  # datasets' default


def records_per_batch(characters: int, records: int) -> int:
    """Records per encode batch: datasets' 1000, fewer when the texts are long, so that a batch
    holds about CHARACTERS_PER_BATCH characters (``characters``: of the ``records`` of the
    training split's string columns)."""
    mean = characters / max(records, 1)
    return max(1, min(MAX_RECORDS_PER_BATCH, int(CHARACTERS_PER_BATCH // max(mean, 1))))


# Starting a pool of encode workers (a process each, the function and processor pickled to
# them): measured 0.3 s with the demo's tokenizer and 2 workers on 2 cores; a large tokenizer
# takes longer to pickle, hence the margin.
POOL_START_S = 1.0
MAX_WORKERS = 8


def _workers(encode_seconds: float, cpu_seconds: float) -> int | None:
    """All cores (up to MAX_WORKERS) when a pool would save more than it costs to start; else
    in-process. ``encode_seconds`` / ``cpu_seconds``: the estimated wall and CPU time (every
    thread's) of encoding in this process, from a timed probe batch scaled by the characters. A
    pool of single-threaded workers takes about the CPU time spread over the cores: a fast
    tokenizer that already runs on every core (its Rust threads) gains little from one (measured:
    MiniLM's truncating 20k documents on 2 cores, 0.6 s slower in a pool), a Python encode
    (layout, images) nearly all."""
    cores = min(os.cpu_count() or 1, MAX_WORKERS)
    if cores < 2:
        return None
    # max: an encode that waits (reads files) spends less CPU than wall time, and a pool waits in parallel
    saved = encode_seconds - max(cpu_seconds, encode_seconds) / cores
    return cores if saved > POOL_START_S * 2 else None


def _rewriting(ctx: Context) -> bool:
    """A failed earlier attempt of this step may have left outputs: they are not final, replace them."""
    return ctx.run.step(PREPARATION).get("attempt", 1) > 1

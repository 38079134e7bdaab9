"""Encode every split in one ``datasets.map``: one pass, one pool of workers (a pool per split
cost a start-up each, ~0.3 s with a small tokenizer, more with a large one), one progress bar.

The splits are concatenated (no copy: datasets joins their index mappings), encoded together,
and cut apart again by the rows each record became: ``encode`` is told which of its records are
training records (``MAX_CHUNKS`` thins the windows of those only) and tags each output row with
its split, so that the cut is exact even where a batch straddles two splits.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ml_exp.steps.columns import split_column

PART = "__ml_exp_split"  # the output rows' split (an index into the splits), dropped after the cut
OWNER = "__ml_exp_owner"  # what ``encode`` returns per output row: its record's index in the batch


def encode_splits(
    splits: Mapping[str, Any],
    encode: Callable[[dict[str, list], Sequence[bool]], dict[str, list]],
    training_split: str,
    *,
    workers: int | None,
    batch_size: int,
    desc: str,
) -> Any:
    """``splits`` (name -> Dataset) encoded by ``encode(batch, training)`` (``training``: per
    record of the batch, whether it belongs to ``training_split``) -> a DatasetDict of the
    encoded rows, split by split in the same order."""
    import datasets
    import numpy as np

    names = list(splits)
    sizes = [len(splits[name]) for name in names]
    ends = np.cumsum(sizes)  # record index where each split ends
    train_index = names.index(training_split)

    def encode_tagged(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        parts = np.searchsorted(ends, np.asarray(indices), side="right")
        rows = encode(batch, (parts == train_index).tolist())
        owners = rows.pop(OWNER)
        rows[PART] = parts[owners].astype(np.int8)
        return as_arrow_table(rows)

    joined = datasets.concatenate_datasets([splits[name] for name in names])
    # A fingerprint of our own: datasets' default hashes the function with dill, the processor
    # pickled with it (0.37 s for MiniLM's tokenizer); the step never reuses datasets' cache.
    fingerprint = f"ml-exp-encode-{uuid.uuid4().hex}"
    encoded = joined.map(
        encode_tagged,
        with_indices=True,
        batched=True,
        batch_size=batch_size,
        num_proc=workers,
        remove_columns=joined.column_names,
        desc=desc,
        new_fingerprint=fingerprint,
    )
    tags = split_column(encoded, PART).to_numpy()
    counts = np.bincount(tags, minlength=len(names)) if len(tags) else np.zeros(len(names), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    result = {}
    for index, name in enumerate(names):
        # contiguous ranges: datasets slices the table, no index mapping to flatten when saving
        part = encoded.select(range(int(starts[index]), int(starts[index + 1])))
        result[name] = part.remove_columns(PART)
    return datasets.DatasetDict(result)


# The integer types datasets narrows these columns to when it writes them (``OptimizedTypedSequence``):
# the prepared data keeps the very types it had when datasets converted every column itself.
NARROWED = {"input_ids": "int32", "attention_mask": "int8", "token_type_ids": "int8", "special_tokens_mask": "int8"}


def as_arrow_table(rows: dict[str, Any]) -> Any:
    """``rows`` as an Arrow table made here in one C++ pass per column, when every column is
    of a plain kind (integers, floats, strings, booleans, lists of integers or floats): datasets
    converts a column of Python lists by walking every value in Python first (measured: 0.92 s
    against 0.23 s for 20k documents' ids, masks and type ids). The types are those datasets
    gives the same values. Anything else (nested lists, images, arrays, dicts, only None) and
    ``rows`` is returned as it is, for datasets to convert."""
    import numpy as np
    import pyarrow as pa

    plain = (pa.int64(), pa.float64(), pa.string(), pa.bool_(), pa.list_(pa.int64()), pa.list_(pa.float64()))
    arrays = {}
    for name, values in rows.items():
        if isinstance(values, np.ndarray):
            if values.ndim != 1 or values.dtype.kind not in "iuf":
                return rows
        elif not isinstance(values, list):
            return rows
        try:
            array = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError):  # objects Arrow cannot read: datasets' turn
            return rows
        if isinstance(values, list) and array.type not in plain:
            return rows
        if name in NARROWED and array.type in (pa.int64(), pa.list_(pa.int64())):
            narrow = pa.type_for_alias(NARROWED[name])
            try:
                array = array.cast(narrow if array.type == pa.int64() else pa.list_(narrow))
            except pa.ArrowInvalid:  # out of range: datasets keeps int64 too
                pass
        arrays[name] = array
    return pa.table(arrays)

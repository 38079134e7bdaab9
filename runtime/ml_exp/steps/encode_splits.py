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
    columns: Sequence[str] | None = None,
) -> Any:
    """``splits`` (name -> Dataset) encoded by ``encode(batch, training)`` (``training``: per
    record of the batch, whether it belongs to ``training_split``) -> a DatasetDict of the
    encoded rows, split by split in the same order. ``columns``: what every batch's rows must
    hold (a probe's; a batch of other columns is refused by datasets, as it always was)."""
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
        if expected is not None and set(rows) != expected:  # datasets refuses a batch of other columns
            return rows
        return as_arrow_table(rows, features)

    joined = datasets.concatenate_datasets([splits[name] for name in names])
    features = joined.features  # the records': an output column of the same name is cast to it, as datasets does
    expected = None if columns is None else {*columns, PART}
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


def as_arrow_table(rows: dict[str, Any], features: Any = None) -> Any:
    """``rows`` as an Arrow table made here in one C++ pass per column, when every column is
    of a plain kind (integers, floats, strings, booleans, lists of integers or floats): datasets
    converts a column of Python lists by walking every value in Python first (measured: 0.92 s
    against 0.23 s for 20k documents' ids, masks and type ids). The types are those datasets
    gives the same values: a column named as one of ``features`` (the records' columns: ``label``)
    is cast to that feature where it can be, as datasets casts it (a multi-label target's 0.0/1.0
    to the label list's integers). Anything else (nested lists, images, arrays, dicts, only None)
    and ``rows`` is returned as it is, for datasets to convert."""
    import numpy as np
    import pyarrow as pa
    from datasets.table import cast_array_to_feature

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
        except (pa.ArrowException, TypeError, ValueError, OverflowError):  # what Arrow cannot read: datasets' turn
            return rows
        if isinstance(values, list) and array.type not in plain:
            return rows
        if features is not None and name in features:
            try:
                array = cast_array_to_feature(
                    array, features[name], allow_primitive_to_str=False, allow_decimal_to_str=False
                )
            except (pa.ArrowException, TypeError, ValueError):  # datasets keeps the type it inferred too
                pass
        elif name in NARROWED and array.type in (pa.int64(), pa.list_(pa.int64())):
            narrow = pa.type_for_alias(NARROWED[name])
            try:
                array = array.cast(narrow if array.type == pa.int64() else pa.list_(narrow))
            except pa.ArrowInvalid:  # out of range: datasets keeps int64 too
                pass
        arrays[name] = array
    # datasets writes the records' columns first (in their order), then the new ones
    known = [name for name in features or () if name in arrays]
    return pa.table({name: arrays[name] for name in [*known, *(n for n in arrays if n not in known)]})

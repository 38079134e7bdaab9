"""A split's columns read with Arrow, its selection applied: what preparation reads of every
record (ids, labels, split names, characters, fingerprints) without a Python object or a row
slice per record."""

from __future__ import annotations

import json
from typing import Any


def split_column(split: Any, name: str) -> Any:
    """One column of a split as Arrow, its selection applied (``.data`` ignores it). Taken with
    Arrow from the split's index mapping: datasets' own ``[:]`` gathers a selection one row slice
    at a time, ~0.5 KB of memory a record (450 MB for 800k ids) and 40x slower."""
    import pyarrow as pa

    column = split.with_format(None).data.column(name)
    indices = getattr(split, "_indices", _UNKNOWN)  # datasets' index mapping (None: no selection)
    if indices is None:
        return column
    if hasattr(indices, "column"):
        return column.take(indices.column(0))
    # a datasets without that mapping: read through its selection, a batch at a time
    batches = split.select_columns([name]).with_format("arrow").iter(batch_size=COLUMN_BATCH)
    return pa.chunked_array([batch.column(name).combine_chunks() for batch in batches], column.type)


COLUMN_BATCH = 10_000
_UNKNOWN = object()


def split_characters(split: Any, content: list[str]) -> int:
    """Characters in a split's text columns, its selection applied: each text's length computed
    by Arrow over the whole table, then the selected records' lengths taken and summed (4 bytes a
    record; reading the texts through the selection gathered them a batch at a time, 0.2 s for 20k)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = split.with_format(None).data
    texts = [name for name in content if pa.types.is_string(table.schema.field(name).type)
             or pa.types.is_large_string(table.schema.field(name).type)]  # fmt: skip
    if not texts or not len(split):
        return 0
    indices = getattr(split, "_indices", _UNKNOWN)
    total = 0
    if indices is None or hasattr(indices, "column"):
        for name in texts:
            lengths = pc.utf8_length(table.column(name))
            if indices is not None:
                lengths = lengths.take(indices.column(0))
            total += int(pc.sum(lengths).as_py() or 0)
        return total
    # a datasets without that mapping: read through its selection, a batch at a time
    for batch in split.select_columns(texts).with_format("arrow").iter(batch_size=CHARACTERS_BATCH):
        total += sum(int(pc.sum(pc.utf8_length(batch.column(name))).as_py() or 0) for name in texts)
    return total


CHARACTERS_BATCH = 10_000


def split_fingerprint(split: Any) -> str:
    """sha256 of a split's records (id, label name, content), in id order: two runs whose test
    fingerprints are equal tested on the very same documents, whatever their order or model.
    Read a thousand records at a time (one by one, a 20k split took seconds)."""
    import hashlib

    import pyarrow.compute as pc

    feature = split.features["label"]
    names = getattr(feature, "names", None) or feature.feature.names  # ClassLabel, or multi_label's list of them
    # Arrow's sort is stable and orders strings by code point (UTF-8 bytes), as Python's sorted()
    # did here before, without a Python object per record.
    order = pc.sort_indices(split_column(split, "id")).to_numpy().astype("int64")  # datasets' select wants ints
    digest = hashlib.sha256()
    for row in _rows_in_order(split, order):
        label = row["label"]
        row["label"] = names[label] if isinstance(label, int) else [names[i] for i in label]
        digest.update(json.dumps(row, sort_keys=True, default=repr).encode() + b"\n")
    return digest.hexdigest()


def _rows_in_order(split: Any, order: Any) -> Any:
    """The split's records as dicts, in ``order``, a thousand at a time: taken and read by Arrow
    where no column needs datasets' decoding (images, audio: read through datasets)."""
    from datasets.features.features import require_decoding

    indices = getattr(split, "_indices", None)
    if any(require_decoding(feature) for feature in split.features.values()) or not (
        indices is None or hasattr(indices, "column")
    ):
        for batch in split.select(order).iter(batch_size=FINGERPRINT_BATCH):
            yield from (dict(zip(batch, values)) for values in zip(*batch.values()))
        return
    table = split.with_format(None).data  # every record, the selection's included
    rows = order if indices is None else indices.column(0).take(order).to_numpy()
    for first in range(0, len(rows), FINGERPRINT_BATCH):
        # a slice per record (datasets' gather): Arrow's take costs a pass over the table's
        # batches per call (7 ms a thousand records at 1M records, 15 s in all)
        yield from table.fast_gather(rows[first : first + FINGERPRINT_BATCH]).to_pylist()


FINGERPRINT_BATCH = 1000


def read_records(shards: list[str], folder: str) -> Any:
    """The reconciled parquet shards as one memory-mapped Dataset: their row groups written, one
    at a time, to an Arrow file in ``folder``, then mapped. What ``Dataset.from_parquet`` does
    without its builder, whose set-up alone imports modules for streaming (scipy's among them:
    0.14 s of its 0.37 s for 20k documents). Shards whose schemas differ (not written by one
    reconciliation) are left to from_parquet, which reconciles them."""
    import os

    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [pq.ParquetFile(shard) for shard in shards]
    try:
        if not files or any(not f.schema_arrow.equals(files[0].schema_arrow, check_metadata=True) for f in files):
            return datasets.Dataset.from_parquet(shards, cache_dir=os.path.join(folder, "cache"))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "records.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, files[0].schema_arrow) as writer:
            for shard in files:
                for group in range(shard.num_row_groups):
                    writer.write_table(shard.read_row_group(group))
    finally:
        for shard in files:
            shard.close()
    return datasets.Dataset.from_file(path)

"""Documents and their windows (DOCUMENT_STRATEGY): one place for what preparation, training's
evaluation, inference and the predictor each need to know about them.

``encode`` may return more rows than it received records: ``overflow_to_sample_mapping`` (the
Hugging Face tokenizers' own name) maps each row to its record in the batch, and
``offset_mapping`` (also theirs) locates each row's tokens in the record's text.
:func:`to_rows` turns that into one row per window, with the record's ``id`` and ``label`` and
where the window is (:data:`WINDOW_COLUMNS`); the windows of a document stay together, in order,
window 0 first. :func:`combine` turns the windows' class probabilities back into one row per
document (CHUNK_AGGREGATION) and names the window that decided it (the evidence).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ml_exp.core.errors import StepError
from ml_exp.core.names import CHUNKS

MAPPING = "overflow_to_sample_mapping"
OFFSETS = "offset_mapping"
# Optional column of encode's output: tokens of the whole document (before any cut).
DOCUMENT_TOKENS = "document_tokens"
WINDOW = "window"  # index of the window in its document (0 for a document of one window)
WINDOW_START, WINDOW_END = "window_start", "window_end"  # character span in the encoded text (-1: unknown)
TOKENS_SEEN = "tokens_seen"  # tokens of the document this window adds to what the model sees
PAGE = "page"  # optional, from encode: the page (1-based) a window reads, the evidence of a multi-page prediction
# What a model reads (one of them must be in encode's output).
INPUT_COLUMNS = ("input_ids", "inputs_embeds", "pixel_values", "input_values", "input_features")
WINDOW_COLUMNS = (WINDOW, WINDOW_START, WINDOW_END, DOCUMENT_TOKENS, TOKENS_SEEN)
# encode's columns that describe rows rather than feed the model.
ROW_FACTS = (MAPPING, OFFSETS, DOCUMENT_TOKENS)


@dataclass(frozen=True)
class Windowing:
    """What to keep of a document's windows. ``max_chunks`` applies to training only
    (validation and test always see every window); ``special_tokens``: tokens the processor
    adds to each row ([CLS], [SEP]...), not part of the document."""

    stride: int = 0
    max_chunks: int = 0
    special_tokens: int = 0
    max_length: int = 0  # the longest row: MAX_LENGTH, or the processor's model_max_length when smaller

    @classmethod
    def of(cls, config: Any, processor: Any) -> Windowing:
        from ml_exp.toolkit.encoding import effective_max_length, special_tokens

        stride = config.chunk_stride if config.document_strategy == CHUNKS else 0
        return cls(
            stride=stride,
            max_chunks=config.max_chunks,
            special_tokens=special_tokens(processor),
            max_length=effective_max_length(processor, config.max_length),
        )


def check_rows(where: str, records: int, encoded: Mapping[str, Any]) -> None:
    """``overflow_to_sample_mapping``, when there is one, maps every row to a record of the batch,
    in order, and leaves no record without a row."""
    mapping = encoded.get(MAPPING)
    if mapping is None:
        return
    owners = [int(v) for v in mapping]
    if any(b < a for a, b in zip(owners, owners[1:])) or (owners and (owners[0] < 0 or owners[-1] >= records)):
        raise StepError(
            f"{where}: {MAPPING} must list, for each row in order, its record's index in the batch "
            f"(0..{records - 1}, non-decreasing); got {owners[:12]}{' ...' if len(owners) > 12 else ''}"
        )
    lost = sorted(set(range(records)) - set(owners))
    if lost:
        raise StepError(
            f"{where}: records {lost[:5]} of the batch have no row in {MAPPING}; every record needs at least one row"
        )


def check_encoded(model_name: str, batch: dict[str, list], output: Any) -> list[str]:
    """Refuse malformed encode output before encoding everything; return its columns."""
    where = f"encode for {model_name!r}"
    records = len(batch["id"])
    if not isinstance(output, Mapping):
        raise StepError(
            f"{where} returned a {type(output).__name__}; return a dict of columns (e.g. the tokenizer's output)"
        )
    if not any(column in output for column in INPUT_COLUMNS):
        raise StepError(
            f"{where} returned columns {sorted(output)} but no model input; return one of {', '.join(INPUT_COLUMNS)}"
        )
    rows = records
    if MAPPING in output:
        try:
            rows = len(output[MAPPING])
        except TypeError:
            raise StepError(
                f"{where}: {MAPPING} is a {type(output[MAPPING]).__name__}, not one record index per row"
            ) from None
    for column, values in output.items():
        try:
            length = len(values)
        except TypeError:
            raise StepError(
                f"{where}: column {column!r} is a {type(values).__name__}, not one value per record"
            ) from None
        if length != rows:
            raise StepError(
                f"{where}: column {column!r} has {length} rows for a batch of {records} records"
                f"{f' ({rows} rows in {MAPPING})' if MAPPING in output else ''} (ragged output); return one row per "
                "record, "
                f"or several per record with {MAPPING} naming each row's record (as tokenizers do)"
            )
    check_rows(where, records, output)
    owners = [int(v) for v in output[MAPPING]] if MAPPING in output else list(range(rows))
    check_window_columns(where, batch, output, owners)
    if "input_ids" in output and "attention_mask" in output:
        for index, (ids, mask) in enumerate(zip(output["input_ids"], output["attention_mask"])):
            if len(ids) != len(mask):
                raise StepError(
                    f"{where}: record {batch['id'][owners[index]]!r} has {len(ids)} input_ids but {len(mask)} "
                    "attention_mask values"
                )
    return sorted(output)


def _text_length(batch: Mapping[str, Sequence[Any]], record: int) -> int:
    """A generous bound of the characters encode can have tokenized of a record: its text fields
    joined, with room for what an encode adds (prefixes, field names)."""
    texts = [values[record] for name, values in batch.items() if name != "id" and isinstance(values[record], str)]
    return 4 * (sum(map(len, texts)) + 2 * len(texts)) + 1024


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_window_columns(
    where: str, batch: Mapping[str, Sequence[Any]], output: Mapping[str, Any], owners: list[int]
) -> None:
    """The columns the runtime reads itself: no empty ``input_ids`` row; ``document_tokens`` a
    count per row; ``offset_mapping`` one (start, end) character pair per token, inside the text."""

    def record(row: int) -> Any:
        return batch["id"][owners[row]] if "id" in batch else owners[row]

    def column(name: str) -> Any:
        values = output.get(name)
        return [] if values is None else values

    for row, ids in enumerate(column("input_ids")):
        if ids is not None and hasattr(ids, "__len__") and len(ids) == 0:
            raise StepError(f"{where}: record {record(row)!r} has an empty input_ids row; every row needs tokens")
    for row, count in enumerate(column(DOCUMENT_TOKENS)):
        if not _is_int(count) or count < 0:
            raise StepError(
                f"{where}: {DOCUMENT_TOKENS} of record {record(row)!r} is {count!r}; it must be a count of tokens "
                "(0 or more)"
            )
    offsets = output.get(OFFSETS)
    if offsets is not None and not _offsets_within(offsets, batch, owners):
        _explain_offsets(where, batch, offsets, owners, record)


def offset_pairs(offsets: Sequence[Any]) -> tuple[Any, Any] | None:
    """An ``offset_mapping`` column as NumPy: (every row's (start, end) pairs end to end,
    tokens x 2, int64; each row's number of tokens). None when it is not plainly rows of integer
    pairs (the caller then looks row by row). Python per pair took longer than the tokenizer."""
    import itertools

    import numpy as np

    try:
        rows = [row.tolist() if hasattr(row, "tolist") else row for row in offsets]
        if any(isinstance(row, (str, bytes)) for row in rows):
            return None
        counts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        flat = list(itertools.chain.from_iterable(rows))
        pairs = np.array(flat) if flat else np.zeros((0, 2), dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return None
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind not in "iu":
        return None
    return pairs.astype(np.int64, copy=False), counts


def _offsets_within(offsets: Sequence[Any], batch: Mapping[str, Sequence[Any]], owners: list[int]) -> bool:
    """Whether every pair is (start, end) integers with 0 <= start <= end, within its record's text."""
    import numpy as np

    found = offset_pairs(offsets)
    if found is None:
        return False
    pairs, counts = found
    if len(pairs) == 0:
        return True
    ok = bool((pairs[:, 0] >= 0).all() and (pairs[:, 0] <= pairs[:, 1]).all())
    if ok and "id" in batch:
        limits = [_text_length(batch, record) for record in range(len(batch["id"]))]
        ok = bool((pairs[:, 1] <= np.repeat(np.asarray(limits, dtype=np.int64)[owners], counts)).all())
    return ok


def _explain_offsets(
    where: str, batch: Mapping[str, Sequence[Any]], offsets: Sequence[Any], owners: list[int], record: Any
) -> None:
    """Raise the StepError that names the first bad row and pair of ``offset_mapping``."""
    for row, pairs in enumerate(offsets):
        pairs = pairs.tolist() if hasattr(pairs, "tolist") else pairs  # numpy or torch rows
        limit = _text_length(batch, owners[row]) if "id" in batch else None
        if not isinstance(pairs, Sequence) or isinstance(pairs, str):
            raise StepError(f"{where}: {OFFSETS} of record {record(row)!r} is not a list of (start, end) pairs")
        for pair in pairs:
            ok = isinstance(pair, Sequence) and len(pair) == 2 and all(_is_int(v) for v in pair)
            if not ok or not 0 <= pair[0] <= pair[1] or (limit is not None and pair[1] > limit):
                raise StepError(
                    f"{where}: {OFFSETS} of record {record(row)!r} holds {pair!r}; each token needs a (start, end) "
                    f"pair of character offsets with 0 <= start <= end, within the record's text"
                    f"{f' (at most {limit})' if limit is not None else ''}"
                )


def evenly_spaced(count: int, keep: int) -> list[int]:
    """``keep`` of ``count`` window indices, spread over the document, first and last included."""
    if keep <= 0 or count <= keep:
        return list(range(count))
    if keep == 1:
        return [0]
    return sorted({round(i * (count - 1) / (keep - 1)) for i in range(keep)})


def to_rows(
    batch: Mapping[str, Sequence[Any]],
    encoded: Mapping[str, Sequence[Any]],
    windowing: Windowing,
    training: bool | Sequence[bool] = False,
    owner_column: str | None = None,
) -> dict[str, list]:
    """encode's output for ``batch`` -> one row per window kept, with ``id`` / ``label`` (when the
    batch has them) and :data:`WINDOW_COLUMNS`; the model's inputs pass through untouched.
    ``training``: for the batch, or per record (MAX_CHUNKS thins training records' windows only);
    ``owner_column``: also return, under that name, each row's record index in the batch."""
    rows = len(next(iter(encoded.values()))) if encoded else 0
    owners = [int(v) for v in encoded[MAPPING]] if MAPPING in encoded else list(range(rows))
    records = len(next(iter(batch.values()))) if batch else (owners[-1] + 1 if owners else 0)
    thinned = [bool(training)] * records if isinstance(training, bool) else [bool(t) for t in training]
    offsets = encoded.get(OFFSETS)
    spans = _spans(offsets) if offsets is not None else None
    given_lengths = encoded.get(DOCUMENT_TOKENS)
    ids = encoded.get("input_ids")
    content = [max(len(ids[i]) - windowing.special_tokens, 0) for i in range(rows)] if ids is not None else [0] * rows

    keep: list[int] = []
    facts: dict[str, list] = {name: [] for name in WINDOW_COLUMNS}
    start = 0
    for record in range(records):
        end = start
        while end < rows and owners[end] == record:
            end += 1
        count = end - start
        chosen = evenly_spaced(count, windowing.max_chunks) if thinned[record] else list(range(count))
        if given_lengths is not None:
            length = int(given_lengths[start])
        elif ids is not None and count > 1:  # the windows overlap by the stride
            length = content[start] + sum(max(content[i] - windowing.stride, 0) for i in range(start + 1, end))
        else:
            length = content[start] if ids is not None and count == 1 else -1
        previous = None
        for j in chosen:
            row = start + j
            overlap = windowing.stride if previous == j - 1 and j > 0 else 0
            keep.append(row)
            facts[WINDOW].append(j)
            span = spans[row] if spans is not None else (-1, -1)
            facts[WINDOW_START].append(span[0])
            facts[WINDOW_END].append(span[1])
            facts[DOCUMENT_TOKENS].append(length)
            facts[TOKENS_SEEN].append(max(content[row] - overlap, 0))
            previous = j
        start = end

    out: dict[str, list] = {}
    for key in ("id", "label"):
        if key in batch:
            values = batch[key]
            out[key] = [values[owners[row]] for row in keep]
    for column, values in encoded.items():
        if column not in ROW_FACTS:
            out[column] = list(values) if len(keep) == rows else [values[row] for row in keep]
    out.update(facts)
    if owner_column is not None:
        out[owner_column] = [owners[row] for row in keep]
    return out


def _spans(offsets: Sequence[Any]) -> list[tuple[int, int]]:
    """Each row's characters: from its first token to its last (special tokens, whose offsets
    are (0, 0), left out); (-1, -1) for a row with none."""
    import numpy as np

    found = offset_pairs(offsets)
    if found is None:
        return [_span(row) for row in offsets]
    pairs, counts = found
    spans = np.full((len(counts), 2), -1, dtype=np.int64)
    real = pairs[:, 1] > pairs[:, 0]
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    filled = counts > 0  # reduceat needs each row's first pair
    if len(pairs) and filled.any():
        lowest = np.minimum.reduceat(np.where(real, pairs[:, 0], np.iinfo(np.int64).max), firsts[filled])
        highest = np.maximum.reduceat(np.where(real, pairs[:, 1], -1), firsts[filled])
        seen = highest >= 0
        rows = np.flatnonzero(filled)[seen]
        spans[rows, 0], spans[rows, 1] = lowest[seen], highest[seen]
    return [(int(a), int(b)) for a, b in spans]


def _span(offsets: Sequence[Sequence[int]]) -> tuple[int, int]:
    """:func:`_spans` of one row, pair by pair (offsets that are not plain integer pairs)."""
    starts = [int(s) for s, e in offsets if e > s]
    if not starts:
        return -1, -1
    return min(starts), max(int(e) for s, e in offsets if e > s)


def document_starts(windows: Any) -> Any:
    """Row index of each document's first window (numpy), from the WINDOW column."""
    import numpy as np

    return np.flatnonzero(np.asarray(windows) == 0)


def combine(probabilities: Any, starts: Any, how: str = "mean") -> tuple[Any, Any]:
    """Windows' class probabilities (rows x classes) -> (one row per document, the index in its
    document of the window that decided it). ``starts``: each document's first row.

    ``mean``: the mean of the windows' probabilities; ``max``: each class's highest probability
    over the windows, scaled to sum to 1. The deciding window is the one that gives the predicted
    class its highest probability (the first of ties)."""
    import numpy as np

    probs = np.asarray(probabilities, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.diff(np.append(starts, len(probs)))
    if how == "max":
        scores = np.maximum.reduceat(probs, starts, axis=0)
        scores /= scores.sum(axis=1, keepdims=True)
    else:
        scores = np.add.reduceat(probs, starts, axis=0) / counts[:, None]
    predicted = scores.argmax(axis=1)
    owner = np.repeat(np.arange(len(starts)), counts)
    support = probs[np.arange(len(probs)), predicted[owner]]
    best = np.maximum.reduceat(support, starts)
    rows = np.flatnonzero(support == best[owner])
    _, first = np.unique(owner[rows], return_index=True)
    return scores.astype(np.float32), rows[first] - starts


def combine_labels(probabilities: Any, starts: Any, how: str = "mean") -> tuple[Any, Any]:
    """Multi-label :func:`combine`: windows' per-label probabilities (rows x labels, each its own
    sigmoid) -> (one row per document: each label's mean or max over the windows, and per
    document and label the index in the document of the window that gives the label its highest
    probability: each predicted label's evidence)."""
    import numpy as np

    probs = np.asarray(probabilities, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.diff(np.append(starts, len(probs)))
    highest = np.maximum.reduceat(probs, starts, axis=0)
    scores = highest if how == "max" else np.add.reduceat(probs, starts, axis=0) / counts[:, None]
    owner = np.repeat(np.arange(len(starts)), counts)
    rows = np.arange(len(probs))[:, None]
    # the first window (lowest row) that reaches each label's highest probability
    hits = np.where(probs == highest[owner], rows, len(probs))
    evidence = np.minimum.reduceat(hits, starts, axis=0) - starts[:, None]
    return scores.astype(np.float32), evidence.astype(np.int64)

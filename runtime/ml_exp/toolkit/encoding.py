"""The encode and the metrics the five functions can call in one line (through :mod:`ml_exp.toolkit`).

Importing this module is cheap: ``exp validate`` imports the experiment's module, which imports
this one, before any compute. torch, transformers, numpy and evaluate are imported inside the
functions that need them; pypdf inside ``pdf_pages`` / ``pdf_text`` (:mod:`ml_exp.toolkit.pdf`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from ml_exp.core.names import CHUNKS, DOCUMENT_STRATEGIES, HEAD_TAIL, TRUNCATE
from ml_exp.experiment.context import Context
from ml_exp.toolkit.collate import tokenizer_of

__all__ = [
    "STRATEGIES",
    "classification_metric_module",
    "classification_metrics",
    "effective_max_length",
    "special_tokens",
    "tokenizer_encode",
]

# Lengths above this are the "no limit" sentinels tokenizers use for model_max_length.
_NO_LIMIT = 1_000_000


def tokenizer_encode(
    batch: Mapping[str, Sequence[Any]],
    processor: Any,
    ctx: Context,
    text_fields: Sequence[str] | str = ("text",),
    max_length: int | None = None,
    strategy: str | None = None,
    stride: int | None = None,
) -> dict[str, list]:
    """Encode a batch of raw records with a tokenizer (for ``datasets.map(batched=True)``).

    The ``text_fields`` of each record are joined with ``". "`` (fields that are None or empty in
    a record are skipped), then tokenized without padding (the training collator pads each
    batch) into rows of at most ``max_length`` tokens (default: ``ctx.config.max_length``,
    lowered to the tokenizer's ``model_max_length`` when that is smaller). What a row holds of a
    longer document is ``strategy`` (default: ``ctx.config.document_strategy``):

    - ``truncate``: its first tokens, one row per record;
    - ``head_tail``: its first quarter and last three quarters of ``max_length``, one row per record;
    - ``chunks``: all of it, in windows of ``max_length`` tokens that overlap by ``stride``
      tokens (default: ``ctx.config.chunk_stride``): several rows per record, with
      ``overflow_to_sample_mapping`` (row -> record in the batch) and ``offset_mapping`` (where
      each token is in the joined text), as Hugging Face tokenizers return them.

    Every strategy also returns ``document_tokens``: the length of each record's whole text in
    tokens, from which preparation reports how much of the documents the model sees. Returns a
    dict of lists (``input_ids``, ``attention_mask``, ...). ``head_tail`` and ``chunks`` need a
    fast tokenizer (``processor.is_fast``), as most are. A multimodal processor (one with a
    ``tokenizer``, e.g. LayoutLMv3Processor) encodes the text with its tokenizer.

    Raises ValueError naming a text field that is not a column of the batch, or a strategy the
    processor cannot do.
    """
    fields = (text_fields,) if isinstance(text_fields, str) else tuple(text_fields)
    if not fields:
        raise ValueError(
            "tokenizer_encode: text_fields is empty; name at least one text field of the records (e.g. "
            "text_fields=('text',))"
        )
    missing = [f for f in fields if f not in batch]
    if missing:
        present = ", ".join(sorted(map(str, batch))) or "none"
        raise ValueError(
            f"tokenizer_encode: text field {missing[0]!r} is not in the records "
            f"(their fields: {present}); return it from reconcile() or pass text_fields=(...) naming existing fields"
        )
    config = getattr(ctx, "config", None) if ctx is not None else None
    if max_length is None:
        if config is None:
            raise ValueError("tokenizer_encode: pass max_length, or a ctx whose config has MAX_LENGTH")
        max_length = config.max_length
    strategy = strategy or getattr(config, "document_strategy", TRUNCATE)
    if strategy not in STRATEGIES:
        raise ValueError(
            f"tokenizer_encode: strategy {strategy!r} is not one of {', '.join(STRATEGIES)} (DOCUMENT_STRATEGY)"
        )
    processor = tokenizer_of(processor)  # a multimodal processor's tokenizer reads the text
    max_length = effective_max_length(processor, max_length)

    columns = [batch[f] for f in fields]
    sizes = {len(c) for c in columns}
    if len(sizes) > 1:
        raise ValueError(
            f"tokenizer_encode: the text fields {fields} have different lengths {sorted(sizes)}; pass a batch (dict of "
            "equal-length lists)"
        )
    texts = []
    for values in zip(*columns):
        parts = [str(v).strip() for v in values if v is not None and str(v).strip()]
        texts.append(". ".join(parts))

    fast = bool(getattr(processor, "is_fast", False))
    if strategy != TRUNCATE and not fast:
        raise ValueError(
            f"tokenizer_encode: DOCUMENT_STRATEGY = {strategy} needs a fast tokenizer (one that returns overflowing "
            f"tokens and offsets); {type(processor).__name__} is not: load it with use_fast=True, or use "
            "DOCUMENT_STRATEGY = truncate"
        )
    if strategy == HEAD_TAIL:
        return _head_tail(processor, texts, max_length)
    if strategy == CHUNKS:
        if stride is None:
            stride = int(getattr(config, "chunk_stride", 0))
        if not 0 <= stride < max_length - special_tokens(processor):
            raise ValueError(
                f"tokenizer_encode: stride {stride} must be at least 0 and smaller than the {max_length} tokens of a "
                "window less its special tokens (CHUNK_STRIDE < MAX_LENGTH)"
            )
        encoded = processor(
            texts,
            truncation=True,
            max_length=max_length,
            stride=stride,
            padding=False,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        out = {key: list(value) for key, value in dict(encoded).items()}
        out[DOCUMENT_TOKENS] = _chunked_lengths(out, processor, stride)
        return out
    if not fast:  # a slow tokenizer cannot say what it cut: only the rows
        encoded = processor(texts, truncation=True, max_length=max_length, padding=False)
        return {key: list(value) for key, value in dict(encoded).items()}
    backend = _backend_batch(processor, texts, max_length)
    if backend is not None:
        columns, encodings = backend
        lengths = _whole_lengths(encodings, len(texts))
        if lengths is not None:
            return {**columns, DOCUMENT_TOKENS: lengths}
    encoded = processor(texts, truncation=True, max_length=max_length, padding=False)
    lengths = _whole_lengths(getattr(encoded, "encodings", None), len(texts))
    if lengths is not None:
        return {**{key: list(value) for key, value in dict(encoded).items()}, DOCUMENT_TOKENS: lengths}
    # truncate: the overflow tells the whole length; only each record's first row is kept
    encoded = processor(texts, truncation=True, max_length=max_length, padding=False, return_overflowing_tokens=True)
    out = {key: list(value) for key, value in dict(encoded).items()}
    lengths = _chunked_lengths(out, processor, 0)
    owners = out.pop(MAPPING)
    first = [row for row, owner in enumerate(owners) if row == 0 or owners[row - 1] != owner]
    if len(first) != len(owners):
        out = {key: [values[row] for row in first] for key, values in out.items()}
        lengths = [lengths[row] for row in first]
    out[DOCUMENT_TOKENS] = lengths
    return out


STRATEGIES = DOCUMENT_STRATEGIES
MAPPING, DOCUMENT_TOKENS = "overflow_to_sample_mapping", "document_tokens"


def effective_max_length(processor: Any, max_length: int) -> int:
    """``max_length`` lowered to the processor's ``model_max_length`` when that is smaller: the
    longest row the model is given (what the coverage report measures documents against)."""
    limit = getattr(tokenizer_of(processor), "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_LIMIT:
        return min(int(max_length), limit)
    return int(max_length)


def special_tokens(processor: Any) -> int:
    """Tokens the processor adds to each row ([CLS], [SEP]...); 0 for one that cannot say."""
    try:
        return int(tokenizer_of(processor).num_special_tokens_to_add(pair=False))
    except Exception:  # noqa: BLE001 - a processor without the notion adds none
        return 0


# What a tokenizer class must take from transformers' fast tokenizer unchanged for _backend_batch.
_BACKEND_METHODS = ("__call__", "_encode_plus", "_convert_encoding", "set_truncation_and_padding")
# Per processor (weakly held) and max_length: whether its own call gave the backend path's columns.
_VERIFIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
VERIFY_TEXTS = 16  # the first texts of a processor's first batch, encoded both ways


def _backend_batch(processor: Any, texts: list[str], max_length: int) -> tuple[dict[str, list], list] | None:
    """``processor(texts, truncation=True, max_length=max_length, padding=False)``'s columns and
    encodings, without transformers' conversion of each encoding to a dict of its own (and
    without the character offsets truncate does not use). transformers itself sets the backend
    tokenizer up (truncation, padding, special tokens) in a call on one empty text, then the
    backend encodes the batch and each column is read as transformers reads it. None where the
    tokenizer encodes in a way of its own (its class or the object overrides one of
    ``_BACKEND_METHODS``), is not transformers' fast tokenizer, or gave other columns than its own
    call on the first texts it was given (checked once: a transformers that does more than this)."""
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # another transformers: its own path
        return None
    kind = type(processor)
    if (
        not texts
        or not isinstance(processor, TokenizersBackend)
        or any(getattr(kind, name, None) is not getattr(TokenizersBackend, name, None) for name in _BACKEND_METHODS)
        or any(name in vars(processor) for name in _BACKEND_METHODS)
    ):
        return None
    backend = getattr(processor, "_tokenizer", None)
    encode = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)
    if encode is None:
        return None
    processor([""], truncation=True, max_length=max_length, padding=False)  # the backend set up for this call
    encodings = encode(texts, is_pretokenized=False, add_special_tokens=True)
    columns = _columns(processor, encodings)
    if not _verified(processor, texts, max_length, columns, encodings):
        return None
    return columns, encodings


def _columns(processor: Any, encodings: list) -> dict[str, list]:
    """The columns transformers reads from a batch's encodings (``_convert_encoding``'s defaults)."""
    names = processor.model_input_names
    columns = {"input_ids": [e.ids for e in encodings]}
    if "token_type_ids" in names:
        columns["token_type_ids"] = [e.type_ids for e in encodings]
    if "attention_mask" in names:
        columns["attention_mask"] = [e.attention_mask for e in encodings]
    return columns


def _verified(processor: Any, texts: list[str], max_length: int, columns: dict[str, list], encodings: list) -> bool:
    """Whether the processor's own call gives these columns and lengths, on the first texts of
    the first batch it is given at this ``max_length`` (remembered for the processor)."""
    try:
        known = _VERIFIED.setdefault(processor, {})
    except TypeError:  # a processor that cannot be weakly held: never remembered, never taken
        return False
    if max_length not in known:
        sample = texts[:VERIFY_TEXTS]
        own = processor(sample, truncation=True, max_length=max_length, padding=False)
        known[max_length] = {key: list(value) for key, value in dict(own).items()} == {
            key: values[: len(sample)] for key, values in columns.items()
        } and _whole_lengths(getattr(own, "encodings", None), len(sample)) == _whole_lengths(
            encodings[: len(sample)], len(sample)
        )
    return known[max_length]


def _whole_lengths(encodings: Any, records: int) -> list[int] | None:
    """Each record's whole length in tokens, special tokens left out, from a fast tokenizer's
    own encodings: what truncation cut off is kept in each one's ``overflowing``, so nothing
    needs to be asked for or converted twice (long documents: a quarter of the time).
    None when the processor gave no such encodings."""
    if not isinstance(encodings, list) or len(encodings) != records:
        return None
    try:
        # list.count and len(): a third less time than summing each mask in Python
        return [
            sum(len(part) - part.special_tokens_mask.count(1) for part in (encoding, *encoding.overflowing))
            for encoding in encodings
        ]
    except (AttributeError, TypeError):  # not tokenizers' Encoding objects
        return None


def _chunked_lengths(encoded: Mapping[str, list], processor: Any, stride: int) -> list[int]:
    """Per row, its record's whole length in tokens: the windows' tokens less their special
    tokens, less the ``stride`` tokens each window repeats from the one before."""
    special = special_tokens(processor)
    owners = encoded[MAPPING]
    totals: dict[int, int] = {}
    for row, (owner, ids) in enumerate(zip(owners, encoded["input_ids"])):
        repeated = stride if row and owners[row - 1] == owner else 0
        totals[owner] = totals.get(owner, 0) + max(len(ids) - special - repeated, 0)
    return [totals[owner] for owner in owners]


def _head_tail(processor: Any, texts: list[str], max_length: int) -> dict[str, list]:
    """Sun et al. (2019), "How to Fine-Tune BERT for Text Classification?": the first quarter and
    the last three quarters of the row (their best cut: 128 + 382 of 512 tokens). The whole text
    is tokenized once, special tokens included; a row keeps the leading special tokens and the
    head, then the tail and the trailing special tokens."""
    encoded = processor(
        texts,
        truncation=False,
        padding=False,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        verbose=False,
    )
    special_masks = encoded.pop("special_tokens_mask")
    columns = {key: list(value) for key, value in dict(encoded).items()}
    out: dict[str, list] = {key: [] for key in columns}
    lengths = []
    for row, mask in enumerate(special_masks):
        lead = next((i for i, m in enumerate(mask) if not m), len(mask))
        trail = next((i for i, m in enumerate(reversed(mask)) if not m), 0)
        content = len(mask) - lead - trail
        lengths.append(content)
        room = max(max_length - lead - trail, 0)
        if content <= room:
            keep = slice(None)
            for key in columns:
                out[key].append(columns[key][row][keep])
            continue
        head = room // 4
        tail = room - head
        for key in columns:
            values = columns[key][row]
            out[key].append(values[: lead + head] + values[len(values) - trail - tail :])
    out[DOCUMENT_TOKENS] = lengths
    return out


_metric_lock = threading.Lock()
_metric: Any = None


def classification_metric_module() -> Any:
    """The shipped ``evaluate`` metric (``ml_exp/metrics/classification.py``), loaded once per
    process from its local path (offline; evaluate copies it under ``HF_MODULES_CACHE``)."""
    global _metric
    with _metric_lock:
        if _metric is None:
            import evaluate

            from ml_exp.toolkit.metrics import CLASSIFICATION

            # keep_in_memory: no arrow cache files, so concurrent processes never share a lock file
            _metric = evaluate.load(CLASSIFICATION, keep_in_memory=True)
        return _metric


def _as_class_ids(values: Any, what: str) -> list[int]:
    import numpy as np

    array = np.asarray(values)
    if array.ndim == 2:  # logits or probabilities: the predicted class
        array = array.argmax(axis=-1)
    if array.ndim != 1:
        raise ValueError(f"classification_metrics: {what} must be a 1-D list of class ids (got shape {array.shape})")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(
                f"classification_metrics: {what} must be class ids (whole numbers), got {array.dtype} values"
            )
        array = array.astype(np.int64)
    return [int(v) for v in array.tolist()]


def classification_metrics(predictions: Any, references: Any, labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and precision / recall / F1 with macro, micro and weighted averaging.

    ``predictions`` and ``references`` are class ids (lists or numpy arrays; a 2-D array of logits
    is reduced with argmax); ``labels`` are the class names (index = class id). Every class in
    ``labels`` counts, also one absent from both (its scores are 0, not a warning). Returns
    ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``, ``precision_micro``,
    ``recall_micro``, ``f1_micro``, ``precision_weighted``, ``recall_weighted``, ``f1_weighted``.

    Multi-label (PROBLEM_TYPE = multi_label: ``references`` are 0/1 rows, one column per label):
    :func:`ml_exp.toolkit.multilabel.multi_label_metrics` (micro/macro/samples precision, recall
    and F1, per-label precision/recall/F1, ``subset_accuracy`` and ``hamming_loss``), with
    ``accuracy`` = the subset accuracy, as scikit-learn's ``accuracy_score`` counts it.
    """
    import numpy as np

    if np.asarray(references).ndim == 2:
        from ml_exp.toolkit.multilabel import multi_label_metrics

        result = multi_label_metrics(predictions, references, labels)
        return {"accuracy": result["subset_accuracy"], **result}
    preds = _as_class_ids(predictions, "predictions")
    refs = _as_class_ids(references, "references")
    if len(preds) != len(refs):
        raise ValueError(
            f"classification_metrics: {len(preds)} predictions but {len(refs)} references; pass one prediction per "
            "reference"
        )
    if not refs:
        raise ValueError("classification_metrics: no predictions to score (empty predictions and references)")
    num_labels = len(labels)
    if num_labels < 1:
        raise ValueError("classification_metrics: labels is empty; pass the class names (index = class id)")
    out_of_range = sorted({v for v in preds + refs if not 0 <= v < num_labels})
    if out_of_range:
        raise ValueError(
            f"classification_metrics: class ids {out_of_range[:5]} are outside 0..{num_labels - 1} (there are "
            f"{num_labels} labels)"
        )
    result = classification_metric_module().compute(predictions=preds, references=refs, num_labels=num_labels)
    return {name: float(value) for name, value in result.items()}

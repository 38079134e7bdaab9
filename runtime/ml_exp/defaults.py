"""Ready defaults that the five functions of an experiment can call in one line.

    from ml_exp import defaults

    def encode(batch, processor, ctx):
        return defaults.tokenizer_encode(batch, processor, ctx, text_fields=("title", "text"))

    def compute_metrics(predictions, references, labels, ctx):
        return defaults.classification_metrics(predictions, references, labels)

Importing this module is cheap: ``exp validate`` imports the experiment's module, which imports
this one, before any compute. torch, transformers, numpy and evaluate are imported inside the
functions that need them; pypdf inside ``pdf_pages`` / ``pdf_text`` (:mod:`ml_exp.pdf`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ml_exp.context import Context
from ml_exp.pdf import pdf_pages, pdf_text

__all__ = ["tokenizer_encode", "classification_metrics", "classification_metric_module", "pdf_pages", "pdf_text"]

# Lengths above this are the "no limit" sentinels tokenizers use for model_max_length.
_NO_LIMIT = 1_000_000


def tokenizer_encode(
    batch: Mapping[str, Sequence[Any]],
    processor: Any,
    ctx: Context,
    text_fields: Sequence[str] | str = ("text",),
    max_length: int | None = None,
) -> dict[str, list]:
    """Encode a batch of raw records with a tokenizer (for ``datasets.map(batched=True)``).

    The ``text_fields`` of each record are joined with ``". "`` (fields that are None or empty in
    a record are skipped), then tokenized with truncation to ``max_length`` (default:
    ``ctx.config.max_length``, lowered to the tokenizer's ``model_max_length`` when that is
    smaller) and no padding: the training collator pads each batch. Returns a dict of lists
    (``input_ids``, ``attention_mask``, ...).

    Raises ValueError naming a text field that is not a column of the batch.
    """
    fields = (text_fields,) if isinstance(text_fields, str) else tuple(text_fields)
    if not fields:
        raise ValueError("tokenizer_encode: text_fields is empty; name at least one text field of the records (e.g. text_fields=('text',))")
    missing = [f for f in fields if f not in batch]
    if missing:
        present = ", ".join(sorted(map(str, batch))) or "none"
        raise ValueError(
            f"tokenizer_encode: text field {missing[0]!r} is not in the records "
            f"(their fields: {present}); return it from reconcile() or pass text_fields=(...) naming existing fields"
        )
    if max_length is None:
        if ctx is None or getattr(ctx, "config", None) is None:
            raise ValueError("tokenizer_encode: pass max_length, or a ctx whose config has MAX_LENGTH")
        max_length = ctx.config.max_length
    limit = getattr(processor, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_LIMIT:
        max_length = min(int(max_length), limit)

    columns = [batch[f] for f in fields]
    sizes = {len(c) for c in columns}
    if len(sizes) > 1:
        raise ValueError(f"tokenizer_encode: the text fields {fields} have different lengths {sorted(sizes)}; pass a batch (dict of equal-length lists)")
    texts = []
    for values in zip(*columns):
        parts = [str(v).strip() for v in values if v is not None and str(v).strip()]
        texts.append(". ".join(parts))

    encoded = processor(texts, truncation=True, max_length=int(max_length), padding=False)
    return {key: list(value) for key, value in dict(encoded).items()}


_metric_lock = threading.Lock()
_metric: Any = None


def classification_metric_module() -> Any:
    """The shipped ``evaluate`` metric (``ml_exp/metrics/classification.py``), loaded once per
    process from its local path (offline; evaluate copies it under ``HF_MODULES_CACHE``)."""
    global _metric
    with _metric_lock:
        if _metric is None:
            import evaluate

            from ml_exp.metrics import CLASSIFICATION

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
            raise ValueError(f"classification_metrics: {what} must be class ids (whole numbers), got {array.dtype} values")
        array = array.astype(np.int64)
    return [int(v) for v in array.tolist()]


def classification_metrics(predictions: Any, references: Any, labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and precision / recall / F1 with macro, micro and weighted averaging.

    ``predictions`` and ``references`` are class ids (lists or numpy arrays; a 2-D array of logits
    is reduced with argmax); ``labels`` are the class names (index = class id). Every class in
    ``labels`` counts, also one absent from both (its scores are 0, not a warning). Returns
    ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``, ``precision_micro``,
    ``recall_micro``, ``f1_micro``, ``precision_weighted``, ``recall_weighted``, ``f1_weighted``.
    """
    preds = _as_class_ids(predictions, "predictions")
    refs = _as_class_ids(references, "references")
    if len(preds) != len(refs):
        raise ValueError(f"classification_metrics: {len(preds)} predictions but {len(refs)} references; pass one prediction per reference")
    if not refs:
        raise ValueError("classification_metrics: no predictions to score (empty predictions and references)")
    num_labels = len(labels)
    if num_labels < 1:
        raise ValueError("classification_metrics: labels is empty; pass the class names (index = class id)")
    out_of_range = sorted({v for v in preds + refs if not 0 <= v < num_labels})
    if out_of_range:
        raise ValueError(f"classification_metrics: class ids {out_of_range[:5]} are outside 0..{num_labels - 1} (there are {num_labels} labels)")
    result = classification_metric_module().compute(predictions=preds, references=refs, num_labels=num_labels)
    return {name: float(value) for name, value in result.items()}

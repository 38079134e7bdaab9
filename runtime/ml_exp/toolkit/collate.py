"""Processors of any kind, and the batches made of their encoded rows.

A processor is a tokenizer, or a multimodal processor (LayoutLMv3Processor, ...) that holds one
as ``processor.tokenizer``: :func:`tokenizer_of` finds it wherever a check needs a tokenizer, and
:func:`load_saved_processor` reloads a saved one as what it was saved as.

:class:`PadCollator` makes a batch of rows whatever the tokenizer's own ``pad`` knows: every
per-token column (``input_ids``, ``attention_mask``, ``token_type_ids``, ``bbox``, per-token
``labels``, ...) is padded to the batch's longest row, with ``[0, 0, 0, 0]`` for a box; columns of
one fixed size (``pixel_values``) are stacked; ``label`` becomes ``labels``. Training, the
inference step and the predictor share it (an experiment's optional ``collate`` replaces it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ml_exp.core.errors import StepError

__all__ = ["PadCollator", "batch_maker", "load_saved_processor", "tokenizer_of"]

# Files that only a processor (not a bare tokenizer) saves.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "image_processor_config.json")
# The padding value of per-token columns other than input_ids / token_type_ids (default 0).
PAD_VALUES = {"labels": -100, "special_tokens_mask": 1}
LENGTH_COLUMN = "input_ids"


def tokenizer_of(processor: Any) -> Any:
    """The tokenizer of ``processor``: its ``tokenizer`` when it is a multimodal processor, else
    the processor itself (None stays None)."""
    inner = getattr(processor, "tokenizer", None)
    return inner if inner is not None and not isinstance(inner, (str, bytes)) else processor


def load_saved_processor(folder: Path) -> Any:
    """The processor saved in ``folder``, as what it was saved as: ``AutoProcessor`` when the
    folder holds a processor's or an image processor's config, else ``AutoTokenizer``."""
    from transformers import AutoProcessor, AutoTokenizer

    folder = Path(folder)
    if any((folder / name).is_file() for name in PROCESSOR_FILES):
        return AutoProcessor.from_pretrained(str(folder))
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError):
        return AutoProcessor.from_pretrained(str(folder))


class CollateError(StepError):
    """Rows that cannot make one batch (the message names the column and what to do)."""


class PadCollator:
    """Rows (dicts of lists or numbers) -> a batch of tensors, padding per-token columns.

    A column is per-token when, in every row, its value has as many items as the row's
    ``input_ids``; it is padded to the longest row on the tokenizer's ``padding_side`` with the
    tokenizer's pad id (``input_ids``), pad type id (``token_type_ids``), -100 (``labels``), 1
    (``special_tokens_mask``) or zeros of the item's shape (``attention_mask``, ``bbox``, ...).
    Any other column must have one shape in every row and is stacked.
    """

    def __init__(self, tokenizer: Any = None, pad_to_multiple_of: int | None = None):
        tokenizer = tokenizer_of(tokenizer)
        self.pad_id = getattr(tokenizer, "pad_token_id", None)
        self.pad_type_id = int(getattr(tokenizer, "pad_token_type_id", 0) or 0)
        self.left = getattr(tokenizer, "padding_side", "right") == "left"
        self.multiple = pad_to_multiple_of

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import numpy as np
        import torch

        if not rows:
            return {}
        rows = [{k: _plain(v) for k, v in row.items()} for row in rows]
        lengths = [len(row[LENGTH_COLUMN]) for row in rows] if LENGTH_COLUMN in rows[0] else None
        longest = max(lengths) if lengths else 0
        if self.multiple and longest % self.multiple:
            longest += self.multiple - longest % self.multiple
        batch: dict[str, Any] = {}
        for column in rows[0]:
            values = [row[column] for row in rows]
            name = "labels" if column in ("label", "label_ids") else column
            if lengths is not None and _per_token(values, lengths):
                if any(n != longest for n in lengths):
                    values = self._pad(column, values, lengths, longest)
            try:
                array = np.asarray(values)
                if array.dtype == object:
                    raise ValueError("rows of different shapes")
            except ValueError as exc:
                raise CollateError(
                    f"column {column!r} has values of different shapes in one batch and is not per token (as long as "
                    f"input_ids), so it cannot be padded or stacked ({exc}); give it one shape in encode(), or define "
                    "collate(rows, processor, ctx) in the experiment to batch it"
                ) from None
            tensor = torch.from_numpy(array) if array.dtype != np.float64 else torch.from_numpy(array.astype("float32"))
            batch[name] = tensor
        return batch

    def _pad(self, column: str, values: list, lengths: list[int], longest: int) -> list:
        if column == LENGTH_COLUMN:
            if self.pad_id is None:
                raise CollateError(
                    "the rows have different lengths and no tokenizer with a pad token was saved with the model to "
                    "pad them; save the processor in the model folder or pad in encode()"
                )
            fill: Any = self.pad_id
        elif column == "token_type_ids":
            fill = self.pad_type_id
        else:
            first = next((v[0] for v in values if len(v)), 0)
            fill = PAD_VALUES.get(column, 0)
            if isinstance(first, (list, tuple)):  # e.g. a box per token: [0, 0, 0, 0]
                fill = _zeros_like(first)
        padded = []
        for value, n in zip(values, lengths):
            pad = [fill] * (longest - n)
            padded.append(pad + list(value) if self.left else list(value) + pad)
        return padded


def _per_token(values: list, lengths: list[int]) -> bool:
    return all(isinstance(v, (list, tuple)) and len(v) == n for v, n in zip(values, lengths))


def _plain(value: Any) -> Any:
    """Tensors and arrays as (nested) lists, so that rows pad alike whatever the dataset format."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, (int, float)) else value


def _zeros_like(item: Any) -> Any:
    return [_zeros_like(v) for v in item] if isinstance(item, (list, tuple)) else 0


class ExperimentCollate:
    """The experiment's own ``collate(rows, processor, ctx)``, as a collator; its failures name it."""

    def __init__(self, function: Any, processor: Any, ctx: Any):
        self.function, self.processor, self.ctx = function, processor, ctx

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        try:
            batch = self.function(list(rows), self.processor, self.ctx)
        except Exception as exc:
            raise CollateError(f"collate raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(batch, Mapping):
            raise CollateError(
                f"collate returned a {type(batch).__name__}; return a dict of tensors (input name -> tensor)"
            )
        return dict(batch)


def batch_maker(udfs: Any, processor: Any, ctx: Any) -> Any:
    """How rows become batches in training and scoring: the experiment's ``collate`` when it
    defines one, else :class:`PadCollator` with the processor's tokenizer."""
    function = getattr(udfs, "collate", None)
    if function is not None:
        return ExperimentCollate(function, processor, ctx)
    return PadCollator(tokenizer_of(processor))

"""The forward pass of a trained classifier, shared by the inference step and the predictor
(:mod:`ml_exp.serving.predictor`): one way to load the model and its tokenizer, to pick the
model's inputs among the encoded columns, to pad a batch and to turn logits into scores, so that
``exp predict`` / ``exp serve`` / an endpoint give exactly the inference step's predictions.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ml_exp.core.errors import StepError
from ml_exp.storage.layout import PROCESSOR

# Encoded columns that are not model inputs.
NOT_INPUTS = frozenset({"id", "label", "labels", "page"})
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")


def saved_processor(data_dir: Path) -> Any:
    """The processor preparation encoded the data with (None when it could not be saved)."""
    folder = data_dir / PROCESSOR
    if not folder.is_dir():
        return None
    from ml_exp.toolkit.collate import load_saved_processor

    return load_saved_processor(folder)


def load_classifier(trained: Path, labels: list[str], model_name: str) -> tuple[Any, Any]:
    """The model saved in ``trained`` (checked against ``labels``) and the tokenizer saved with
    it (a processor's own tokenizer; None when there is none: inputs must then be of equal
    length, as in training)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification

    from ml_exp.toolkit.collate import PROCESSOR_FILES, load_saved_processor, tokenizer_of

    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(trained))
    except (OSError, ValueError, SafetensorError) as exc:  # SafetensorError: a truncated model.safetensors
        raise StepError(
            f"the trained model of {model_name!r} ({trained}) cannot be loaded: {exc}; rebuild it in a new run with "
            "`exp run`."
        ) from None
    num_labels = getattr(model.config, "num_labels", len(labels))
    if num_labels != len(labels):
        raise StepError(f"model {model_name!r} has {num_labels} outputs but there are {len(labels)} labels {labels}.")
    tokenizer = None
    if any((trained / f).is_file() for f in TOKENIZER_FILES + PROCESSOR_FILES):
        try:
            tokenizer = tokenizer_of(load_saved_processor(trained))
        except (OSError, ValueError) as exc:
            raise StepError(
                f"the processor saved with model {model_name!r} ({trained}) cannot be loaded: {exc}; rebuild it in a "
                "new run with `exp run`."
            ) from None
        if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def model_inputs(model: Any, columns: Iterable[str]) -> list[str]:
    """The encoded columns the model's forward() takes (all of them when it takes ``**kwargs``)."""
    parameters = inspect.signature(model.forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return [c for c in columns if c not in NOT_INPUTS and (takes_any or c in parameters)]


def accepted_inputs(model: Any) -> list[str]:
    return sorted(inspect.signature(model.forward).parameters)


class Scorer:
    """Encoded batches -> softmax scores (multi-label: a sigmoid per label; numpy, one row per
    record), on the GPU when there is one.

    Batches are made as in training: by the experiment's ``collate`` when given (a callable
    ``rows -> tensors``), else by :class:`~ml_exp.toolkit.collate.PadCollator` with ``tokenizer``."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        inputs: list[str],
        num_labels: int,
        model_name: str,
        mixed_precision: str = "no",
        collate: Any = None,
    ):
        import torch

        from ml_exp.toolkit.collate import PadCollator
        from ml_exp.toolkit.decisions import is_multi_label_model

        self.inputs, self.num_labels, self.model_name = inputs, num_labels, model_name
        self.multi_label = is_multi_label_model(model)  # a sigmoid per label, not a softmax
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.autocast: Any = nullcontext()
        if self.device.type == "cuda" and mixed_precision in ("fp16", "bf16"):
            self.autocast = torch.autocast("cuda", dtype=torch.float16 if mixed_precision == "fp16" else torch.bfloat16)
        # without a tokenizer (or its pad token), inputs must be of equal length (as in training)
        self.collator = collate or PadCollator(tokenizer)

    def tensors(self, batch: Mapping[str, list]) -> dict:
        from ml_exp.toolkit.collate import CollateError

        rows = [dict(zip(self.inputs, values)) for values in zip(*(batch[c] for c in self.inputs))]
        try:
            features = dict(self.collator(rows))
        except CollateError as exc:
            raise StepError(f"the records of model {self.model_name!r}: {exc}.") from None
        return {name: features[name] for name in self.inputs if name in features}

    def scores(self, batch: Mapping[str, list]) -> Any:
        """Softmax scores (float32 numpy array, records x labels) of one encoded batch; in a
        multi-label model, each label's sigmoid."""
        import torch

        features = self.tensors(batch)
        with torch.inference_mode(), self.autocast:
            logits = self.model(**{name: t.to(self.device) for name, t in features.items()}).logits
        if logits.shape[-1] != self.num_labels:
            raise StepError(
                f"model {self.model_name!r} returned {logits.shape[-1]} scores per record, expected {self.num_labels}."
            )
        logits = logits.float()
        return (logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)).cpu().numpy()


# On a GPU a batch of short rows costs about what one of long rows does: inference then fills each
# batch up to the tokens of the block's first (longest) batch, at most this many times its rows.
TOKEN_BUDGET_ROWS = 8


def length_batches(lengths: Sequence[int], batch_size: int, by_tokens: bool = False) -> list[tuple[int, int]]:
    """(start, end) of each batch over rows sorted longest first: ``batch_size`` rows each, or
    ``by_tokens``, as many rows as fit the padded tokens of the first batch (``batch_size`` x the
    longest row), up to TOKEN_BUDGET_ROWS x ``batch_size``: no batch then needs more memory than the
    first (attention grows with the square of the length, the rows' count only linearly)."""
    count = len(lengths)
    if not by_tokens:
        return [(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    budget = batch_size * max(int(lengths[0]), 1) if count else 0
    spans, start = [], 0
    while start < count:
        rows = min(max(batch_size, budget // max(int(lengths[start]), 1)), TOKEN_BUDGET_ROWS * batch_size)
        spans.append((start, min(start + rows, count)))
        start += rows
    return spans

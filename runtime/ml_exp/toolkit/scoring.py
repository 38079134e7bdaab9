"""The forward pass of a trained classifier, shared by the inference step and the predictor
(:mod:`ml_exp.serving.predictor`): one way to load the model and its tokenizer, to pick the
model's inputs among the encoded columns, to pad a batch and to turn logits into scores, so that
``exp predict`` / ``exp serve`` / an endpoint give exactly the inference step's predictions.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ml_exp.core.errors import StepError
from ml_exp.storage.layout import PROCESSOR

# Encoded columns that are not model inputs.
NOT_INPUTS = frozenset({"id", "label", "labels"})
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")


def saved_processor(data_dir: Path) -> Any:
    """The processor preparation encoded the data with (None when it could not be saved)."""
    folder = data_dir / PROCESSOR
    if not folder.is_dir():
        return None
    from transformers import AutoProcessor, AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError):
        return AutoProcessor.from_pretrained(str(folder))


def load_classifier(trained: Path, labels: list[str], model_name: str) -> tuple[Any, Any]:
    """The model saved in ``trained`` (checked against ``labels``) and the tokenizer saved with
    it (None when there is none: inputs must then be of equal length, as in training)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

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
    if any((trained / f).is_file() for f in TOKENIZER_FILES):
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(trained))
        except (OSError, ValueError) as exc:
            raise StepError(
                f"the processor saved with model {model_name!r} ({trained}) cannot be loaded: {exc}; rebuild it in a "
                "new run with `exp run`."
            ) from None
        if tokenizer.pad_token is None and getattr(tokenizer, "eos_token", None) is not None:
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
    """Encoded batches -> softmax scores (numpy, one row per record), on the GPU when there is one."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        inputs: list[str],
        num_labels: int,
        model_name: str,
        mixed_precision: str = "no",
    ):
        import torch

        self.inputs, self.num_labels, self.model_name = inputs, num_labels, model_name
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.autocast: Any = nullcontext()
        if self.device.type == "cuda" and mixed_precision in ("fp16", "bf16"):
            self.autocast = torch.autocast("cuda", dtype=torch.float16 if mixed_precision == "fp16" else torch.bfloat16)
        self.collator = None
        if tokenizer is not None and tokenizer.pad_token is not None:  # else: inputs of equal length (as in training)
            from transformers import DataCollatorWithPadding

            self.collator = DataCollatorWithPadding(tokenizer, return_tensors="pt")

    def tensors(self, batch: Mapping[str, list]) -> dict:
        import torch

        if self.collator is not None:
            rows = [dict(zip(self.inputs, values)) for values in zip(*(batch[c] for c in self.inputs))]
            return dict(self.collator(rows))
        try:
            return {c: torch.tensor(batch[c]) for c in self.inputs}
        except (ValueError, TypeError) as exc:
            raise StepError(
                f"the records of model {self.model_name!r} have inputs of different lengths and no tokenizer "
                "was saved with the model to pad them; save the processor in the model folder "
                f"or pad in encode() ({exc})."
            ) from None

    def scores(self, batch: Mapping[str, list]) -> Any:
        """Softmax scores (float32 numpy array, records x labels) of one encoded batch."""
        import torch

        features = self.tensors(batch)
        with torch.inference_mode(), self.autocast:
            logits = self.model(**{name: t.to(self.device) for name, t in features.items()}).logits
        if logits.shape[-1] != self.num_labels:
            raise StepError(
                f"model {self.model_name!r} returned {logits.shape[-1]} scores per record, expected {self.num_labels}."
            )
        return logits.float().softmax(dim=-1).cpu().numpy()

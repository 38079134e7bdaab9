"""The five functions of experiment {{ cookiecutter.experiment_name }} (its README says what it tries).

ml-exp calls them; `exp validate` checks them before any compute and names every function that
is still a stub. Each receives ``ctx``: ``ctx.config`` (every setting of settings.ini, typed),
``ctx.log`` (a logger) and ``ctx.run`` (the run's storage, once a run exists). The steps
switched on in settings.ini call them:

    step            calls
    reconciliation  reconcile
    preparation     load_processor, encode
    tuning          load_model, compute_metrics (each trial is a short training)
    training        load_model, compute_metrics (evaluation after each epoch picks the best checkpoint)
    inference       compute_metrics (on the test split; the trained model comes from the run)

Keep the signatures; replace each body.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def reconcile(ctx) -> Iterable[dict[str, Any]]:
    """Yield (or return) the labelled raw records of the data set.

    Each record is a dict with a unique ``"id"``, the raw content fields your ``encode`` reads
    (e.g. ``"text"``) and a non-empty ``"label"`` (with PROBLEM_TYPE = multi_label, a list of
    labels, e.g. ``["contract", "policy"]``, or ``[]`` for none). An optional ``"split"`` (train / validation /
    test) pins a record to a split. Stream them: ml-exp writes them to the run's storage in shards.
    Documents kept as PDFs: ``ml_exp.toolkit.pdf_text(path)`` is their text (pages joined).
    """
    raise NotImplementedError("reconcile: yield the labelled raw records")


def load_processor(model_name: str, ctx):
    """Return the tokenizer or processor for ``model_name`` (one of MODEL_NAMES),
    e.g. ``transformers.AutoTokenizer.from_pretrained(model_name)``."""
    raise NotImplementedError("load_processor: return the tokenizer for model_name")


def encode(batch: dict[str, list], processor, ctx) -> dict[str, list]:
    """Turn a batch of raw records (a dict of columns, each a list) into model inputs (a dict of
    equally long lists, e.g. ``input_ids`` and ``attention_mask``). Used with
    ``datasets.map(batched=True)``; rows of at most ``ctx.config.max_length`` tokens.

    A long record may become several rows (windows): then also return
    ``overflow_to_sample_mapping`` (row -> index of its record in the batch; non-decreasing, every
    record at least one row) and, optionally, ``offset_mapping`` (each token's character span in
    the record's text: the evidence of a prediction) and ``document_tokens`` (each row's record's
    whole length in tokens: preparation's coverage report). ``ml_exp.toolkit.tokenizer_encode``
    does all of this for DOCUMENT_STRATEGY = chunks and head_tail."""
    raise NotImplementedError("encode: return model inputs for the batch")


def load_model(model_name: str, labels: list[str], ctx):
    """Return the model for ``model_name`` with ``len(labels)`` outputs and ``id2label`` /
    ``label2id`` set, e.g. ``AutoModelForSequenceClassification.from_pretrained(...)``."""
    raise NotImplementedError("load_model: return the classification model")


def compute_metrics(predictions: list[int], references: list[int], labels: list[str], ctx) -> dict[str, float]:
    """Return metric name -> value from predicted and true label indices. Include the metric
    named by METRIC_FOR_BEST_MODEL (default f1_macro). With PROBLEM_TYPE = multi_label each
    prediction and reference is a 0/1 row (one column per label);
    ``ml_exp.toolkit.classification_metrics`` handles both."""
    raise NotImplementedError("compute_metrics: return a dict of metric values")

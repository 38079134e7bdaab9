"""The five functions of experiment {{ cookiecutter.experiment_name }} (its README says what it tries).

ml-exp calls them; `exp validate` checks them before any compute. Each receives ``ctx``:
``ctx.config`` (every setting of settings.ini, typed), ``ctx.log`` (a logger) and ``ctx.run``
(the run's storage, once a run exists). The steps switched on in settings.ini call them:

    step            calls
    reconciliation  reconcile
    preparation     load_processor, encode
    tuning          load_model, compute_metrics (each trial is a short training)
    training        load_model, compute_metrics (evaluation after each epoch picks the best checkpoint)
    inference       compute_metrics (on the test split; the trained model comes from the run)

This is the document-types demo: synthetic contracts, audit reports, policies and invoices,
classified by a tiny BERT built on the spot (``tiny-bert``; both come from demo_documents.py).
It is a long-document demo: each document is ~2,000 tokens of shared filler with a short passage
that decides its type at the start, in the middle or at the end; settings.ini reads every window
of 64 tokens (DOCUMENT_STRATEGY = chunks), and each prediction names the window that decided it.
It runs offline on a laptop. Replace the bodies with your own data and models; keep the signatures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ml_exp.toolkit import classification_metrics, tokenizer_encode

import demo_documents

DOCUMENTS_PER_LABEL = 100


def reconcile(ctx) -> Iterator[dict[str, Any]]:
    """Yield the labelled raw records: ``{"id": ..., <content fields>, "label": ...}``.

    Real experiments read the team's sources here (S3, a database, a share) and clean them.
    """
    records = demo_documents.documents(DOCUMENTS_PER_LABEL, seed=ctx.config.seed)
    if ctx.config.problem_type == "multi_label":  # some documents bind two types: a list of labels
        records = demo_documents.bound_documents(records, seed=ctx.config.seed)
    yield from records


def load_processor(model_name: str, ctx):
    """Return the tokenizer (or processor) for ``model_name``: built here for a tiny BERT,
    otherwise loaded from the Hugging Face Hub (or a local folder)."""
    if model_name in demo_documents.TINY_BERTS:
        return demo_documents.tiny_bert_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_name)


def encode(batch: dict[str, list], processor, ctx) -> dict[str, list]:
    """Turn a batch of raw records (columns of lists) into model inputs (title, then text).

    DOCUMENT_STRATEGY = chunks (this demo's): a record becomes several rows, windows of
    MAX_LENGTH tokens; ``tokenizer_encode`` then also returns ``overflow_to_sample_mapping`` (row ->
    index of its record in the batch; non-decreasing, every record at least one row),
    ``offset_mapping`` (each token's character span in the joined text: the evidence of a
    prediction) and ``document_tokens`` (each record's whole length in tokens, for preparation's
    coverage report). Your own encode may return the same columns; head_tail and truncate return
    one row per record."""
    return tokenizer_encode(batch, processor, ctx, text_fields=("title", "text"))


def load_model(model_name: str, labels: list[str], ctx):
    """Return the model for ``model_name`` with ``len(labels)`` outputs: a new tiny BERT, or a
    pretrained model from the Hugging Face Hub (or a local folder) with a new classification head."""
    if model_name in demo_documents.TINY_BERTS:
        return demo_documents.tiny_bert(model_name, labels, seed=ctx.config.seed, max_length=ctx.config.max_length)
    from transformers import AutoModelForSequenceClassification

    id2label = dict(enumerate(labels))
    label2id = {label: index for index, label in id2label.items()}
    head = {"num_labels": len(labels), "id2label": id2label, "label2id": label2id}
    return AutoModelForSequenceClassification.from_pretrained(model_name, **head)


def compute_metrics(predictions: list, references: list, labels: list[str], ctx) -> dict[str, float]:
    """Metric name -> value: accuracy and macro/micro/weighted precision, recall and F1.

    ``predictions`` and ``references`` are class ids (index into ``labels``), one per document;
    with PROBLEM_TYPE = multi_label, a 0/1 row per document (one column per label), and
    classification_metrics gives micro/macro/samples F1, per-label precision/recall/F1, subset
    accuracy (also as ``accuracy``) and Hamming loss."""
    return classification_metrics(predictions, references, labels)

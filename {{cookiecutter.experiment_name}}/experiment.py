"""The five functions of experiment {{ cookiecutter.experiment_name }} (its README says what it tries).

ml-exp calls them; `exp validate` checks them before any compute. Each receives ``ctx``:
``ctx.config`` (every setting of settings.ini, typed), ``ctx.log`` (a logger) and ``ctx.run``
(the run's storage, once a run exists).

This is the document-types demo: synthetic contracts, audit reports, policies and invoices,
classified by a tiny BERT built on the spot (``tiny-bert``). It runs offline on a laptop.
Replace the bodies with your own data and models; keep the signatures.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import demo_documents
from ml_exp.defaults import classification_metrics, tokenizer_encode

DOCUMENTS_PER_LABEL = 60
# Models built on the spot (no download): name -> BERT sizes. Any other name is loaded from the
# Hugging Face Hub (or a local folder) with the Auto classes.
TINY_BERTS = {
    "tiny-bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "tiny-bert-wide": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
}


def reconcile(ctx) -> Iterator[dict[str, Any]]:
    """Yield the labelled raw records: ``{"id": ..., <content fields>, "label": ...}``.

    Real experiments read the team's sources here (S3, a database, a share) and clean them.
    """
    yield from demo_documents.documents(DOCUMENTS_PER_LABEL, seed=ctx.config.seed)


def load_processor(model_name: str, ctx):
    """Return the tokenizer (or processor) for ``model_name``."""
    if model_name in TINY_BERTS:
        return _tiny_bert_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_name)


def encode(batch: dict[str, list], processor, ctx) -> dict[str, list]:
    """Turn a batch of raw records (columns of lists) into model inputs (title, then text)."""
    return tokenizer_encode(batch, processor, ctx, text_fields=("title", "text"))


def load_model(model_name: str, labels: list[str], ctx):
    """Return the model for ``model_name`` with ``len(labels)`` outputs."""
    id2label = dict(enumerate(labels))
    label2id = {label: index for index, label in id2label.items()}
    if model_name in TINY_BERTS:
        import torch
        from transformers import BertConfig, BertForSequenceClassification

        torch.manual_seed(ctx.config.seed)
        config = BertConfig(
            vocab_size=_tiny_bert_tokenizer().vocab_size,
            **TINY_BERTS[model_name],
            max_position_embeddings=max(128, ctx.config.max_length),
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
        )
        return BertForSequenceClassification(config)
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        model_name, num_labels=len(labels), id2label=id2label, label2id=label2id
    )


def compute_metrics(predictions: list[int], references: list[int], labels: list[str], ctx) -> dict[str, float]:
    """Metric name -> value: accuracy and macro/micro/weighted precision, recall and F1."""
    return classification_metrics(predictions, references, labels)


def _tiny_bert_tokenizer():
    """A WordPiece tokenizer over the demo's own words: built in milliseconds, the same every time."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({word for text in demo_documents.vocabulary() for word in re.findall(r"\w+|[^\w\s]", text.lower())})
    tokenizer = Tokenizer(models.WordPiece(vocab={token: i for i, token in enumerate(special + words)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(token, special.index(token)) for token in ("[CLS]", "[SEP]")],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )

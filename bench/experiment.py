"""The bench experiment's five functions (copied into a baked experiment by bench/run.py).

What it reconciles is chosen by environment variables that bench/run.py sets per run:
BENCH_RECORDS = docs | small | long (bench/long_documents.py) | buried (bench/buried_documents.py), BENCH_N (records), BENCH_WORDS (words per document: 120, or 10-505 log-uniform),
BENCH_SPLITS (e.g. ``train:64,validation:32,test:2000``: pinned splits).
MODEL_NAMES picks the models (minilm, tiny-bert), as for any experiment.
"""

from __future__ import annotations

import os

import bench_models
from ml_exp.toolkit import classification_metrics, tokenizer_encode


def reconcile(ctx):
    if os.environ.get("BENCH_RECORDS", "docs") == "small":
        yield from bench_models.small_records(int(os.environ["BENCH_N"]))
        return
    if os.environ.get("BENCH_RECORDS") == "long":  # BENCH_N documents per type
        import long_documents

        yield from long_documents.documents(int(os.environ["BENCH_N"]), int(os.environ["BENCH_WORDS"]), ctx.config.seed)
        return
    if os.environ.get("BENCH_RECORDS") == "buried":  # BENCH_N documents per licence family
        import buried_documents

        # BENCH_BURIED_FILLER_WORDS = 0: the passages alone (how well the passages can be told apart)
        filler = int(os.environ.get("BENCH_BURIED_FILLER_WORDS", buried_documents.FILLER_WORDS))
        yield from buried_documents.documents(int(os.environ["BENCH_N"]), ctx.config.seed, filler)
        return
    splits = None
    if os.environ.get("BENCH_SPLITS"):
        splits = {name: int(count) for name, count in (part.split(":") for part in os.environ["BENCH_SPLITS"].split(","))}
    yield from bench_models.documents(int(os.environ.get("BENCH_N", "0")), bench_models.parse_words(os.environ.get("BENCH_WORDS", "120")), ctx.config.seed, splits)


def load_processor(model_name, ctx):
    return bench_models.load_tokenizer(model_name)


def encode(batch, processor, ctx):
    return tokenizer_encode(batch, processor, ctx, text_fields=[f for f in ("title", "text") if f in batch])  # long documents have no title


def load_model(model_name, labels, ctx):
    return bench_models.build_model(model_name, labels, ctx.config.seed)


def compute_metrics(predictions, references, labels, ctx):
    return classification_metrics(predictions, references, labels)

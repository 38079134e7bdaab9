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

This is the layout demo: synthetic scanned pages (contracts, audit reports, policies) without a
text layer (``text`` is empty), classified from their words, the words' boxes (0-1000) and the page
image by a tiny LayoutLMv3 built on the spot (``tiny-layoutlmv3``; pages and model come from
demo_pages.py). It runs offline on a laptop. For a real checkpoint: ``AutoProcessor.from_pretrained(
"microsoft/layoutlmv3-base", apply_ocr=False)`` and ``AutoModelForSequenceClassification``; for
real scans, ``ml_exp.toolkit.pdf_page_images`` and ``ocr_words`` in reconcile. Keep the signatures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ml_exp.toolkit import classification_metrics, layout_encode

import demo_pages

PAGES_PER_LABEL = 30


def reconcile(ctx) -> Iterator[dict[str, Any]]:
    """Yield the labelled raw records: ``{"id", "text", "words", "boxes", "image", "label"}``,
    one per page, the image as PNG bytes (a path works too)."""
    yield from demo_pages.pages(PAGES_PER_LABEL, seed=ctx.config.seed)


def load_processor(model_name: str, ctx) -> Any:
    """The processor for ``model_name``: a tokenizer and an image processor (saved with the run)."""
    return demo_pages.tiny_processor()


def encode(batch: dict[str, list], processor: Any, ctx) -> dict[str, list]:
    """Words and boxes through the processor's tokenizer (each token gets its word's box), the
    image through its image processor (``pixel_values``); the training collator pads ``bbox``."""
    return layout_encode(batch, processor, ctx, words_field="words", boxes_field="boxes", image_field="image")


def load_model(model_name: str, labels: list[str], ctx) -> Any:
    """The model for ``model_name`` with ``len(labels)`` outputs."""
    return demo_pages.tiny_layoutlmv3(labels, seed=ctx.config.seed, max_length=ctx.config.max_length)


def compute_metrics(predictions: list, references: list, labels: list[str], ctx) -> dict[str, float]:
    """Metric name -> value; METRIC_FOR_BEST_MODEL must be one of them. Class ids per document, or
    with PROBLEM_TYPE = multi_label a 0/1 row per document (classification_metrics takes both)."""
    return classification_metrics(predictions, references, labels)

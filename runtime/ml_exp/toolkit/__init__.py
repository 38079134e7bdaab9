"""The toolkit: what the five functions can call in one line, and the document and model helpers
that the steps and serving share (below both, so that neither borrows from the other).

    from ml_exp import toolkit

    def encode(batch, processor, ctx):
        return toolkit.tokenizer_encode(batch, processor, ctx, text_fields=("title", "text"))

    def compute_metrics(predictions, references, labels, ctx):
        return toolkit.classification_metrics(predictions, references, labels)

- :mod:`.encoding`: ``tokenizer_encode`` (the document strategies), ``classification_metrics``;
- :mod:`.multilabel`: ``multi_label_metrics`` for multi-hot predictions (several labels a document),
  ``tune_label_thresholds`` (a probability threshold per label, by a ``LABEL_THRESHOLDS`` rule);
- :mod:`.calibration`: ``fit_temperature`` / ``apply_temperature`` and ``expected_calibration_error``;
- :mod:`.review`: ``review_threshold`` / ``needs_review`` (review routing at a target precision);
- :mod:`.layout`: ``layout_encode`` for layout models (words, boxes, page image);
- :mod:`.collate`: processors of any kind (``tokenizer_of``) and the padding collator;
- :mod:`.pdf`: ``pdf_pages`` / ``pdf_text`` for ``reconcile``;
- :mod:`.scans`: ``pdf_page_images`` (pypdfium2) and ``ocr_words`` (Tesseract) for scanned pages;
- :mod:`.documents`: windows of long documents and their combination per document;
- :mod:`.scoring`: a trained classifier scoring encoded rows; :mod:`.metrics`: the metric script.

Importing it is cheap (``exp validate`` imports the experiment's module, which imports this one):
torch, transformers, numpy, evaluate and pypdf are imported inside the functions that need them.
"""

from ml_exp.toolkit.calibration import apply_temperature, expected_calibration_error, fit_temperature
from ml_exp.toolkit.encoding import STRATEGIES, classification_metric_module, classification_metrics, tokenizer_encode
from ml_exp.toolkit.layout import layout_encode, open_image
from ml_exp.toolkit.multilabel import multi_label_metrics, parse_threshold_rule, tune_label_thresholds
from ml_exp.toolkit.pdf import pdf_pages, pdf_text
from ml_exp.toolkit.review import coverage_precision_curve, needs_review, review_threshold, routed_precision
from ml_exp.toolkit.scans import ocr_words, pdf_page_images

__all__ = [
    "STRATEGIES",
    "apply_temperature",
    "classification_metric_module",
    "classification_metrics",
    "coverage_precision_curve",
    "expected_calibration_error",
    "fit_temperature",
    "layout_encode",
    "multi_label_metrics",
    "needs_review",
    "ocr_words",
    "open_image",
    "parse_threshold_rule",
    "review_threshold",
    "routed_precision",
    "pdf_page_images",
    "pdf_pages",
    "pdf_text",
    "tokenizer_encode",
    "tune_label_thresholds",
]

"""Accuracy and precision / recall / F1 (macro, micro, weighted) for single-label classification.

An ``evaluate.Metric`` script shipped with ml-exp, so that it loads offline:
``evaluate.load(ml_exp.toolkit.metrics.CLASSIFICATION)`` (``ml_exp.toolkit.classification_metrics``
does this once per process). Hub metrics such as ``evaluate.load("f1")`` need the network.

Keep the imports absolute: evaluate copies this file under ``HF_MODULES_CACHE`` and imports the
copy, so relative imports of ml_exp would not resolve.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

_DESCRIPTION = """\
Accuracy plus precision, recall and F1 with macro, micro and weighted averaging over the classes
0..num_labels-1 (a class never predicted or never present scores 0, not a warning).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
    num_labels (`int`, optional): number of classes; the classes are 0..num_labels-1. Default: the
        classes seen in predictions and references.
Returns:
    `accuracy`, `precision_macro`, `recall_macro`, `f1_macro`, `precision_micro`, `recall_micro`,
    `f1_micro`, `precision_weighted`, `recall_weighted`, `f1_weighted` (floats in [0, 1]).
Example:
    >>> metric = evaluate.load("/path/to/ml_exp/metrics/classification.py")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_labels=2)["accuracy"]
    0.6666666666666666
"""

_CITATION = """\
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""

AVERAGES = ("macro", "micro", "weighted")


class ClassificationMetrics(evaluate.Metric):
    """ml-exp's shipped classification metric (accuracy + P/R/F1 x macro/micro/weighted)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(self, predictions, references, num_labels=None):
        if num_labels is None:
            seen = set(predictions) | set(references)
            num_labels = (max(seen) + 1) if seen else 0
        labels = list(range(int(num_labels)))
        result = {"accuracy": float(accuracy_score(references, predictions)) if len(references) else 0.0}
        for average in AVERAGES:
            precision, recall, f1, _ = precision_recall_fscore_support(
                references, predictions, labels=labels, average=average, zero_division=0
            )
            result[f"precision_{average}"] = float(precision)
            result[f"recall_{average}"] = float(recall)
            result[f"f1_{average}"] = float(f1)
        return result

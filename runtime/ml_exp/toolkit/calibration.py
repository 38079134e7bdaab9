"""Temperature scaling and expected calibration error (issue 25 item 3: confidence a reviewer can trust).

A temperature ``T`` divides the logits before softmax (single-label) or sigmoid (multi-label, one
``T`` per label); it is fitted on the validation split by minimising the negative log-likelihood, so
it changes how confident a prediction is, never which class wins. ``expected_calibration_error``
measures the gap between confidence and accuracy. Importing this module is cheap: numpy and scipy
(a dependency of scikit-learn) are imported inside the functions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["apply_temperature", "expected_calibration_error", "fit_temperature"]

# log(T) is searched in this range: T from 0.05 to 20 covers any model worth calibrating; beyond
# it, a small validation split is fitted rather than the model (scores pushed to exactly 0 or 1).
_LOG_T_BOUNDS = (-3.0, 3.0)
# multi-label: a label with fewer positive (or negative) validation documents than this gets the
# temperature of all labels together, not one fitted on a handful of documents
MIN_EXAMPLES_PER_LABEL = 5


def _single_label_nll(logits: Any, references: Any, temperature: float) -> float:
    import numpy as np
    from scipy.special import log_softmax

    log_probs = log_softmax(logits / temperature, axis=1)
    return float(-log_probs[np.arange(len(references)), references].mean())


def _binary_nll(logits: Any, truth: Any, temperature: float) -> float:
    import numpy as np

    scaled = logits / temperature
    # -log sigmoid(z) = logaddexp(0, -z), stable for large |z|
    return float(np.mean(truth * np.logaddexp(0, -scaled) + (1 - truth) * np.logaddexp(0, scaled)))


def _best_temperature(nll) -> float:
    import numpy as np
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: nll(float(np.exp(log_t))), bounds=_LOG_T_BOUNDS, method="bounded")
    return float(np.exp(found.x))


def fit_temperature(logits: Any, references: Any, multi_label: bool = False) -> float | list[float]:
    """The temperature minimising validation NLL: one float (single-label, ``references`` class ids)
    or one per label (multi-label, ``references`` multi-hot with the logits' shape; a label with
    fewer than MIN_EXAMPLES_PER_LABEL positives or negatives gets all labels' temperature)."""
    import numpy as np

    values = np.asarray(logits, dtype=float)
    refs = np.asarray(references)
    if values.ndim != 2 or not len(values):
        raise ValueError(
            f"fit_temperature: logits must be documents x labels with at least one document (got shape {values.shape})"
        )
    if multi_label:
        if refs.shape != values.shape:
            raise ValueError(f"fit_temperature: multi-hot references have shape {refs.shape} but logits {values.shape}")
        shared = _best_temperature(lambda t: _binary_nll(values.ravel(), refs.ravel(), t))
        positives = refs.sum(axis=0)
        return [
            _best_temperature(lambda t, j=j: _binary_nll(values[:, j], refs[:, j], t))
            if min(positives[j], len(refs) - positives[j]) >= MIN_EXAMPLES_PER_LABEL
            else shared
            for j in range(values.shape[1])
        ]
    if refs.shape != (len(values),) or not np.issubdtype(refs.dtype, np.integer):
        raise ValueError(
            f"fit_temperature: references must be {len(values)} class ids (got shape {refs.shape}, {refs.dtype})"
        )
    if refs.size and not (0 <= refs.min() and refs.max() < values.shape[1]):
        raise ValueError(f"fit_temperature: class ids must be in 0..{values.shape[1] - 1}")
    return _best_temperature(lambda t: _single_label_nll(values, refs, t))


def apply_temperature(logits: Any, temperature: float | list[float], multi_label: bool = False) -> Any:
    """Calibrated probabilities: softmax (single-label) or per-label sigmoid of logits / T."""
    import numpy as np
    from scipy.special import expit, softmax

    scaled = np.asarray(logits, dtype=float) / np.asarray(temperature, dtype=float)
    return expit(scaled) if multi_label else softmax(scaled, axis=1)


def expected_calibration_error(confidences: Any, outcomes: Any, bins: int = 10) -> float:
    """Share-weighted gap between mean confidence and mean outcome over ``bins`` equal-width bins.

    Single-label: ``confidences`` the top probability, ``outcomes`` 1 where the top class was right.
    Multi-label: every (document, label) probability against its 0/1 truth.
    """
    import numpy as np

    conf = np.asarray(confidences, dtype=float).ravel()
    hit = np.asarray(outcomes, dtype=float).ravel()
    if conf.shape != hit.shape or not conf.size:
        raise ValueError(
            f"expected_calibration_error: {conf.size} confidences but {hit.size} outcomes (need the same, at least one)"
        )
    if bins < 1:
        raise ValueError(f"expected_calibration_error: bins = {bins}; use at least 1")
    # a confidence of exactly 1.0 belongs to the last bin
    index = np.minimum((conf * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(conf[members].mean() - hit[members].mean())
    return float(error)

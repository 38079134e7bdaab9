"""Review routing (issue 25 item 4): which predictions go straight through, which a person checks.

A prediction whose confidence is at or above the review threshold is automated; below it, it needs
review. The threshold is chosen on the validation split as the lowest confidence at which the
automated predictions still reach ``REVIEW_TARGET_PRECISION`` (the most coverage for that
precision); the test split then says whether the precision held. Importing this module is cheap:
numpy is imported inside the functions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["coverage_precision_curve", "needs_review", "review_threshold", "routed_precision"]


def _checked(confidences: Any, correct: Any, what: str) -> tuple[Any, Any]:
    import numpy as np

    conf = np.asarray(confidences, dtype=float).ravel()
    hit = np.asarray(correct, dtype=float).ravel()
    if conf.shape != hit.shape or not conf.size:
        raise ValueError(
            f"{what}: {conf.size} confidences but {hit.size} correctness flags (need the same, at least one)"
        )
    return conf, hit


def coverage_precision_curve(confidences: Any, correct: Any) -> dict[str, list[float]]:
    """For each distinct confidence (highest first) as the threshold: the share of documents
    automated (``coverage``) and the precision of those (``precision``)."""
    import numpy as np

    conf, hit = _checked(confidences, correct, "coverage_precision_curve")
    order = np.argsort(-conf, kind="stable")
    ranked, hits = conf[order], np.cumsum(hit[order])
    # a threshold automates every document tied with it: only the last of each tie counts
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    automated = ends + 1
    return {
        "threshold": ranked[ends].tolist(),
        "coverage": (automated / conf.size).tolist(),
        "precision": (hits[ends] / automated).tolist(),
    }


def review_threshold(confidences: Any, correct: Any, target_precision: float) -> dict[str, Any]:
    """The lowest threshold whose automated predictions reach ``target_precision`` on this split.

    Returns ``threshold`` (None when no threshold reaches the target: every document needs review),
    ``coverage`` and ``precision`` at it, and ``target``.
    """
    if not 0.0 < float(target_precision) <= 1.0:
        raise ValueError(
            f"REVIEW_TARGET_PRECISION = {target_precision!r}: use a precision 0 < p <= 1 (e.g. 0.98), the share "
            "of automated predictions that must be right"
        )
    curve = coverage_precision_curve(confidences, correct)
    reaching = [i for i, precision in enumerate(curve["precision"]) if precision >= target_precision]
    if not reaching:
        return {"threshold": None, "coverage": 0.0, "precision": None, "target": float(target_precision)}
    best = reaching[-1]  # lowest threshold, most coverage
    return {
        "threshold": curve["threshold"][best],
        "coverage": curve["coverage"][best],
        "precision": curve["precision"][best],
        "target": float(target_precision),
    }


def needs_review(confidences: Any, threshold: float | None) -> list[bool]:
    """True for each prediction below the threshold (all of them when there is no threshold)."""
    import numpy as np

    conf = np.asarray(confidences, dtype=float).ravel()
    if threshold is None:
        return [True] * conf.size
    return (conf < threshold).tolist()


def routed_precision(confidences: Any, correct: Any, threshold: float | None) -> dict[str, Any]:
    """Coverage and precision of the automated predictions at a threshold chosen elsewhere (the test
    split at the validation split's threshold); precision is None when nothing is automated."""
    import numpy as np

    conf, hit = _checked(confidences, correct, "routed_precision")
    automated = ~np.asarray(needs_review(conf, threshold))
    count = int(automated.sum())
    return {
        "threshold": threshold,
        "coverage": count / conf.size,
        "precision": float(hit[automated].mean()) if count else None,
    }

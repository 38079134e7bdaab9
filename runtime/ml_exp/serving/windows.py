"""How the predictor turns records into model windows and window scores back into one
prediction per record (:class:`Documents`, the seam for long documents; re-exported by
:mod:`ml_exp.serving.predictor`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Documents:
    """How records become model windows and window scores become a record's scores.
    ``split(encoded, n)`` -> (window columns, owner record of each window, what ``combine`` needs);
    ``combine(scores, owners, n, split)`` -> (one score row per record, evidence per record or None).
    Stateless: the server scores several requests' windows in turns (:class:`Work`)."""

    def split(self, encoded: Mapping[str, list], n: int) -> tuple[Mapping[str, list], list[int], Any]:
        raise NotImplementedError

    def combine(self, scores: Any, owners: list[int], n: int, split: Any) -> tuple[Any, list[dict | None]]:
        raise NotImplementedError


class WholeRecord(Documents):
    """One window per record: what ``encode`` made of it (truncated to MAX_LENGTH)."""

    def split(self, encoded: Mapping[str, list], n: int) -> tuple[Mapping[str, list], list[int], Any]:
        return encoded, list(range(n)), None

    def combine(self, scores: Any, owners: list[int], n: int, split: Any) -> tuple[Any, list[dict | None]]:
        return scores, [None] * n


class Windows(Documents):
    """Several windows per record when ``encode`` returns ``overflow_to_sample_mapping``
    (DOCUMENT_STRATEGY = chunks), combined as the inference step combines them
    (CHUNK_AGGREGATION); the evidence names the deciding window and its character span."""

    def __init__(self, aggregation: str, multi_label: bool = False):
        self.aggregation, self.multi_label = aggregation, multi_label

    def split(self, encoded: Mapping[str, list], n: int) -> tuple[Mapping[str, list], list[int], Any]:
        """The windows, their owners and, for ``combine``, each window's character span and page."""
        from ml_exp.toolkit.documents import MAPPING, PAGE, WINDOW_END, WINDOW_START, Windowing, to_rows

        if MAPPING not in encoded:
            return encoded, list(range(n)), None
        rows = to_rows({}, encoded, Windowing())
        spans = list(zip(rows[WINDOW_START], rows[WINDOW_END]))
        pages = [int(p) for p in rows[PAGE]] if PAGE in rows else None
        return rows, [int(owner) for owner in encoded[MAPPING]], (spans, pages)

    def combine(self, scores: Any, owners: list[int], n: int, split: Any) -> tuple[Any, list[dict | None]]:
        import numpy as np

        from ml_exp.toolkit.documents import combine, combine_labels

        if split is None:
            return scores, [None] * n
        spans, pages = split
        starts = np.searchsorted(np.asarray(owners), np.arange(n))
        combined, deciding = (combine_labels if self.multi_label else combine)(scores, starts, self.aggregation)
        counts = np.diff(np.append(starts, len(owners)))

        def proof(record: int, window: int) -> dict[str, Any]:
            start, end = spans[int(starts[record]) + window]
            found: dict[str, Any] = {"window": window, "windows": int(counts[record])}
            if start >= 0:
                found.update(start=start, end=end)
            if pages is not None:  # one window per page: the page that decided it
                found["page"] = pages[int(starts[record]) + window]
            return found

        if self.multi_label:  # per label, the window that gives it its highest probability
            return combined, [[proof(r, w) for w in row] for r, row in enumerate(deciding.tolist())]
        return combined, [proof(r, w) for r, w in enumerate(deciding.tolist())]

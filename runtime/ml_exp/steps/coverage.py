"""How much of the documents the model sees (preparation's report on DOCUMENT_STRATEGY): their
lengths in the model's tokens, their windows, and the share of their tokens in what is encoded.

Read from the columns :func:`ml_exp.toolkit.documents.to_rows` writes next to the model's inputs,
three integers per row: nothing is tokenized again.
"""

from __future__ import annotations

import io
from typing import Any

from ml_exp.core.names import CHUNKS, TRUNCATE
from ml_exp.experiment.context import Context
from ml_exp.steps.columns import split_column
from ml_exp.toolkit.documents import DOCUMENT_TOKENS, TOKENS_SEEN, WINDOW, Windowing
from ml_exp.toolkit.plots import literal_text, short

# With DOCUMENT_STRATEGY = truncate, warn when more than this share of the training documents is cut.
TRUNCATED_WARNING = 0.5
# CHUNK_TRAINING = document keeps every training window's activations unless CHUNK_GRAD_WINDOWS caps
# them: past this many windows per document, the advice names that cap.
MANY_WINDOWS = 32


class Documents:
    """A split's documents, read once from its window columns: per document its rows
    (``windows``), its whole length in tokens (``lengths``, -1 when encode did not say it), the
    tokens its windows add (``seen``), and its first row's (``first_seen``). Read once for the
    coverage, the histogram and the empty-document warning (each read every column before)."""

    def __init__(self, split: Any):
        import numpy as np
        import pyarrow.compute as pc

        window, tokens_seen = split_column(split, WINDOW), split_column(split, TOKENS_SEEN)
        first = pc.equal(window, 0)
        rows = len(window)
        starts = np.flatnonzero(first.to_numpy(zero_copy_only=False)) if rows else np.zeros(0, dtype=np.int64)
        self.lengths = np.asarray(pc.filter(split_column(split, DOCUMENT_TOKENS), first).to_numpy(zero_copy_only=False))
        self.first_seen = np.asarray(pc.filter(tokens_seen, first).to_numpy(zero_copy_only=False))
        if len(starts) == rows:  # a row per document (truncate, head_tail)
            self.windows = np.ones(rows, dtype=np.int32)
            self.seen = self.first_seen
        else:
            self.windows = np.diff(np.append(starts, rows)).astype(np.int32)
            seen = np.asarray(tokens_seen.to_numpy(), dtype=np.int64)
            self.seen = np.add.reduceat(seen, starts) if len(starts) else np.zeros(0, dtype=np.int64)
        self.rows = rows

    @classmethod
    def of(cls, encoded: Any) -> dict[str, Documents]:
        return {name: cls(split) for name, split in encoded.items()}


def document_coverage(
    encoded: Any, config: Any, windowing: Windowing, documents: dict[str, Documents] | None = None
) -> dict[str, Any]:
    """Per split: documents, windows per document, token lengths (median, p90, max; None when
    encode did not say them), the share of the documents' tokens the model sees, and the share
    of documents longer than one row (``longer_than_max_length``)."""
    import numpy as np

    max_length = windowing.max_length or config.max_length  # what encode really cut at
    room = max(max_length - windowing.special_tokens, 1)
    splits = {}
    for name, docs in (documents or Documents.of(encoded)).items():
        windows, lengths, seen = docs.windows, docs.lengths, docs.seen
        facts: dict[str, Any] = {
            "documents": int(len(lengths)),
            "windows": int(docs.rows),
            "windows_per_document": {
                "median": _number(np.median(windows)) if len(windows) else 0,
                "max": int(windows.max(initial=0)),
            },
            "tokens": None,
            "share_seen": None,
            "longer_than_max_length": None,
        }
        if len(lengths) and (lengths >= 0).all():
            facts["tokens"] = {
                "median": _number(np.median(lengths)),
                "p90": _number(np.percentile(lengths, 90)),
                "max": int(lengths.max()),
            }
            facts["share_seen"] = round(float(min(seen.sum() / max(lengths.sum(), 1), 1.0)), 4)
            facts["longer_than_max_length"] = round(float((lengths > room).mean()), 4)
        elif len(lengths):  # lengths unknown: a document that fills its row was probably cut
            facts["longer_than_max_length"] = round(float((docs.first_seen >= room).mean()), 4)
        splits[name] = facts
    coverage = {"strategy": config.document_strategy, "max_length": max_length, "splits": splits}
    coverage["advice"] = strategy_advice(coverage, config)
    return coverage


def strategy_advice(coverage: dict[str, Any], config: Any) -> str | None:
    """Which DOCUMENT_STRATEGY (and CHUNK_TRAINING) fits the training documents' measured lengths,
    as one sentence; None when the lengths are unknown or the settings already fit them."""
    train = coverage["splits"].get("train") or {}
    longer = train.get("longer_than_max_length")
    if longer is None or not train.get("documents"):
        return None
    max_length, strategy = coverage["max_length"], coverage["strategy"]
    if longer == 0:
        if strategy == TRUNCATE:
            return None
        return (
            f"every training document fits MAX_LENGTH = {max_length} tokens: DOCUMENT_STRATEGY = truncate "
            f"is enough (it reads the same tokens as {strategy})"
        )
    share = f"{100 * longer:.0f}% of the training documents are longer than MAX_LENGTH = {max_length} tokens"
    if strategy != CHUNKS:
        if longer <= TRUNCATED_WARNING:
            return (
                f"{share}: if what decides a document can sit past the tokens {strategy} keeps, set "
                "DOCUMENT_STRATEGY = chunks with CHUNK_TRAINING = document"
            )
        seen = train.get("share_seen")
        where = f" (the model sees {100 * seen:.0f}% of their tokens)" if seen is not None else ""
        return (
            f"{share} and {strategy} cuts them{where}: set DOCUMENT_STRATEGY = chunks with CHUNK_TRAINING = "
            "document to train and predict on all of their tokens"
            + (" (head_tail reads only their start and end)" if strategy == TRUNCATE else "")
        )
    windows = (train.get("windows_per_document") or {}).get("max", 1)
    if config.chunk_training != "document":
        return (
            f"{share}: with CHUNK_TRAINING = windows each of their windows learns the document's label, "
            "filler included; CHUNK_TRAINING = document takes the loss per document (see README, Long documents)"
        )
    if not config.chunk_grad_windows and windows > MANY_WINDOWS:
        return (
            f"training documents of up to {windows} windows, all trained with gradients: set CHUNK_GRAD_WINDOWS "
            "(e.g. 8) if training runs out of memory (one more forward pass of those windows)"
        )
    if config.chunk_aggregation == "mean":
        return (
            f"{share}: document training with CHUNK_AGGREGATION = mean counts every window alike; where one "
            "passage decides a document, max learns from each class's highest window (see README, Long documents)"
        )
    return None


def warn_if_truncated(coverage: dict[str, Any], ctx: Context, model_name: str) -> None:
    """Warn with :func:`strategy_advice` when truncate cuts most training documents (the run's
    summary prints the advice once in every case, under the coverage lines)."""
    longer = coverage["splits"].get("train", {}).get("longer_than_max_length") or 0
    if coverage.get("advice") and coverage["strategy"] == TRUNCATE and longer > TRUNCATED_WARNING:
        ctx.log.warning("%s: %s", model_name, coverage["advice"])


@literal_text
def lengths_png(documents: dict[str, Any], max_length: int, strategy: str, model_name: str) -> bytes | None:
    """A histogram of the documents' lengths in tokens per split (``documents``: split -> each
    document's length, as :attr:`Documents.lengths`; log scale), MAX_LENGTH marked; None when
    encode did not say the lengths. Plain values in and out: it runs in the drawing process."""
    figure = lengths_figure(documents, max_length, strategy, model_name)
    if figure is None:
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def lengths_figure(documents: dict[str, Any], max_length: int, strategy: str, model_name: str) -> Any:
    """:func:`lengths_png`'s figure (matplotlib), None when a length is unknown."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter

    lengths = {}
    for name, values in documents.items():
        values = np.asarray(values)
        if not len(values) or (values < 0).any():
            return None
        lengths[name] = np.maximum(values, 1)
    top = max(int(v.max()) for v in lengths.values())
    bins = np.geomspace(1, max(top, max_length) * 1.1, 40)
    figure = Figure(figsize=(7, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, values in lengths.items():
        axes.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"{short(name)} ({len(values)})")
    axes.axvline(max_length, color="black", linestyle="--", linewidth=1, label=f"MAX_LENGTH = {max_length}")
    axes.set_xscale("log")
    # plain-text tick labels: the default ones are mathtext, drawn as "$\\mathdefault{10^{2}}$" when literal
    axes.xaxis.set_major_formatter(LogFormatter())
    axes.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    axes.set_xlabel("document length (tokens)")
    axes.set_ylabel("documents")
    axes.set_title(f"{model_name}: document lengths ({strategy})")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _number(value: Any) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() else round(value, 1)


def coverage_line(split: str, facts: dict[str, Any]) -> str:
    """One line of what the model sees of a split's documents (the run summary, report.md)."""
    windows = facts.get("windows_per_document") or {}
    line = f"{split}: {facts.get('documents', 0)} documents"
    tokens = facts.get("tokens")
    if tokens:
        line += f", {tokens['median']:,} tokens (median; p90 {tokens['p90']:,}, max {tokens['max']:,})"
    line += f", {windows.get('median', 1)} window(s) per document (max {windows.get('max', 1)})"
    if facts.get("share_seen") is not None:
        line += f"; the model sees {100 * facts['share_seen']:.0f}% of their tokens"
    if facts.get("longer_than_max_length") is not None:
        line += f"; {100 * facts['longer_than_max_length']:.0f}% longer than MAX_LENGTH"
    return line


# Warn when more than this share of the training documents gives the model no content token.
EMPTY_WARNING = 0.5


def warn_if_empty(
    encoded: Any, ctx: Context, model_name: str, documents: dict[str, Documents] | None = None
) -> float | None:
    """Warn when most training documents encode to special tokens only (a tokenizer that knows
    none of their words, a text field that is empty); return that share (None when unknown)."""
    if "train" not in encoded:
        return None
    train = documents["train"] if documents and "train" in documents else Documents(encoded["train"])
    if not len(train.seen):
        return None
    empty = float((train.seen <= 0).mean())  # per document, over its windows
    if empty > EMPTY_WARNING:
        ctx.log.warning(
            "%s: %.0f%% of the training documents encode to no content token (only special tokens): the model "
            "cannot learn from them; check encode() and load_processor() (do the text fields hold text? does the "
            "tokenizer know the documents' words?)",
            model_name,
            100 * empty,
        )
    return empty


def warn_if_degenerate(counts: dict[str, dict[str, int]], ctx: Context) -> list[str]:
    """Warn about a split whose records are all of one label, or a label absent from training."""
    warnings = []
    for split, per_label in counts.items():
        present = [label for label, n in per_label.items() if n > 0]
        if sum(per_label.values()) > 1 and len(present) == 1:
            warnings.append(f"every record of the {split} split is labelled {present[0]!r}")
    missing = [label for label, n in counts.get("train", {}).items() if n == 0]
    if missing:
        warnings.append(f"label(s) {', '.join(map(repr, missing))} have no training record")
    for warning in warnings:
        ctx.log.warning(
            "%s: the model cannot learn or be measured on that; give reconcile() more records of each label or "
            "change SPLIT_RATIOS",
            warning,
        )
    return warnings

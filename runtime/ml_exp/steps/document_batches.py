"""Document-level training for DOCUMENT_STRATEGY = chunks and CHUNK_TRAINING = document (issue 27).

Window training gives every window its document's label: on long documents that are mostly
boilerplate, most training windows are filler labelled with a class. Document training scores
every window of a document, combines the windows' scores per document, and takes the loss on the
document: the gradient then reaches the window that decides. ``mean`` combines the windows'
probabilities as evaluation and inference do (:func:`ml_exp.toolkit.documents.combine`); ``max``
takes each class's highest *logit* over the windows, then the softmax over the classes, so that
a filler window can score low for every class (a softmax per window would make it give its
probability to some class, and the loss would push the filler towards the document's label).
Inference still combines the windows' probabilities (``max``: each class's highest, scaled to sum
to 1): on a trained model both pick the passage's window.

From the first step, the highest logit's gradient reaches only whichever window happens to score
each class highest, filler as likely as the passage, one document (one label) a step: on the
bench's buried licence passages (docs/benchmarks.md) one run in three stayed at chance, every
window scored alike. CHUNK_WINDOW_EPOCHS (default 1) first trains window by window, windows of
many documents and labels a batch, so that the passages already lean to their class when the
document loss starts; filler, drawn alike for every class, cannot lean to any. Measured there,
3 seeds: 0.80 / 0.74 / 0.83 test accuracy with one window epoch of three, 0.74 / 0.88 / 0.24 with
the document loss only; adding the mean logit's loss to the highest's (every window a share of the
gradient) moved the failure to another seed (0.20 / 0.87 / 0.82) and, after a window epoch, cost
accuracy (0.72 / 0.58 / 0.59).

- :class:`DocumentBatchSampler`: batches of whole documents' windows (rows of one document stay
  together and in order), shuffled by document, after CHUNK_WINDOW_EPOCHS of windows shuffled over
  all documents; a pure function of (seed, epoch) as :class:`ml_exp.steps.sampling.PooledLengthSampler`
  is, so a resumed run and every rank draw the same batches.
- :func:`document_loss`: the documents' cross-entropy from their windows' logits.
- :func:`top_windows`: with CHUNK_GRAD_WINDOWS, which windows of each document are scored again
  with gradients.

:class:`ml_exp.steps.trainer.StepTrainer` uses them when CHUNK_TRAINING = document (its training
dataloader and compute_loss); CHUNK_TRAINING = windows, the default, trains each window alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DocumentTraining:
    """What :class:`ml_exp.steps.trainer.StepTrainer` needs for CHUNK_TRAINING = document."""

    windows: Sequence[int]  # the training rows' WINDOW column (0 starts a document)
    aggregation: str = "mean"  # CHUNK_AGGREGATION
    weights: Sequence[float] | None = None  # class weights (multi-label: positive weights)
    grad_windows: int = 0  # CHUNK_GRAD_WINDOWS: windows per document with gradients, 0 = all
    multi_label: bool = False
    window_epochs: int = 0  # CHUNK_WINDOW_EPOCHS: first epochs trained window by window


def document_spans(windows: Sequence[int]) -> list[tuple[int, int]]:
    """(first row, row past the last) of each document, from the WINDOW column (0 starts one)."""
    windows = np.asarray(windows, dtype=np.int64)
    starts = np.flatnonzero(windows == 0)
    if len(windows) and (not len(starts) or starts[0] != 0):
        raise ValueError("the first row is not a document's first window (window 0): windows are out of order")
    ends = np.append(starts[1:], len(windows))
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


class DocumentBatchSampler:
    """A batch sampler (``torch.utils.data`` protocol: ``__iter__`` yields lists of rows) of
    ``documents_per_batch`` whole documents each, documents shuffled per (seed, epoch). In the
    first ``window_epochs`` epochs it yields windows instead, shuffled over all documents, in as
    many batches (the Trainer's schedule counts them once): :attr:`window_phase` says which.
    ``grad_windows`` (CHUNK_GRAD_WINDOWS, 0 = all) caps a window batch at ``documents_per_batch
    x grad_windows`` windows, the rows a document batch trains with gradients: another share of
    the windows each window epoch, and no more memory than the document epochs."""

    def __init__(
        self,
        windows: Sequence[int],
        documents_per_batch: int,
        seed: int = 0,
        window_epochs: int = 0,
        grad_windows: int = 0,
    ):
        if documents_per_batch < 1:
            raise ValueError(f"documents_per_batch ({documents_per_batch}) must be at least 1")
        self.spans = document_spans(windows)
        self.documents_per_batch, self.seed, self.epoch = documents_per_batch, seed, 0
        self.window_epochs = window_epochs
        self.window_rows = documents_per_batch * grad_windows or None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def window_phase(self) -> bool:
        return self.epoch < self.window_epochs

    def __len__(self) -> int:
        return -(-len(self.spans) // self.documents_per_batch)

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.window_phase and self.spans:
            rows = rng.permutation(self.spans[-1][1])
            return [part[: self.window_rows].tolist() for part in np.array_split(rows, len(self))]
        order = rng.permutation(len(self.spans))
        size = self.documents_per_batch
        return [[row for d in order[i : i + size] for row in range(*self.spans[d])] for i in range(0, len(order), size)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()


def document_loss(
    logits: Any, labels: Any, windows: Any, how: str = "mean", weights: Sequence[float] | None = None
) -> Any:
    """Mean cross-entropy of the documents of a batch of whole documents' windows (rows in order,
    ``windows``: each row's WINDOW); a document's label is its first window's. ``how``: mean (the
    mean of the windows' probabilities, as inference combines them) | max (each class's highest
    logit over the windows, then the softmax: the module's docstring says why). ``weights``: per
    class, as the window loss's class weights (weighted mean over documents)."""
    import torch

    logits = logits.float()
    owner = torch.cumsum((windows == 0).long(), dim=0) - 1
    if int(owner.min()) < 0:
        raise ValueError("the batch does not start with a document's first window (window 0)")
    documents, classes = int(owner.max()) + 1, logits.shape[-1]
    index = owner[:, None].expand(-1, classes)
    target = labels[torch.nonzero(windows == 0)[:, 0]]
    table = None if weights is None else torch.tensor(list(weights), dtype=torch.float32, device=logits.device)
    if how == "max":
        highest = torch.zeros(documents, classes, device=logits.device).scatter_reduce(
            0, index, logits, reduce="amax", include_self=False
        )
        return torch.nn.functional.cross_entropy(highest, target, weight=table)
    if how != "mean":
        raise ValueError(f"CHUNK_AGGREGATION must be mean or max, not {how!r}")
    scores = torch.zeros(documents, classes, device=logits.device).scatter_reduce(
        0, index, torch.softmax(logits, dim=-1), reduce="mean", include_self=False
    )
    return torch.nn.functional.nll_loss(torch.log(scores.clamp_min(1e-12)), target, weight=table)


def top_windows(logits: Any, windows: Any, keep: int, multi_label: bool = False) -> Any:
    """A mask of the rows to score with gradients: each document's ``keep`` windows that give
    any class its highest probability (all of a document with ``keep`` or fewer windows)."""
    import torch

    probs = torch.sigmoid(logits.float()) if multi_label else torch.softmax(logits.float(), dim=-1)
    confidence = probs.amax(dim=-1)
    owner = torch.cumsum((windows == 0).long(), dim=0) - 1
    mask = torch.zeros(len(windows), dtype=torch.bool, device=logits.device)
    for document in range(int(owner.max()) + 1):
        rows = torch.nonzero(owner == document)[:, 0]
        mask[rows[torch.topk(confidence[rows], min(keep, len(rows))).indices]] = True
    return mask


def multi_label_document_loss(
    logits: Any, labels: Any, windows: Any, how: str = "max", positive_weights: Sequence[float] | None = None
) -> Any:
    """PROBLEM_TYPE = multi_label: the mean binary cross-entropy of the documents, each label's
    probability (a sigmoid per window) combined over the document's windows by ``how`` (max: the
    window that gives the label its highest probability, as inference decides; mean), against the
    document's 0/1 row (its first window's). ``positive_weights``: per label, BCE's ``pos_weight``."""
    import torch

    probs = torch.sigmoid(logits.float())
    owner = torch.cumsum((windows == 0).long(), dim=0) - 1
    if int(owner.min()) < 0:
        raise ValueError("the batch does not start with a document's first window (window 0)")
    documents, count = int(owner.max()) + 1, probs.shape[-1]
    if how not in ("max", "mean"):
        raise ValueError(f"CHUNK_AGGREGATION must be mean or max, not {how!r}")
    scores = torch.zeros(documents, count, device=probs.device).scatter_reduce(
        0, owner[:, None].expand(-1, count), probs, reduce="amax" if how == "max" else "mean", include_self=False
    )
    target = labels[torch.nonzero(windows == 0)[:, 0]].float()
    weight = 1.0 if positive_weights is None else torch.tensor(list(positive_weights), device=probs.device)
    p = scores.clamp(1e-7, 1 - 1e-7)
    return -(weight * target * torch.log(p) + (1 - target) * torch.log1p(-p)).mean()

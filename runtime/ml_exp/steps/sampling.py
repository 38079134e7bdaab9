"""Batches of similar lengths that stay as random as shuffled ones.

The Trainer's ``group_by_length`` sorts megabatches of 50 batches: on a small corpus that is
most of an epoch, so the batches come in nearly the same order every epoch, and on the demo's
172 records the model learnt nothing (test macro-F1 0.37 against 1.00 shuffled). Here the pool
that is sorted is a few batches: each epoch the records are shuffled, cut into pools of
``pool_batches`` batches, each pool is sorted by length and cut into batches, and the batches
are shuffled. A batch then holds records that were near each other in one shuffle *and* of
similar length: most of the padding goes, while which records meet, and in which order the
batches come, changes every epoch as with plain shuffling.

The order is a pure function of (seed, epoch): a run resumed in the middle of an epoch (the
Trainer skips the batches already seen) sees every record once in that epoch, and every rank
of a multi-process run draws the same order, of which accelerate gives each rank its batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

# Batches per sorted pool: 1 is plain shuffling. On log-uniform 16-512 token lengths in batches of
# 16, random batches are 65% padding; pools of 4 batches leave 31%, of 8 18%, of 16 12%.
POOL_BATCHES = 8
# ... and never more than this share of an epoch's batches, so that a small corpus is not one
# sorted pool (the Trainer's megabatch failure): 11 batches give pools of 2.
POOL_SHARE = 0.25


def pool_batches(rows: int, batch_size: int) -> int:
    """Batches per sorted pool for an epoch of ``rows`` rows."""
    batches = -(-rows // max(batch_size, 1))
    return max(1, min(POOL_BATCHES, int(batches * POOL_SHARE)))


class PooledLengthSampler:
    """A sampler (``torch.utils.data.Sampler`` protocol: ``__iter__``, ``__len__``) of training
    rows: shuffled, sorted by ``lengths`` within pools of ``pool_batches`` x ``batch_size`` rows,
    batches shuffled. Only the last batch of an epoch may be short, as when shuffling."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool_batches: int = POOL_BATCHES):
        if batch_size < 1 or pool_batches < 1:
            raise ValueError(f"batch_size ({batch_size}) and pool_batches ({pool_batches}) must be at least 1")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size, self.seed, self.pool_batches = batch_size, seed, pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer (through accelerate) before each epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[np.ndarray]:
        """This epoch's batches, in order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        shuffled = rng.permutation(len(self.lengths))
        pool = self.batch_size * self.pool_batches
        batches: list[np.ndarray] = []
        for start in range(0, len(shuffled), pool):
            rows = shuffled[start : start + pool]
            # stable: equal lengths keep their shuffled order, so ties are random too
            rows = rows[np.argsort(-self.lengths[rows], kind="stable")]
            batches.extend(rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size))
        short = batches.pop() if batches and len(batches[-1]) < self.batch_size else None
        order = [batches[i] for i in rng.permutation(len(batches))]
        return order + ([short] if short is not None else [])  # a short batch mid-epoch would shift every later one

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch.tolist()


def batch_padding_share(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """The share of padding in the tokens of ``batches`` (each padded to its longest row)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    padded = sum(int(lengths[np.asarray(b)].max()) * len(b) for b in batches if len(b))
    return 1.0 - int(sum(int(lengths[np.asarray(b)].sum()) for b in batches if len(b))) / padded if padded else 0.0

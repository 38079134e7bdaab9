"""The length-pooled training sampler: every row once per epoch, less padding than shuffling,
batches that change every epoch, the same order for a resumed run and for every rank."""

from __future__ import annotations

import numpy as np
import pytest

from ml_exp.steps.sampling import PooledLengthSampler, batch_padding_share, pool_batches
from ml_exp.steps.trainer import GROUP_BY_LENGTH, RANDOM, majority_share, sampling_strategy, sorts_labels

RNG = np.random.default_rng(0)
MIXED = np.exp(RNG.uniform(np.log(16), np.log(512), 1000)).astype(int).tolist()  # log-uniform, as the bench's


def cut(order, size):
    return [order[i : i + size] for i in range(0, len(order), size)]


@pytest.mark.parametrize("rows", [1, 15, 16, 17, 172, 1000])
def test_each_row_once_per_epoch_and_only_the_last_batch_short(rows):
    sampler = PooledLengthSampler(MIXED[:rows], 16, seed=3, pool_batches=pool_batches(rows, 16))
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(rows)) and len(sampler) == rows
        batches = sampler.batches()
        assert all(len(b) == 16 for b in batches[:-1]) and 0 < len(batches[-1]) <= 16
        assert [i for b in batches for i in b.tolist()] == order  # the DataLoader cuts the same batches


def test_less_padding_than_shuffling_and_other_batches_each_epoch():
    sampler = PooledLengthSampler(MIXED, 16, seed=3)
    shuffled = cut(np.random.default_rng(3).permutation(len(MIXED)).tolist(), 16)
    assert batch_padding_share(MIXED, shuffled) > 0.6
    assert batch_padding_share(MIXED, sampler.batches()) < 0.25
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        epochs.append({tuple(sorted(b.tolist())) for b in sampler.batches()})
    assert len(epochs[0] & epochs[1]) < 0.05 * len(epochs[0])  # which rows meet changes from epoch to epoch


def test_a_small_corpus_is_not_one_sorted_pool():
    """The Trainer's megabatches (50 batches) sorted the demo's 11-batch epoch whole: the same
    batches, longest first, every epoch; the model learnt nothing."""
    assert pool_batches(172, 16) == 2 and pool_batches(30, 16) == 1 and pool_batches(100_000, 16) == 8
    sampler = PooledLengthSampler(MIXED[:172], 16, seed=0, pool_batches=pool_batches(172, 16))
    firsts = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        lengths = [max(MIXED[i] for i in b) for b in sampler.batches()[:-1]]
        assert lengths != sorted(lengths, reverse=True)  # not longest first
        firsts.append(tuple(sampler.batches()[0].tolist()))
    assert len(set(firsts)) == 4


def test_the_order_is_a_function_of_seed_and_epoch_so_a_resume_sees_each_row_once():
    a, b = PooledLengthSampler(MIXED, 16, seed=5), PooledLengthSampler(MIXED, 16, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    order = list(a)
    assert order == list(b)  # a new process (a resume) draws the same epoch
    seen_before_kill, skipped = order[: 16 * 7], list(b)[16 * 7 :]  # the Trainer skips the batches already seen
    assert sorted(seen_before_kill + skipped) == list(range(len(MIXED)))
    c = PooledLengthSampler(MIXED, 16, seed=6)
    c.set_epoch(2)
    assert list(c) != order


def test_ranks_get_whole_disjoint_batches():
    """accelerate deals the DataLoader's batches out to the ranks in turn: each rank's batch is one
    pooled batch, and together they are the epoch."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    sampler = PooledLengthSampler(MIXED[:640], 16, seed=1)
    pooled = [sorted(b.tolist()) for b in sampler.batches()]
    ranks = [
        list(BatchSamplerShard(BatchSampler(sampler, 16, drop_last=False), num_processes=2, process_index=r))
        for r in range(2)
    ]
    assert [sorted(b) for b in ranks[0]] == pooled[0::2] and [sorted(b) for b in ranks[1]] == pooled[1::2]


def test_auto_keeps_labels_mixed_when_length_tells_the_label():
    labels = RNG.integers(0, 2, 1000)
    lengths = np.where(labels == 0, RNG.integers(16, 64, 1000), RNG.integers(256, 512, 1000)).tolist()
    assert sorts_labels(lengths, labels, 16, 1) and sampling_strategy("auto", lengths, 16, 1, labels) == RANDOM
    mixed = RNG.permutation(labels)
    assert not sorts_labels(lengths, mixed, 16, 1)
    sampler = PooledLengthSampler(lengths, 16, seed=1)
    shuffled = cut(np.random.default_rng(1).permutation(1000).tolist(), 16)
    assert majority_share(mixed, sampler.batches()) < majority_share(mixed, shuffled) + 0.1
    assert sampling_strategy("auto", lengths, 16, 1, mixed) == GROUP_BY_LENGTH

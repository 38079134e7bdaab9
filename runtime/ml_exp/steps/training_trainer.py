"""The HF Trainer as the training step uses it: less padding, and no checkpoint nothing reads.

- Batches of similar lengths (transformers 5: ``train_sampling_strategy="group_by_length"``) when
  random batches would be mostly padding (``TRAIN_SAMPLING_STRATEGY = auto``): the collator pads
  each batch to its longest record, so a batch of short records costs what they hold.
- With it, evaluation in length order (longest first), the predictions handed to
  ``compute_metrics`` back in the validation split's row order: what compute_metrics sees is the
  same as without sorting, per row (per-document aggregation relies on that order).
- The checkpoint of the last evaluation is not written: training ends there, so no resume will
  read it, and when that evaluation is the best, the model in memory is the best one, so
  nothing is reloaded either. The checkpoints of the epochs before are written as ever.

Imported by :func:`ml_exp.steps.training.train_model` only (transformers at module level).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

GROUP_BY_LENGTH, RANDOM = "group_by_length", "random"
# auto groups by length when random batches would be more than this share of padding: below it
# the gain is small, and plain shuffling mixes the records better
PADDING_WORTH_GROUPING = 0.10


def token_lengths(dataset: Any, column: str = "input_ids") -> list[int]:
    """Each row's token count, from Arrow's list lengths in batches: no row is decoded (the
    Trainer's own fallback reads every row in Python, ~50 us each)."""
    import pyarrow.compute as pc

    if column not in dataset.column_names:
        return []
    lengths: list[int] = []
    for batch in dataset.select_columns([column]).with_format("arrow").iter(batch_size=50_000):
        lengths.extend(pc.list_value_length(batch.column(column)).to_pylist())
    return lengths


def padding_share(lengths: Sequence[int], batch_size: int, seed: int) -> float:
    """The share of padding in the tokens of random batches of ``batch_size`` (one shuffle)."""
    import numpy as np

    if len(lengths) < 2 or batch_size < 2:
        return 0.0
    shuffled = np.random.default_rng(seed).permutation(np.asarray(lengths, dtype=np.int64))
    starts = np.arange(0, len(shuffled), batch_size)
    sizes = np.diff(np.append(starts, len(shuffled)))
    padded = int((np.maximum.reduceat(shuffled, starts) * sizes).sum())
    return 1.0 - int(shuffled.sum()) / padded if padded else 0.0


def sampling_strategy(setting: str, lengths: Sequence[int], batch_size: int, seed: int) -> str:
    """TRAIN_SAMPLING_STRATEGY resolved: auto = group_by_length when it saves padding worth having."""
    if setting != "auto":
        return setting
    return GROUP_BY_LENGTH if padding_share(lengths, batch_size, seed) > PADDING_WORTH_GROUPING else RANDOM


def in_dataset_order(compute: Callable[[Any], dict[str, float]], order: Sequence[int]) -> Callable[[Any], dict[str, float]]:
    """``compute`` (the Trainer's compute_metrics) on predictions made in ``order`` (the eval
    sampler's), given back in the dataset's row order: row ``order[p]`` was predicted at ``p``."""
    import numpy as np
    from transformers import EvalPrediction

    inverse = np.argsort(np.asarray(order, dtype=np.int64))

    def back(values: Any) -> Any:
        if values is None:
            return None
        if isinstance(values, (tuple, list)):
            return type(values)(back(v) for v in values)
        if len(values) != len(inverse):
            raise RuntimeError(f"evaluation returned {len(values)} rows for {len(inverse)} validation rows")
        return values[inverse]

    def wrapped(prediction: Any) -> dict[str, float]:
        return compute(EvalPrediction(predictions=back(prediction.predictions), label_ids=back(prediction.label_ids),
                                      inputs=back(prediction.inputs), losses=back(getattr(prediction, "losses", None))))

    return wrapped


class StepTrainer(Trainer):
    """The Trainer with the training step's sampling, evaluation order and last checkpoint.

    ``train_lengths``: token counts of the training rows (the length-grouped sampler uses them
    instead of reading every row); ``eval_order``: the validation rows in the order to evaluate
    them (None: as they are); ``compute_metrics`` must then be wrapped by :func:`in_dataset_order`.
    """

    def __init__(self, *args: Any, train_lengths: Sequence[int] | None = None, eval_order: Sequence[int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.train_lengths, self.eval_order = train_lengths, eval_order

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == GROUP_BY_LENGTH and self.train_lengths and len(self.train_lengths) == len(dataset):
            # as the Trainer's own (megabatches of 50 batches sorted by length), lengths given
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=list(self.train_lengths))
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        # never the Trainer's default under group_by_length: it shuffles the evaluation, and the
        # predictions would reach compute_metrics in an order nobody can undo
        if self.eval_order is not None and len(self.eval_order) == len(eval_dataset):
            return list(self.eval_order)  # a list of indices is a sampler (accelerate shards it across ranks)
        if self.args.world_size <= 1:
            from torch.utils.data import SequentialSampler

            return SequentialSampler(eval_dataset)
        return None

    def _determine_best_metric(self, metrics: dict[str, float], trial: Any) -> bool:
        better = super()._determine_best_metric(metrics, trial)
        # training stops after this evaluation (last epoch, early stopping, a pruned trial): its
        # checkpoint would only serve a resume that cannot come. Called between the evaluation
        # and the save, on every rank alike.
        if self.control.should_training_stop and self.control.should_save and self.args.load_best_model_at_end:
            self.control.should_save = False
            if better:  # the model in memory is the best: load_best_model_at_end has nothing to load
                self.state.best_model_checkpoint = None
        return better


def eval_order(lengths: Sequence[int]) -> list[int]:
    """Validation rows longest first (stable: equal lengths keep their order), so each batch
    pads to about its own records' length; the longest first, so memory runs out at once if at all."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])

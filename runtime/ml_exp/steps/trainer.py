"""The HF Trainer as the training step uses it: less padding, and no checkpoint nothing reads.

- Batches of similar lengths (``train_sampling_strategy="group_by_length"``, drawn by
  :class:`ml_exp.steps.sampling.PooledLengthSampler`, not the Trainer's megabatches) when random
  batches would be mostly padding (``TRAIN_SAMPLING_STRATEGY = auto``): the collator pads each
  batch to its longest record, so a batch of short records costs what they hold.
- With it, evaluation in length order (longest first), the predictions handed to
  ``compute_metrics`` back in the validation split's row order: what compute_metrics sees is the
  same as without sorting, per row (per-document aggregation relies on that order).
- The checkpoint of the last evaluation is not written: training ends there, so no resume will
  read it, and when that evaluation is the best, the model in memory is the best one, so
  nothing is reloaded either. The checkpoints of the epochs before are written as ever.

Imported by :func:`ml_exp.steps.training.train_model` only (transformers at module level).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ml_exp.core.console import quiet_transformers_integrations

quiet_transformers_integrations()  # before the Trainer imports them: -q prints nothing of theirs
from transformers import Trainer, TrainerCallback  # noqa: E402

from ml_exp.steps.document_batches import DocumentTraining  # noqa: E402
from ml_exp.steps.sampling import PooledLengthSampler, pool_batches  # noqa: E402


class DocumentEpochs(TrainerCallback):
    """Tells the document batch sampler its epoch at each epoch's start, from the Trainer's state
    (a resumed run's included): the Trainer's own set_epoch does not reach a batch sampler that
    accelerate wrapped for several processes and then for skipping a resumed epoch's first batches,
    and the sampler's epoch decides both its order and CHUNK_WINDOW_EPOCHS' phase."""

    def __init__(self, trainer: Any):
        self.trainer = trainer

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        sampler = self.trainer._document_batches
        if sampler is not None:
            sampler.set_epoch(int(state.epoch or 0))


GROUP_BY_LENGTH, RANDOM = "group_by_length", "random"
# auto groups by length when random batches would be more than this share of padding: below it
# the gain is small, and plain shuffling mixes the records better
PADDING_WORTH_GROUPING = 0.10
# ... and when its batches are not markedly more of one label than shuffled ones (by this share)
LABELS_SORTED = 0.10


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


def majority_share(labels: Any, batches: Sequence[Sequence[int]]) -> float:
    """The mean share of its most frequent label in a batch."""
    import numpy as np

    shares = [np.bincount(labels[np.asarray(batch)]).max() / len(batch) for batch in batches if len(batch)]
    return float(np.mean(shares)) if shares else 0.0


def sorts_labels(lengths: Sequence[int], labels: Sequence[int] | None, batch_size: int, seed: int) -> bool:
    """Whether batches of similar lengths would be batches of one label: when a class's documents
    are shorter than another's (invoices and contracts), grouping by length groups by class, and
    the model then learns from batches of one class at a time. One draw of each order, compared."""
    import numpy as np

    if labels is None or len(labels) != len(lengths) or len(lengths) < 2 * batch_size:
        return False
    labels = np.asarray(labels, dtype=np.int64)
    grouped = PooledLengthSampler(lengths, batch_size, seed, pool_batches(len(lengths), batch_size)).batches()
    shuffled = np.random.default_rng(seed).permutation(len(lengths)).tolist()
    cut = lambda order: [order[i : i + batch_size] for i in range(0, len(order), batch_size)]  # noqa: E731
    return majority_share(labels, grouped) > majority_share(labels, cut(shuffled)) + LABELS_SORTED


def sampling_strategy(
    setting: str, lengths: Sequence[int], batch_size: int, seed: int, labels: Sequence[int] | None = None
) -> str:
    """TRAIN_SAMPLING_STRATEGY resolved (:func:`sampling_choice` without its reason)."""
    return sampling_choice(setting, lengths, batch_size, seed, labels)[0]


def sampling_choice(
    setting: str, lengths: Sequence[int], batch_size: int, seed: int, labels: Sequence[int] | None = None
) -> tuple[str, str]:
    """TRAIN_SAMPLING_STRATEGY resolved, and why: auto = group_by_length when it saves padding worth
    having and does not sort the batches by label (:func:`sorts_labels`). bench/sampling.py measured
    the pooled batches faster and as accurate over 3 seeds on small, imbalanced and mixed-length
    corpora, so a corpus's size does not turn it off (the Trainer's megabatches needed 200 batches)."""
    if setting != "auto":
        return setting, f"TRAIN_SAMPLING_STRATEGY = {setting}"
    share = padding_share(lengths, batch_size, seed)
    if share <= PADDING_WORTH_GROUPING:
        return RANDOM, f"shuffled, {share:.0%} of the tokens would be padding: too little to group by length"
    if sorts_labels(lengths, labels, batch_size, seed):
        return RANDOM, "grouped by length, each batch would hold one label (length tells the label)"
    return (
        GROUP_BY_LENGTH,
        f"shuffled, {share:.0%} of the tokens would be padding; grouped by length, labels stay mixed",
    )


def in_dataset_order(
    compute: Callable[[Any], dict[str, float]], order: Sequence[int]
) -> Callable[[Any], dict[str, float]]:
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
        return compute(
            EvalPrediction(
                predictions=back(prediction.predictions),
                label_ids=back(prediction.label_ids),
                inputs=back(prediction.inputs),
                losses=back(getattr(prediction, "losses", None)),
            )
        )

    return wrapped


class StepTrainer(Trainer):
    """The Trainer with the training step's sampling, evaluation order and last checkpoint.

    ``train_lengths``: token counts of the training rows (the length-grouped sampler uses them
    instead of reading every row); ``eval_order``: the validation rows in the order to evaluate
    them (None: as they are); ``compute_metrics`` must then be wrapped by :func:`in_dataset_order`.
    """

    def __init__(
        self,
        *args: Any,
        train_lengths: Sequence[int] | None = None,
        eval_order: Sequence[int] | None = None,
        document_training: DocumentTraining | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.train_lengths, self.eval_order = train_lengths, eval_order
        # batches of whole documents and the loss per document (steps/document_batches.py); None:
        # window training
        self.document_training = document_training
        self._document_batches: Any = None  # the training dataloader's DocumentBatchSampler
        if document_training is not None:
            # document_loss is a mean over one micro-batch's documents: the Trainer divides it by the
            # accumulation steps (it would not with class weights or a model taking num_items_in_batch)
            self.loss_is_scaled_for_ga = False
            self.add_callback(DocumentEpochs(self))

    def get_train_dataloader(self) -> Any:
        if self.document_training is None:
            return super().get_train_dataloader()
        from torch.utils.data import DataLoader

        from ml_exp.steps.document_batches import DocumentBatchSampler
        from ml_exp.toolkit.documents import WINDOW

        self._set_signature_columns_if_needed()
        keep = {*self._signature_columns, WINDOW}
        dataset = self.train_dataset.remove_columns([c for c in self.train_dataset.column_names if c not in keep])
        collate = self.data_collator

        def with_windows(features: list[dict[str, Any]]) -> dict[str, Any]:
            import torch

            batch = collate([{k: v for k, v in f.items() if k != WINDOW} for f in features])
            batch[WINDOW] = torch.tensor([int(f[WINDOW]) for f in features])
            return batch

        # per process, documents per batch: accelerate deals out whole batches to the ranks
        training = self.document_training
        # the last epoch (a tuning trial's single one too) always trains on documents
        window_epochs = min(training.window_epochs, max(math.ceil(self.args.num_train_epochs) - 1, 0))
        sampler = DocumentBatchSampler(
            training.windows,
            self.args.train_batch_size,
            seed=self.args.seed,
            window_epochs=window_epochs,
            grad_windows=training.grad_windows,
        )
        self._document_batches = sampler  # its epoch (set by DocumentEpochs) tells compute_loss the phase
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=with_windows, num_workers=0)
        return self.accelerator.prepare(loader)

    def _top_windows_logits(self, model: Any, inputs: dict[str, Any], windows: Any, keep: int) -> tuple[Any, Any]:
        """Every window scored without gradients, then each document's ``keep`` most confident
        windows again with them: memory for activations grows with ``keep`` per document, not
        with the documents' length, at the cost of one more forward pass over those windows."""
        import torch

        from ml_exp.steps.document_batches import top_windows

        with torch.no_grad():
            logits = model(**inputs).logits.detach()
        mask = top_windows(logits, windows, keep, self._multi_label_documents())
        outputs = model(**{k: v[mask] if torch.is_tensor(v) and len(v) == len(mask) else v for k, v in inputs.items()})
        logits = logits.clone().to(outputs.logits.dtype)
        logits[mask] = outputs.logits
        return logits, outputs

    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        from ml_exp.toolkit.documents import WINDOW

        if self.document_training is None or WINDOW not in inputs:  # evaluation: the window loss
            return super().compute_loss(model, inputs, *args, **kwargs)
        from ml_exp.steps.document_batches import document_loss, multi_label_document_loss

        return_outputs = bool(args[0]) if args else bool(kwargs.get("return_outputs"))
        if self._document_batches is not None and self._document_batches.window_phase:
            # CHUNK_WINDOW_EPOCHS: each window its document's label, windows of many documents a batch;
            # a mean over the micro-batch, as document_loss (the Trainer divides it by the accumulation)
            inputs = {k: v for k, v in inputs.items() if k != WINDOW}
            return super().compute_loss(model, inputs, return_outputs=return_outputs)
        training = self.document_training
        windows, labels = inputs.pop(WINDOW), inputs.pop("labels")
        keep = training.grad_windows
        if keep and int((windows == 0).sum()) * keep < len(windows):
            logits, outputs = self._top_windows_logits(model, inputs, windows, keep)
        else:
            outputs = model(**inputs)
            logits = outputs.logits
        loss_of = multi_label_document_loss if self._multi_label_documents() else document_loss
        loss = loss_of(logits, labels, windows, training.aggregation, training.weights)
        return (loss, outputs) if return_outputs else loss

    def _multi_label_documents(self) -> bool:
        return self.document_training is not None and self.document_training.multi_label

    # Trainer's own hooks for subclasses (transformers overrides them the same way in its
    # Seq2Seq and distillation trainers); the public API has no sampler or best-model hook.
    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if (
            self.args.train_sampling_strategy == GROUP_BY_LENGTH
            and self.train_lengths
            and len(self.train_lengths) == len(dataset)
        ):
            size = self.args.train_batch_size  # per process: accelerate deals out whole batches to the ranks
            pools = pool_batches(len(self.train_lengths), size)
            return PooledLengthSampler(self.train_lengths, size, seed=self.args.seed, pool_batches=pools)
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


def balanced_class_weights(train: Any, classes: int, np: Any) -> list[float]:
    """CLASS_WEIGHTS = balanced: records / (classes x records of the class) in the training split,
    as scikit-learn's ``compute_class_weight("balanced")`` (a class without records: weight 0)."""
    counts = np.bincount(np.asarray(train.with_format("numpy")["label"]), minlength=classes)[:classes]
    return [float(len(train) / (classes * n)) if n else 0.0 for n in counts]


def weighted_cross_entropy(weights: list[float]) -> Callable[..., Any]:
    """The Trainer's loss with class weights. Summed and divided by the items of the whole
    (accumulated) batch when the Trainer says how many, so gradient accumulation stays exact."""
    import torch

    table = torch.tensor(weights, dtype=torch.float32)

    def loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        total = torch.nn.functional.cross_entropy(
            logits.view(-1, logits.shape[-1]).float(), labels.view(-1), weight=table.to(logits.device), reduction="sum"
        )
        return total / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

    return loss


def balanced_positive_weights(train: Any, labels: int, np: Any) -> list[float]:
    """CLASS_WEIGHTS = balanced in multi-label: per label, its negatives / positives in the training
    split (BCE's ``pos_weight``), so a rare label's few positives weigh as much as its negatives
    (a label without positives: 1)."""
    rows = np.asarray(train.select_columns(["label"]).with_format("numpy")[:]["label"], dtype=np.float64)
    positives = rows.reshape(-1, labels).sum(axis=0)
    return [float((len(rows) - n) / n) if n else 1.0 for n in positives]


def binary_cross_entropy(positive_weights: list[float] | None) -> Callable[..., Any]:
    """The multi-label loss: a sigmoid per label, BCE averaged over every (row, label), with
    ``positive_weights`` per label when given. Summed and divided by the Trainer's item count
    (rows x labels) when it gives one, so gradient accumulation stays exact."""
    import torch

    table = None if positive_weights is None else torch.tensor(positive_weights, dtype=torch.float32)

    def loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        total = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.float(),
            labels.float(),
            pos_weight=None if table is None else table.to(logits.device),
            reduction="sum",
        )
        return total / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

    return loss


CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")


def last_complete_checkpoint(checkpoints: Path, log: Any = None) -> str | None:
    """The newest checkpoint that was completely written (a kill -9 can leave a partial one:
    the Trainer writes trainer_state.json after the weights and optimizer state). One with
    files missing since is skipped, naming them: an older one (or the start) rebuilds it."""
    if not checkpoints.is_dir():
        return None
    found = sorted(
        (
            p
            for p in checkpoints.glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
        ),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for folder in found:
        missing = [f for f in CHECKPOINT_FILES if not (folder / f).is_file()] + (
            [] if any((folder / w).is_file() for w in WEIGHTS) else [WEIGHTS[0]]
        )
        if not missing:
            return str(folder)
        if log is not None:
            log.warning(
                "%s is damaged (%s missing); not resuming from it: training goes on from an earlier checkpoint or the "
                "start",
                folder,
                ", ".join(missing),
            )
    return None

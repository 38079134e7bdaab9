"""Training: fine-tune each model with the HF Trainer (on Accelerate), best model into the run.

``run_training`` is the step: it runs where ``exp run`` runs and hands each model, with the best
values of this run's tuning when there are some, to the backend (local torchrun workers, a
SageMaker job); ``train_model`` is what every training process runs, top to bottom like HF
accelerate's ``nlp_example.py``. A tuning trial is a ``train_model`` too, into its trial folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from ml_exp.config.search_space import as_settings
from ml_exp.core.console import QUIET, VERBOSE, interactive, verbosity
from ml_exp.core.errors import StepError
from ml_exp.core.names import CHUNKS, MULTI_LABEL, TRAINING, TUNING
from ml_exp.experiment.context import Context
from ml_exp.experiment.functions import Functions, user_error
from ml_exp.steps import RunTask, Task, tracking_records
from ml_exp.steps.training_metrics import rehearse, trainer_metrics, validation_documents
from ml_exp.steps.tuning import best_params
from ml_exp.storage.layout import (
    LABELS,
    MODEL_LABELS,
    TRACKING_STATE,
    TRAINING_METRICS,
    checkpoint_dir,
    model_dir,
    model_key,
    trial_dir,
)
from ml_exp.toolkit.collate import batch_maker, tokenizer_of
from ml_exp.toolkit.decisions import DECISIONS, HF_PROBLEM_TYPES
from ml_exp.toolkit.documents import WINDOW
from ml_exp.toolkit.scoring import saved_processor


def run_training(ctx: Context, run_task: RunTask) -> dict[str, Any]:
    """Train every model of MODEL_NAMES, a task each that the backend runs until models/<model>/
    is complete; a model already saved in this run is kept, not retrained."""
    results: dict[str, Any] = {}
    tracked_as: dict[str, Any] = {}
    tuned_values = {name: best_params(ctx.run, name) for name in ctx.config.model_names}
    for model_name in ctx.config.model_names:
        if not ctx.run.is_complete(model_dir(model_name)):
            run_task(tuned(ctx, model_name, tuned_values[model_name]), Task(TRAINING, model_name))
            if not ctx.run.is_complete(model_dir(model_name)):
                raise StepError(
                    f"training of {model_name} ended but {ctx.run.path(model_dir(model_name))} is incomplete; see the "
                    "training logs"
                )
        else:
            ctx.log.info("%s: already trained in this run, kept", model_name)
        summary = ctx.run.read_json(f"{model_dir(model_name)}/{TRAINING_METRICS}")
        tracked_as[model_name] = summary.get("tracking")
        results[model_name] = {
            key: summary[key]
            for key in ("best_metric", "metric", "epochs", "world_size", "resumed_from", "train_samples_per_second")
        }
        results[model_name]["class_weights"] = summary.get("class_weights")
        results[model_name]["validation"] = summary["best_eval"]
    facts: dict[str, Any] = {"models": results, "metrics": {name: r["validation"] for name, r in results.items()}}
    facts["tracking"] = tracking_records(ctx, TRAINING, {name: tracked_as.get(name) for name in ctx.config.model_names})
    facts["hyperparameters"] = {name: best for name, best in tuned_values.items() if best}  # recorded as such
    return facts


def tuned(ctx: Context, model_name: str, best: dict[str, Any] | None) -> Context:
    """The context to train ``model_name`` with: ``best``, the best values of this run's tuning
    (:func:`ml_exp.steps.tuning.best_params`), if any."""
    if best is None:
        return ctx
    ctx.log.info("%s: training with the best values of tuning: %s", model_name, best["params"])
    return replace(ctx, config=ctx.config.with_overrides(as_settings(best["params"]), source=best["from"]))


def train_model(
    ctx: Context,
    udfs: Functions,
    model_name: str,
    data_dir: Path,
    checkpoints: Path,
    *,
    trial: str | None = None,
    callbacks: Sequence[Any] = (),
    on_model_saved: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune one model in this process (one rank of possibly several).

    ``trial``: a tuning trial of that name (its model goes to the trial's folder, its tracking
    to the tuning step); else the model goes to the run's model folder. What the place adds
    comes from its backend: ``callbacks``, Trainer callbacks (mirroring checkpoints to S3,
    SageMaker's metric lines, a study's pruning), before the tracking's own; ``on_model_saved``,
    called on rank 0 with the folder of the saved model (SageMaker's /opt/ml/model).
    """
    import datasets
    import numpy as np
    import torch
    from transformers import (
        EarlyStoppingCallback,
        PrinterCallback,
        ProgressCallback,
        TrainingArguments,
        enable_full_determinism,
        set_seed,
    )

    from ml_exp.steps.calibrate import best_evaluation, validation_decisions
    from ml_exp.steps.tracking import log_model_reference, record, tracked
    from ml_exp.steps.trainer import (
        GROUP_BY_LENGTH,
        RANDOM,
        StepTrainer,
        balanced_class_weights,
        balanced_positive_weights,
        binary_cross_entropy,
        eval_order,
        in_dataset_order,
        last_complete_checkpoint,
        sampling_choice,
        token_lengths,
        weighted_cross_entropy,
    )
    from ml_exp.steps.training_callbacks import Console, MetricLines, RankRecorder, WandbLog

    config = ctx.config
    labels = json.loads(ctx.run.read_text(LABELS))
    splits = datasets.load_from_disk(str(data_dir))
    # Before load_model: a new classification head is drawn from the global generators, so
    # without this, two runs with the same settings start from different weights.
    if config.full_determinism:
        enable_full_determinism(config.seed)
    else:
        set_seed(config.seed)
    processor = saved_processor(data_dir) or _call(
        f"load_processor({model_name!r})", udfs.load_processor, model_name, ctx
    )
    model = _call(f"load_model({model_name!r})", udfs.load_model, model_name, labels, ctx)
    if not isinstance(model, torch.nn.Module):
        raise StepError(
            f"load_model({model_name!r}) returned {'None' if model is None else 'a ' + type(model).__name__}; "
            "return a model, e.g. AutoModelForSequenceClassification.from_pretrained(model_name, "
            "num_labels=len(labels))"
        )
    if getattr(getattr(model, "config", None), "num_labels", len(labels)) != len(labels):
        raise StepError(
            f"load_model({model_name!r}) returned a model with {model.config.num_labels} outputs for {len(labels)} "
            "labels; pass num_labels=len(labels)"
        )

    multi_label = config.problem_type == MULTI_LABEL
    if hasattr(getattr(model, "config", None), "problem_type"):  # transformers' models pick loss and scores by it
        model.config.problem_type = HF_PROBLEM_TYPES[config.problem_type]
    elif multi_label:
        raise StepError(
            f"load_model({model_name!r}) returned a model without config.problem_type; PROBLEM_TYPE = multi_label "
            "needs a transformers classification model (its scores are read as one sigmoid per label)"
        )
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and 0 < positions < config.max_length:
        ctx.log.warning(
            "%s: the model has %d position embeddings, fewer than MAX_LENGTH = %d: longer rows fail or are cut; "
            "lower MAX_LENGTH to %d or build the model with more positions",
            model_name,
            positions,
            config.max_length,
            positions,
        )
    cuda = torch.cuda.is_available()
    if config.mixed_precision != "no" and not cuda:
        raise StepError(f"MIXED_PRECISION = {config.mixed_precision} needs a GPU; use MIXED_PRECISION = no on CPU")
    tokenizer = tokenizer_of(processor)  # a multimodal processor's own tokenizer
    pads = getattr(tokenizer, "pad_token", None) is not None
    input_name = (getattr(tokenizer, "model_input_names", None) or ["input_ids"])[0]
    train_lengths = token_lengths(splits["train"], input_name)
    train_labels = (
        splits["train"].with_format(None).data.column("label").to_numpy()
        if "label" in splits["train"].column_names and not multi_label
        else None
    )
    sampling, sampling_reason = sampling_choice(
        config.train_sampling_strategy, train_lengths, config.per_device_train_batch_size, config.seed, train_labels
    )
    if config.train_sampling_strategy == "auto" and config.document_strategy == CHUNKS and sampling == GROUP_BY_LENGTH:
        # not measured to help: the chunked demo learns on some seeds and not others in either
        # order (bench/sampling.py), so auto keeps the order every earlier result was made with
        sampling, sampling_reason = RANDOM, "DOCUMENT_STRATEGY = chunks: windows are shuffled (not measured to gain)"
    # evaluation in length order too, with the same switch (off: exactly the Trainer's default)
    order = eval_order(token_lengths(splits["validation"], input_name)) if sampling == GROUP_BY_LENGTH else None
    if config.train_sampling_strategy == "auto":
        ctx.log.info(
            "%s: training order %s (TRAIN_SAMPLING_STRATEGY = auto): %s", model_name, sampling, sampling_reason
        )
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.num_train_epochs,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        train_sampling_strategy=sampling,
        warmup_steps=min(config.warmup_ratio, 0.999),  # a float < 1 is a ratio (transformers 5)
        weight_decay=config.weight_decay,
        fp16=config.mixed_precision == "fp16",
        bf16=config.mixed_precision == "bf16",
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model=config.metric_for_best_model,
        save_total_limit=2,
        seed=config.seed,
        full_determinism=config.full_determinism,
        use_cpu=not cuda,
        # gloo between CPU ranks; None when alone (an explicit backend makes Accelerate expect a group)
        ddp_backend="gloo" if not cuda and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        ddp_find_unused_parameters=False,
        report_to="none",
        disable_tqdm=not interactive(),
    )
    ranks = RankRecorder()
    shows_metrics = any(isinstance(c, MetricLines) for c in callbacks)
    callbacks = [ranks, *callbacks, *([MetricLines()] if verbosity() == VERBOSE and not shows_metrics else [])]
    if config.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    balanced = config.class_weights == "balanced"
    if multi_label:
        weights = balanced_positive_weights(splits["train"], len(labels), np) if balanced else None
        loss = binary_cross_entropy(weights)
    else:
        weights = balanced_class_weights(splits["train"], len(labels), np) if balanced else None
        loss = weighted_cross_entropy(weights) if weights is not None else None
    documents = validation_documents(splits["validation"])
    compute_metrics = trainer_metrics(udfs, labels, ctx, documents)
    rehearse(compute_metrics, splits["validation"], len(labels))
    trainer = StepTrainer(
        model=model,
        args=args,
        data_collator=batch_maker(udfs, processor, ctx),
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=processor if pads else None,
        compute_metrics=in_dataset_order(compute_metrics, order) if order else compute_metrics,
        compute_loss_func=loss,
        callbacks=callbacks,
        train_lengths=train_lengths,
        eval_order=order,
        document_training=_document_training(config, splits["train"], weights),
    )
    if verbosity() != VERBOSE:  # the Trainer's raw dicts (and bars) give way to ours; -v brings them back
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        if verbosity() != QUIET:
            trainer.add_callback(Console(model_name, config.metric_for_best_model, interactive()))
    last = last_complete_checkpoint(checkpoints, ctx.log)
    if last:
        ctx.log.info("%s: resuming from %s", model_name, last)
    step = TUNING if trial else TRAINING
    with (
        tracked(ctx, model_key(model_name), step, trial=trial)
        if trainer.is_world_process_zero()
        else nullcontext() as wb
    ):
        if (
            wb is not None
        ):  # after the place's callbacks (a checkpoint mirrored): a step is logged once it can be resumed from
            trainer.add_callback(WandbLog(wb, ctx, None if trial else f"{checkpoint_dir(model_name)}/{TRACKING_STATE}"))
        result = trainer.train(resume_from_checkpoint=last)
        evaluated = best_evaluation(
            compute_metrics.evaluations, trainer.state.log_history, trainer.state.best_global_step
        )
        decisions = (
            None if trial else validation_decisions(trainer, splits["validation"], labels, config, documents, evaluated)
        )
        summary = {
            "model": model_name,
            "metric": config.metric_for_best_model,
            "best_metric": trainer.state.best_metric,
            # empty when the best model is the final one (its checkpoint is not written: training_trainer)
            "best_checkpoint": os.path.basename(trainer.state.best_model_checkpoint or ""),
            "best_global_step": trainer.state.best_global_step,
            "train_sampling_strategy": sampling,
            "train_sampling_reason": sampling_reason,
            "best_eval": _best_eval(trainer.state.log_history, trainer.state.best_global_step),
            "epochs": trainer.state.epoch,
            "global_step": trainer.state.global_step,
            "train_samples_per_second": result.metrics.get("train_samples_per_second"),
            "resumed_from": os.path.basename(last) if last else None,
            "pruned": any(getattr(c, "pruned", False) for c in callbacks),
            "world_size": args.world_size,
            "hyperparameters": {
                "learning_rate": args.learning_rate,
                "num_train_epochs": args.num_train_epochs,
                "per_device_train_batch_size": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "warmup_ratio": config.warmup_ratio,
                "weight_decay": args.weight_decay,
            },
            "class_weights": dict(zip(labels, weights)) if weights is not None else None,
            "problem_type": config.problem_type,
            "ranks": ranks.gather(),
            "tracking": record(wb) if wb is not None else None,
            "log_history": trainer.state.log_history,
        }
        folder = trial_dir(model_name, trial) if trial else model_dir(model_name)
        with tempfile.TemporaryDirectory(prefix=f"ml-exp-{step}-model-", dir=ctx.run.scratch_area()) as out:
            trainer.save_model(out)  # the best model (load_best_model_at_end), safetensors; rank 0 writes
            if trainer.is_world_process_zero():
                if hasattr(processor, "save_pretrained"):
                    processor.save_pretrained(out)
                Path(out, MODEL_LABELS).write_text(json.dumps(labels))
                if decisions is not None:
                    Path(out, DECISIONS).write_text(json.dumps(decisions, indent=2))
                Path(out, TRAINING_METRICS).write_text(json.dumps(summary, indent=2, default=str))
                ctx.run.put_dir(out, folder, overwrite=True)
                if on_model_saved is not None:
                    on_model_saved(Path(out))
        if wb is not None and not trial:
            log_model_reference(ctx, wb, model_key(model_name), folder)
    return summary


def _call(what: str, function: Callable[..., Any], *args: Any) -> Any:
    """Call one of the five functions (``ctx`` is always their last argument)."""
    try:
        return function(*args)
    except StepError:
        raise
    except Exception as exc:
        raise StepError(user_error(what, exc, args[-1].experiment_dir)) from exc


def _document_training(config: Any, train: Any, weights: list[float] | None) -> Any:
    """StepTrainer's document_training for CHUNK_TRAINING = document (None: window training)."""
    if config.chunk_training != "document" or config.document_strategy != CHUNKS:
        return None
    if WINDOW not in train.column_names:
        raise StepError(
            f"CHUNK_TRAINING = document: the training split has no {WINDOW!r} column; run preparation again"
        )
    from ml_exp.steps.document_batches import DocumentTraining

    return DocumentTraining(
        windows=train.with_format(None).data.column(WINDOW).to_pylist(),
        aggregation=config.chunk_aggregation,
        weights=weights,
        grad_windows=config.chunk_grad_windows,
        multi_label=config.problem_type == MULTI_LABEL,
        window_epochs=config.chunk_window_epochs,
    )


def _best_eval(history: list[dict[str, Any]], best_step: int | None) -> dict[str, float]:
    """The validation metrics of the best checkpoint (the last evaluation when unknown)."""
    evals = [h for h in history if any(k.startswith("eval_") for k in h)]
    chosen = next((h for h in evals if h.get("step") == best_step), evals[-1] if evals else {})
    return {k[len("eval_") :]: v for k, v in chosen.items() if k.startswith("eval_") and isinstance(v, (int, float))}

"""The Trainer callbacks of the training step: what each training process reports, and where.

- :class:`Console`: what a person watches (a progress bar on a terminal, one row per evaluation);
- :class:`MetricLines`: the lines SageMaker's metric definitions read, inside SageMaker jobs;
- :class:`WandbLog`: the tracker, each global step once across attempts;
- :class:`SyncCheckpoints`: each checkpoint mirrored into the run's storage;
- :class:`RankRecorder`: the optimizer steps of each rank, for the run's record.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback

from ml_exp.experiment.context import Context
from ml_exp.storage.layout import checkpoint_dir


class RankRecorder(TrainerCallback):
    """Counts the optimizer steps each rank took, so a run can show every rank took part."""

    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.steps += 1

    def gather(self) -> list[dict[str, Any]]:
        import socket

        import torch.distributed as dist

        mine = {
            "rank": int(os.environ.get("RANK", 0)),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "steps": self.steps,
        }
        if dist.is_available() and dist.is_initialized():
            everyone: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, mine)
            return everyone
        return [mine]


METRIC_LINE = "ml-exp-metric: {name}={value};"  # SageMaker metric definitions match these lines


class MetricLines(TrainerCallback):
    """One line per validation metric on stdout (rank 0), for SageMaker's metric definitions."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
        if state.is_world_process_zero:
            for name, value in (metrics or {}).items():
                if isinstance(value, (int, float)):
                    print(METRIC_LINE.format(name=name, value=value), flush=True)


class WandbLog(TrainerCallback):
    """The Trainer's logs to wandb, each global step once across attempts of the step.

    A step's logs (training loss, then validation metrics) go out together when its evaluation
    arrives; the step is first recorded in ``state_path`` (in the run's checkpoint folder), so
    that a resumed attempt, which redoes the steps after its checkpoint, skips the steps an
    earlier attempt already logged: the history stays strictly increasing. The end-of-training
    figures (train_runtime...) go to the run's summary, once."""

    FINAL = "train_runtime"

    def __init__(self, wb: Any, ctx: Context, state_path: str | None) -> None:
        self.wb, self.ctx, self.state_path = wb, ctx, state_path
        earlier = ctx.run.read_json(state_path) if state_path and ctx.run.exists(state_path) else {}
        self.logged = earlier.get("last_step", -1) if earlier.get("wandb_id") == wb.id else -1
        self.pending: dict[str, float] = {}
        self.pending_step: int | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        if self.FINAL in numbers:
            self.wb.summary.update(numbers)
            return
        step = state.global_step
        if step <= self.logged:
            return  # an earlier attempt logged this step
        if self.pending_step is not None and step != self.pending_step:
            self._flush()
        self.pending.update(numbers)
        self.pending_step = step
        if any(k.startswith("eval_") for k in numbers):
            self._flush()

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self._flush()

    def _flush(self) -> None:
        if self.pending_step is None:
            return
        step, values = self.pending_step, self.pending
        self.pending, self.pending_step = {}, None
        if self.state_path:  # recorded first: a step may go missing in a crash, never twice
            self.ctx.run.write_json(self.state_path, {"wandb_id": self.wb.id, "last_step": step}, overwrite=True)
        self.logged = step
        self.wb.log(values, step=step)


class SyncCheckpoints(TrainerCallback):
    """Mirror each saved checkpoint into the run's S3 checkpoints folder (as SageMaker's
    checkpoint_s3_uri does), so that a later attempt anywhere can resume from it (rank 0, which
    saves last; the local backend passes it when the run is on S3)."""

    def __init__(self, ctx: Context, model_name: str) -> None:
        self.ctx, self.model_name = ctx, model_name

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
        if not state.is_world_process_zero:
            return
        name = f"checkpoint-{state.global_step}"
        self.ctx.run.put_dir(
            os.path.join(args.output_dir, name), f"{checkpoint_dir(self.model_name)}/{name}", overwrite=True
        )


class Console(TrainerCallback):
    """What a person watches (rank 0): on a terminal, a progress bar of the steps of the epoch
    and of the epochs; on a terminal or not, one compact row per evaluation: epoch, training
    loss, validation loss, the best-model metric and accuracy, and ``*`` when the metric improves."""

    def __init__(self, model_name: str, metric: str, interactive: bool) -> None:
        self.model_name, self.metric, self.interactive = model_name, metric, interactive
        self.progress: Any = None
        self.best: float | None = None
        self.loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.interactive and state.is_world_process_zero:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            epochs = int(-(-args.num_train_epochs // 1))
            self.epochs = self.progress.add_task(
                f"{self.model_name} epochs", total=epochs, completed=int(state.epoch or 0)
            )
            self.steps = self.progress.add_task("steps of the epoch", total=max(1, state.max_steps // max(epochs, 1)))
            self.progress.start()

    def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.progress is not None:
            self.progress.reset(self.steps)

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.progress is not None:
            self.progress.advance(self.steps)

    def on_epoch_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.progress is not None:
            self.progress.update(self.epochs, completed=round(state.epoch or 0))

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
        if not state.is_world_process_zero or not metrics:
            return
        from ml_exp.toolkit.metrics import greater_is_better

        value = metrics.get(f"eval_{self.metric}")
        better = value is not None and (
            self.best is None or (value > self.best if greater_is_better(self.metric) else value < self.best)
        )
        if better:
            self.best = value
        cells = [
            f"{name} {number:.3f}"
            for name, number in (("loss", self.loss), ("eval_loss", metrics.get("eval_loss")))
            if number is not None
        ]
        cells += [
            f"{name} {number:.4f}"
            for name, number in (
                (self.metric, value),
                ("accuracy", metrics.get("eval_accuracy") if self.metric != "accuracy" else None),
            )
            if number is not None
        ]
        line = (
            f"{self.model_name} {state.epoch or 0:g}/{args.num_train_epochs:g}: "
            + " ".join(cells)
            + (" *" if better else "")
        )
        if self.progress is not None:
            self.progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

"""The steps: plain functions of the context (``ctx.config``, ``ctx.run``, ``ctx.log``) and the
experiment's functions, one module per step, named as the step (:data:`ml_exp.core.names.STEPS`).

Each step function returns a dict of facts for the manifest (counts, metrics, ...). Where a step
runs (this process, torchrun workers, a SageMaker job) is the backends' business; the paths it
reads and writes come from :mod:`ml_exp.storage.layout`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml_exp.config.search_space import Parameter, parse_space
from ml_exp.core.names import INFERENCE, PREPARATION, TRAINING, TUNING
from ml_exp.storage.layout import model_key

if TYPE_CHECKING:
    from ml_exp.experiment.context import Context

TASK_STEPS = (PREPARATION, TUNING, TRAINING, INFERENCE)


@dataclass(frozen=True)
class Task:
    """One piece of a step: ``step`` for ``model`` (None: every model at once, as preparation is).

    A tuning task is the search of one model over ``parameters``; it returns its trials under
    ``"trials"`` (``ml_exp.steps.tuning.Trial`` dicts) with whatever else the backend records.
    """

    step: str
    model: str | None = None
    parameters: tuple[Parameter, ...] = ()

    def __post_init__(self) -> None:
        if self.step not in TASK_STEPS:
            raise ValueError(f"a task's step is one of {', '.join(TASK_STEPS)}, not {self.step!r}")
        if (self.model is None) != (self.step == PREPARATION):
            raise ValueError(f"a {self.step} task {'needs' if self.model is None else 'takes no'} model")

    def __str__(self) -> str:
        return self.step if self.model is None else f"{self.step} of {self.model}"


# run_task(ctx, task): the backend runs the task where it runs tasks; the task's facts
RunTask = Callable[["Context", Task], dict[str, Any]]


def plan(ctx: Context, step: str) -> list[Task]:
    """The tasks of ``step`` in this run: preparation is one task for every model, the other
    steps one per model (tuning: the search of that model over TUNING_SPACE)."""
    if step == PREPARATION:
        return [Task(PREPARATION)]
    parameters = parse_space(ctx.config.tuning_space) if step == TUNING else ()
    return [Task(step, model, parameters) for model in ctx.config.model_names]


def tracking_records(ctx: Context, step: str, live: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Per model, where ``step`` is tracked (for the manifest): the wandb run's stable id, name,
    project and entity, and what the live run reported (its URL when online). {} when tracking is off."""
    from ml_exp.steps.tracking import planned

    records = {name: planned(ctx, model_key(name), step) for name in live}
    return {name: {**record, **(live[name] or {})} for name, record in records.items() if record is not None}

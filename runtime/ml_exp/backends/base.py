"""The one interface of a place where tasks run, and the tasks.

A step plans tasks (:class:`ml_exp.steps.Task`) (preparation; training, tuning or inference of one model), a backend
runs each where it runs tasks and the step finishes with the results; the steps never learn
where that was (kedro's runners and nodes are the model). What differs between places (mirroring
checkpoints to S3, SageMaker's metric lines and /opt/ml/model) is what a backend passes to the
step function as Trainer callbacks or hooks (:mod:`ml_exp.backends.execute`), never a flag of
the step. Reconciliation is no backend's business: it always runs where ``exp run`` runs,
because it reads the team's own sources.

A new place to run tasks (another job engine, a cluster) is one module, ``ml_exp/backends/<name>.py``
(or any importable module named by ``BACKEND``), whose ``BACKEND`` is an instance of a subclass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ml_exp.experiment.context import Context
from ml_exp.experiment.functions import Functions
from ml_exp.steps import Task

__all__ = ["Backend", "Facts", "Task"]

Facts = dict[str, Any]


class Backend(ABC):
    """Where tasks run.

    :meth:`run` runs one task to its end and leaves its outputs in the run's storage (the paths
    of :mod:`ml_exp.storage.layout`); ``ctx.config`` is the configuration to run with (for
    training: with the best values of tuning already applied). Failures the user can fix raise
    :class:`ml_exp.core.errors.UserError` (a :class:`~ml_exp.core.errors.StepError`).
    """

    name: ClassVar[str]

    @abstractmethod
    def run(self, task: Task, ctx: Context, functions: Functions) -> Facts:
        """Run ``task`` until its outputs are complete in ``ctx.run``; its facts for the manifest."""

    @abstractmethod
    def describe(self, task: Task, ctx: Context) -> list[str]:
        """``exp run --dry-run``: what running ``task`` would do here, as lines to show (a backend
        that submits jobs saves their specifications in the run and shows them)."""

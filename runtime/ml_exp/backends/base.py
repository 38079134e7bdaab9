"""The one interface of a place where steps run.

The pipeline picks a backend once (``BACKEND``, :func:`ml_exp.backends.backend_for`) and then
only says *what* runs; a backend says only *where and how*: in this machine's processes, or as
SageMaker jobs from the experiment's image. Reconciliation is no backend's business: it always
runs where ``exp run`` runs, because it reads the team's own sources.

A new place to run steps (another job engine, a cluster) is one new module in this package,
``ml_exp/backends/<name>.py`` (or a package) whose ``BACKEND`` is an instance of a subclass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ml_exp.experiment.context import Context
from ml_exp.config.search_space import Parameter
from ml_exp.steps.tuning import Trial
from ml_exp.experiment.functions import UDFs

Facts = dict[str, Any]


class Backend(ABC):
    """Where preparation, tuning trials, training and inference run.

    Each method runs one piece of a step to its end and leaves its outputs in the run's storage
    (the paths of :mod:`ml_exp.storage.layout`); the steps (:mod:`ml_exp.steps`) decide what runs and
    keep the results. ``ctx.config`` is the configuration to run with (for training: with the
    best values of tuning already applied). Failures the user can fix raise
    :class:`ml_exp.steps.StepError`.
    """

    name: ClassVar[str]

    @abstractmethod
    def prepare(self, ctx: Context, udfs: UDFs) -> Facts:
        """The preparation step: split, encode every model's data; its facts for the manifest."""

    @abstractmethod
    def search(self, ctx: Context, model_name: str, parameters: tuple[Parameter, ...]) -> list[Trial]:
        """The tuning step's search driver: run the trials of one model, each a training into its
        trial folder (:func:`ml_exp.steps.tuning.trial_settings` gives a trial's settings);
        resume an interrupted search. Returns every trial."""

    @abstractmethod
    def train(self, ctx: Context, model_name: str) -> Facts:
        """Train one model until the run's model folder for it is complete."""

    @abstractmethod
    def infer(self, ctx: Context, udfs: UDFs, model_name: str) -> Facts:
        """Test one model until the run's inference folder for it is complete."""

    @abstractmethod
    def describe(self, ctx: Context, step: str) -> list[str]:
        """``exp run --dry-run``: what ``step`` would do here, as lines to show (a backend that
        submits jobs saves their specifications in the run and shows them)."""

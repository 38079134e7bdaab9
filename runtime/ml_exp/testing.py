"""Helpers for an experiment's own tests (``tests/test_experiment.py`` of a baked experiment)."""

from __future__ import annotations

import os
from pathlib import Path

from ml_exp.config import load_config
from ml_exp.experiment.context import Context


def make_context(experiment_dir: str | os.PathLike[str] = ".") -> Context:
    """The ``ctx`` the five functions get, from the folder's settings.ini, outside any run."""
    return Context(config=load_config(Path(experiment_dir)))

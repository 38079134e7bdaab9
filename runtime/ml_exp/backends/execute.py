"""What every process that runs a task does, wherever it runs: the local backend's workers
(``local/worker.py``), a SageMaker job's container (``sagemaker/container.py``) and the backends
that run a task in their own process.

- :func:`open_task`: the settings, the run and the five functions of a task's process;
- :func:`execute`: the task's step function, with what the place adds (Trainer callbacks, a hook
  that receives the saved model) passed in by the backend, never as flags of the step;
- :func:`one_line`: a failure as the one line the launcher reports (a user's problem, or a full
  or read-only disk), or None for a bug (which keeps its traceback).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ml_exp.backends.base import Facts, Task
from ml_exp.config import load_config
from ml_exp.core.errors import UserError
from ml_exp.core.names import INFERENCE, PREPARATION, TRAINING, TUNING
from ml_exp.experiment.context import Context
from ml_exp.experiment.functions import Functions, load_functions
from ml_exp.storage.errors import io_problem
from ml_exp.storage.store import Store

# where a failing process leaves its message for whoever launched it (one file per rank)
ERROR_FILE = "ML_EXP_ERROR_FILE"


def open_task(
    experiment_dir: Path, run_num: int, overrides: Mapping[str, str] | None = None, source: str = ""
) -> tuple[Context, Functions]:
    """The context and the five functions a task's process runs with: the experiment's settings
    (settings.ini and the environment), ``overrides`` on top (a tuning trial's values), the run."""
    config = load_config(experiment_dir)
    if overrides:
        config = config.with_overrides(dict(overrides), source=source)
    run = Store.for_config(config).open_run(run_num)
    functions = load_functions(experiment_dir, config.udf_module, keep_loaded=True)
    return Context(config=config, run=run, log=logging.getLogger("ml_exp.experiment")), functions


def execute(
    task: Task,
    ctx: Context,
    functions: Functions,
    *,
    data_dir: Path | None = None,
    checkpoints: Path | None = None,
    trial: str | None = None,
    callbacks: Sequence[Any] = (),
    on_model_saved: Callable[[Path], None] | None = None,
) -> Facts:
    """Run ``task`` in this process (one rank of possibly several for training).

    Training (and a tuning ``trial``, a training into its trial folder) reads the prepared data
    from ``data_dir`` and keeps checkpoints in ``checkpoints``; ``callbacks`` are the place's
    Trainer callbacks and ``on_model_saved`` receives the folder of the saved model."""
    if task.step == PREPARATION:
        from ml_exp.steps.preparation import run_preparation

        return run_preparation(ctx, functions)
    assert task.model is not None
    if task.step in (TRAINING, TUNING):
        from ml_exp.steps.training import train_model

        if data_dir is None or checkpoints is None:
            raise ValueError(f"{task} needs the prepared data's folder and a checkpoint folder")
        return train_model(
            ctx,
            functions,
            task.model,
            data_dir,
            checkpoints,
            trial=trial,
            callbacks=callbacks,
            on_model_saved=on_model_saved,
        )
    assert task.step == INFERENCE, task
    from ml_exp.steps.inference import infer_model

    return infer_model(ctx, functions, task.model)


def one_line(exc: BaseException, near: str | None = None) -> str | None:
    """The one line a user needs for ``exc`` (a problem they can fix, or the path and errno of a
    full or read-only disk; ``near``: the folder being written); None for anything else."""
    if isinstance(exc, UserError):
        return str(exc)
    return io_problem(exc, near=near)


def leave_error(message: str, rank: int) -> None:
    """Leave ``message`` where the launcher reads it (``ML_EXP_ERROR_FILE``), if it asked."""
    if os.environ.get(ERROR_FILE):
        with contextlib.suppress(OSError):
            Path(f"{os.environ[ERROR_FILE]}.rank{rank}").write_text(json.dumps({"rank": rank, "error": message}))

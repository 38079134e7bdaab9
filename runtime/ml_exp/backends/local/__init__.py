"""The local backend: tasks run in this machine's processes.

Preparation and inference run in this process; training and each tuning trial run as
``NUM_PROCESSES`` workers (``python -m ml_exp.backends.local.worker``, its child half) under
torchrun. On CPU the workers use gloo (``accelerate launch --cpu`` would silently start one
process, so torchrun is used directly); on GPUs NCCL, one process per GPU. The workers get the
settings that differ from what they would read themselves as environment variables (tuned
values included), so they read exactly the configuration of the task that started them. Tuning
searches with optuna (:mod:`ml_exp.backends.local.search`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ml_exp.backends.base import Backend, Facts, Task
from ml_exp.backends.execute import ERROR_FILE, execute
from ml_exp.config import read_settings_file
from ml_exp.core.errors import StepError
from ml_exp.core.names import INFERENCE, PREPARATION, TRAINING, TUNING
from ml_exp.experiment.context import Context
from ml_exp.experiment.functions import Functions
from ml_exp.steps.tracking import own_service
from ml_exp.storage.layout import checkpoint_dir, prepared_dir

WORKER = "ml_exp.backends.local.worker"


class LocalBackend(Backend):
    name = "local"

    def run(self, task: Task, ctx: Context, functions: Functions) -> Facts:
        if task.step in (PREPARATION, INFERENCE):
            return execute(task, ctx, functions)
        assert task.model is not None
        if task.step == TUNING:
            from ml_exp.backends.local.search import optuna_search

            return {"trials": optuna_search(ctx, task.model, task.parameters, run_trial)}
        with tempfile.TemporaryDirectory(prefix=f"ml-exp-{TRAINING}-", dir=ctx.run.scratch_area()) as scratch:
            data = ctx.run.local_input(prepared_dir(task.model), scratch)
            launch(ctx, TRAINING, task.model, data, checkpoints_for(ctx, task.model, Path(scratch)))
        return {}

    def describe(self, task: Task, ctx: Context) -> list[str]:
        processes = f", {ctx.config.num_processes or 'auto'} process(es)" if task.step in (TRAINING, TUNING) else ""
        return [
            f"{task.step}: {'' if task.model is None else task.model + ' '}would run here{processes} (backend "
            f"{self.name})"
        ]


BACKEND = LocalBackend()


def training_callbacks(ctx: Context, model_name: str, trial: str | None) -> list[Any]:
    """What a worker's Trainer gets from this backend: each checkpoint mirrored into the run when
    it is on S3 (a trial's are thrown away), and the study's pruning for a tuning trial."""
    from ml_exp.backends.local.search import pruning_callbacks

    callbacks: list[Any] = []
    if ctx.run.is_remote and trial is None:
        from ml_exp.steps.training_callbacks import SyncCheckpoints

        callbacks.append(SyncCheckpoints(ctx, model_name))
    return [*callbacks, *pruning_callbacks(ctx.config)]


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so that killing `exp run` (even with -9)
    never leaves orphan training processes that go on writing into the run."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def gpu_count() -> int:
    """The GPUs torch sees. Without an NVIDIA (or ROCm) device on the machine, 0 without
    importing torch: that import alone took ~2 s of each training step here, in a process
    that trains nothing (the workers import torch themselves)."""
    import glob

    if (
        not glob.glob("/dev/nvidia[0-9]*")
        and not os.path.exists("/proc/driver/nvidia")
        and not os.path.exists("/dev/kfd")
    ):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def num_processes(ctx: Context, gpus: int | None = None) -> int:
    """NUM_PROCESSES: auto = one per GPU (1 without GPUs); an integer forces that many."""
    if ctx.config.num_processes is not None:
        return ctx.config.num_processes
    return max(1, gpu_count() if gpus is None else gpus)


def checkpoints_for(ctx: Context, model_name: str, scratch: Path) -> Path:
    """Where the Trainer writes checkpoints: the run's own folder on local storage (so a
    re-run resumes from it); on S3 a local copy of the run's checkpoints, which the workers
    mirror back after every save."""
    local_dir = ctx.run.local_dir(checkpoint_dir(model_name))
    if local_dir is not None:
        return local_dir
    local = scratch / "checkpoints"
    for name in ctx.run.listdir(checkpoint_dir(model_name)):
        if ctx.run.is_complete(f"{checkpoint_dir(model_name)}/{name}"):
            ctx.run.get_dir(f"{checkpoint_dir(model_name)}/{name}", str(local / name))
    return local


def run_trial(ctx: Context, model_name: str, trial: str, environment: dict[str, str]) -> None:
    """One tuning trial (``ctx.config`` holds its settings): the training path into the trial's
    folder, its checkpoints thrown away afterwards (an interrupted study re-runs unfinished trials)."""
    with tempfile.TemporaryDirectory(prefix=f"ml-exp-{TUNING}-", dir=ctx.run.scratch_area()) as scratch:
        data = ctx.run.local_input(prepared_dir(model_name), scratch)
        launch(ctx, TUNING, model_name, data, Path(scratch) / "checkpoints", trial=trial, environment=environment)


def launch(
    ctx: Context,
    step: str,
    model_name: str,
    data_dir: Path,
    checkpoints: Path,
    trial: str | None = None,
    environment: dict[str, str] | None = None,
) -> None:
    """Run the worker of ``step`` (training, or a tuning ``trial``) for one model in N processes,
    with the settings of ``ctx.config`` and ``environment``; StepError when it fails."""
    gpus = gpu_count()
    processes = num_processes(ctx, gpus)
    # The settings the workers would not read themselves (from settings.ini, or this environment):
    # tuned or smoke values, a trial's. (Only those: e.g. WANDB_MODE in the environment makes
    # transformers print a line at import.)
    in_file = read_settings_file(ctx.config.experiment_dir)
    changed = {key: value for key, value in ctx.config.raw.items() if os.environ.get(key, in_file.get(key)) != value}
    env = {**own_service(dict(os.environ)), **changed, **(environment or {})}
    if not gpus:
        env["ACCELERATE_USE_CPU"] = "1"
        # torchrun sets 1 thread per worker by default: share the cores instead.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    # One process needs no torchrun: started directly it skips torchrun's start-up and DDP's
    # single-rank wrapping (docs/benchmarks.md: 2-3 s per model, ~12% of tiny-model throughput).
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        if processes > 1
        else [sys.executable]
    )
    command = [
        *launcher,
        "-m", WORKER, step,
        "--experiment-dir", str(ctx.config.experiment_dir),
        "--run-num", str(ctx.run.num),
        "--model", model_name,
        "--data-dir", str(data_dir),
        "--checkpoints", str(checkpoints),
        *(["--trial", trial] if trial else []),
    ]  # fmt: skip
    ctx.log.info("%s of %s: %d process(es)", step, model_name, processes)
    # not in the run's scratch area: a full or read-only storage must not hide the error itself
    with tempfile.TemporaryDirectory(prefix=f"ml-exp-{step}-errors-") as errors:
        env[ERROR_FILE] = os.path.join(errors, "error")
        returncode = subprocess.run(command, env=env, preexec_fn=die_with_parent).returncode
        if returncode:
            messages = sorted(json.loads(p.read_text())["error"] for p in Path(errors).glob("error.rank*"))
            detail = messages[0] if messages else f"the workers exited with status {returncode} (their output is above)"
            raise StepError(f"{step} of {model_name}{f' ({trial})' if trial else ''} failed: {detail}")

"""The local backend: multi-process steps run as ``NUM_PROCESSES`` torchrun workers here.

On CPU the workers use gloo (``accelerate launch --cpu`` would silently start one process, so
torchrun is used directly); on GPUs NCCL, one process per GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ml_exp.context import Context
from ml_exp.steps import StepError, checkpoint_dir, local_input, prepared_dir

ERROR_FILE = "ML_EXP_ERROR_FILE"  # where a failing worker leaves its message for the launcher


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so that killing `exp run` (even with -9)
    never leaves orphan training processes that go on writing into the run."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def num_processes(ctx: Context) -> int:
    """NUM_PROCESSES: auto = one per GPU (1 without GPUs); an integer forces that many."""
    if ctx.config.num_processes is not None:
        return ctx.config.num_processes
    import torch

    return max(1, torch.cuda.device_count())


def train(ctx: Context, model_name: str) -> None:
    """Train one model in NUM_PROCESSES local workers, from the run's prepared data."""
    with tempfile.TemporaryDirectory(prefix="ml-exp-train-") as scratch:
        data = local_input(ctx.run, prepared_dir(model_name), scratch)
        launch(ctx, "training", model_name, data, checkpoints_for(ctx, model_name, Path(scratch)))


def checkpoints_for(ctx: Context, model_name: str, scratch: Path) -> Path:
    """Where the Trainer writes checkpoints: the run's own folder on local storage (so a
    re-run resumes from it); on S3 a local copy of the run's checkpoints, which the workers
    mirror back after every save."""
    if not ctx.run.store.is_s3:
        return Path(ctx.run.local_path_or_url(checkpoint_dir(model_name)))
    local = scratch / "checkpoints"
    for name in ctx.run.listdir(checkpoint_dir(model_name)):
        if ctx.run.is_complete(f"{checkpoint_dir(model_name)}/{name}"):
            ctx.run.get_dir(f"{checkpoint_dir(model_name)}/{name}", str(local / name))
    return local


def train_trial(ctx: Context, model_name: str, settings: dict[str, str], output: str, tracking_name: str) -> None:
    """One tuning trial: the training path with the trial's settings, its model into ``output``,
    its checkpoints thrown away afterwards (an interrupted study re-runs unfinished trials)."""
    with tempfile.TemporaryDirectory(prefix="ml-exp-trial-") as scratch:
        data = local_input(ctx.run, prepared_dir(model_name), scratch)
        extra = ["--output", output, "--tracking-name", tracking_name]
        launch(ctx, "training", model_name, data, Path(scratch) / "checkpoints", settings, extra)


def launch(
    ctx: Context,
    step: str,
    model_name: str,
    data_dir: Path,
    checkpoints: Path,
    settings: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> None:
    """Run ``ml_exp.worker <step>`` for one model in N processes; StepError when it fails.

    ``settings`` override the run's settings in the workers (environment variables)."""
    import torch

    processes = num_processes(ctx)
    env = {**os.environ, **ctx.extra.get("environment", {}), **(settings or {})}
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "1"
        # torchrun sets 1 thread per worker by default: share the cores instead.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    # One process needs no torchrun: started directly it skips torchrun's start-up and DDP's
    # single-rank wrapping (docs/benchmarks.md: 2-3 s per model, ~12% of tiny-model throughput).
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else [sys.executable]
    command = [
        *launcher,
        "-m", "ml_exp.worker", step,
        "--experiment-dir", str(ctx.config.experiment_dir),
        "--run-num", str(ctx.run.num),
        "--model", model_name,
        "--data-dir", str(data_dir),
        "--checkpoints", str(checkpoints),
        *(extra_args or []),
    ]  # fmt: skip
    ctx.log.info("%s of %s: %d process(es)", step, model_name, processes)
    with tempfile.TemporaryDirectory(prefix="ml-exp-errors-") as errors:
        env[ERROR_FILE] = os.path.join(errors, "error")
        returncode = subprocess.run(command, env=env, preexec_fn=die_with_parent).returncode
        if returncode:
            messages = sorted(json.loads(p.read_text())["error"] for p in Path(errors).glob("error.rank*"))
            detail = messages[0] if messages else f"the workers exited with status {returncode} (their output is above)"
            raise StepError(f"{step} of {model_name} failed: {detail}")

"""``python -m ml_exp.backends.sagemaker.container [step]``: a step inside a SageMaker job, from the
experiment's image (the child half of the SageMaker backend).

It reads SageMaker's training-job contract and calls the same step functions as the local
backend. What it reads (SageMaker sets all of it; :func:`emulate` sets it up locally):

- ``/opt/ml/input/config/hyperparameters.json``: ``{"step", "run", "model"}`` (strings); a tuning
  trial also gets its values, named like the settings (``learning_rate``...);
- the environment: every setting of the run (they override the image's settings.ini; a secret
  setting such as ``WANDB_API_KEY_SECRET`` is read from Secrets Manager first, :func:`secrets_loaded`),
  ``ML_EXP_EXPERIMENT_DIR`` (``/opt/ml/code``: settings.ini and the five functions),
  ``TRAINING_JOB_NAME``, ``SM_MODEL_DIR``, ``SM_CHANNEL_<NAME>``, ``RANK`` under torchrun;
- channels ``/opt/ml/input/data/<name>`` (training: ``prepared``), checkpoints in
  ``/opt/ml/checkpoints`` (SageMaker syncs them with the run's checkpoint folder of the model),
  and the model written to ``/opt/ml/model`` too, so SageMaker packs a deployable model.tar.gz.

The step's facts go to the run's jobs folder (:func:`ml_exp.storage.layout.job_result`) for the driver's
manifest. A tuning trial trains with its values within the per-trial budget
(:func:`ml_exp.steps.tuning.trial_settings`) into its trial folder, as a trial of the local backend.
``ML_EXP_SAGEMAKER_ROOT`` moves ``/opt/ml`` elsewhere (local emulation only).

``serve`` (what SageMaker runs in an endpoint's container, through the base image's ``serve``
script) serves the model SageMaker unpacked in ``/opt/ml/model`` (``exp deploy``'s bundle) on
port 8080 (``SAGEMAKER_BIND_TO_PORT``), with the predictor and server of ``exp serve``;
:func:`emulate_serve` starts it here the same way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ml_exp.backends.base import Task
from ml_exp.backends.execute import execute, open_task
from ml_exp.backends.sagemaker.jobs import CONTAINER, JOB_STEPS, SAGEMAKER_TRAIN_ARGUMENT
from ml_exp.core.names import TRAINING, TUNING
from ml_exp.experiment.context import Context
from ml_exp.experiment.functions import Functions

ROOT_VARIABLE = "ML_EXP_SAGEMAKER_ROOT"
# An endpoint's container starts as "<image> serve" (SageMaker's contract).
SERVE_ARGUMENT = "serve"
SERVE_PORT = 8080


def sagemaker_root() -> Path:
    return Path(os.environ.get(ROOT_VARIABLE, "/opt/ml"))


def hyperparameters(root: Path) -> dict[str, str]:
    path = root / "input" / "config" / "hyperparameters.json"
    if path.is_file():
        return {key: str(value) for key, value in json.loads(path.read_text()).items()}
    return json.loads(os.environ.get("SM_HPS", "{}"))


def main(argv: list[str] | None = None) -> int:
    from ml_exp.storage.layout import job_result

    argv = sys.argv[1:] if argv is None else argv
    root = sagemaker_root()
    if not secrets_loaded():
        return 1
    if argv and argv[0] == SERVE_ARGUMENT:
        return serve_model(root)
    hps = hyperparameters(root)
    step = argv[0] if argv and argv[0] != SAGEMAKER_TRAIN_ARGUMENT else hps.get("step", "")
    if step not in JOB_STEPS:
        print(
            f"{CONTAINER}: unknown step {step!r}; hyperparameter 'step' must be one of {', '.join(JOB_STEPS)}",
            file=sys.stderr,
        )
        return 2
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO, format=f"[{step} rank {rank}] %(levelname)s %(message)s", stream=sys.stderr)
    experiment_dir = Path(os.environ.get("ML_EXP_EXPERIMENT_DIR", root / "code"))
    overrides, trial, source = {}, None, ""
    if step == TUNING:  # a trial of SageMaker's tuner: its values (within the per-trial budget) override the settings
        from ml_exp.backends.sagemaker.tuner import trial_of
        from ml_exp.config import load_config
        from ml_exp.steps.tuning import trial_settings

        trial = trial_of(os.environ.get("TRAINING_JOB_NAME", ""))
        overrides, source = trial_settings(load_config(experiment_dir), tuned_values(hps)), f"{TUNING} {trial}"
    ctx, functions = open_task(experiment_dir, int(hps["run"]), overrides, source)
    facts = run_in_container(ctx, functions, Task(step, hps.get("model") or None), root, trial)
    if rank == 0:
        ctx.run.write_json(job_result(os.environ.get("TRAINING_JOB_NAME", "local")), facts, overwrite=True)
    return 0


def secrets_loaded() -> bool:
    """The secrets the settings name (WANDB_API_KEY_SECRET), from Secrets Manager into the
    environment, before anything (wandb) starts; False after saying why in one line (the job's
    CloudWatch log shows it)."""
    from ml_exp.backends.sagemaker.secret_store import SecretError, load_secrets

    try:
        load_secrets()
    except SecretError as exc:
        print(f"{CONTAINER}: {exc}", file=sys.stderr)
        return False
    return True


def tuned_values(hps: dict[str, str]) -> dict[str, float | int]:
    """The hyper-parameters named like a tunable setting (SageMaker's tuner sets them per trial), typed."""
    from ml_exp.config.search_space import TUNABLE

    return {name: _number(value) for name, value in hps.items() if name in TUNABLE}


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


def run_in_container(
    ctx: Context, functions: Functions, task: Task, root: Path, trial: str | None = None
) -> dict[str, Any]:
    """The task, run as every backend runs it (:func:`ml_exp.backends.execute.execute`), with
    SageMaker's paths: the prepared data's channel, /opt/ml/checkpoints (SageMaker syncs it with
    the run's checkpoint folder), SageMaker's metric lines, and the saved model copied into
    /opt/ml/model too, so that SageMaker packs a deployable model.tar.gz."""
    if task.step not in (TRAINING, TUNING):
        return execute(task, ctx, functions)
    from ml_exp.steps.training_callbacks import MetricLines

    data_dir = Path(os.environ.get("SM_CHANNEL_PREPARED", root / "input" / "data" / "prepared"))
    model_out = Path(os.environ.get("SM_MODEL_DIR", root / "model"))
    return execute(
        task,
        ctx,
        functions,
        data_dir=data_dir,
        checkpoints=root / "checkpoints",
        trial=trial,
        callbacks=[MetricLines()],
        on_model_saved=lambda saved: shutil.copytree(saved, model_out, dirs_exist_ok=True),
    )


def emulate(
    experiment_dir: Path,
    root: Path,
    step: str,
    run_num: int,
    model_name: str | None,
    channels: dict[str, Path],
    environ: dict[str, str],
    processes: int = 1,
    job_name: str | None = None,
) -> subprocess.CompletedProcess:
    """Run the entrypoint here as SageMaker would: a fresh /opt/ml-like tree under ``root``,
    the hyperparameters file, channels, ``SM_*`` variables; ``processes`` > 1 under torchrun."""
    config_dir = root / "input" / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "hyperparameters.json").write_text(
        json.dumps({"step": step, "run": str(run_num), "model": model_name or ""})
    )
    (config_dir / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    for folder in ("model", "checkpoints", "output/data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    env = {
        **environ,
        ROOT_VARIABLE: str(root),
        "ML_EXP_EXPERIMENT_DIR": str(experiment_dir),
        "TRAINING_JOB_NAME": job_name or f"emulated-{step}",
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_HPS": json.dumps({"step": step, "run": str(run_num), "model": model_name or ""}),
        "SM_CURRENT_HOST": "algo-1",
        "SM_HOSTS": json.dumps(["algo-1"]),
        "SM_NUM_GPUS": "0",
    }
    for name, path in channels.items():
        env[f"SM_CHANNEL_{name.upper()}"] = str(path)
    entry = [sys.executable, "-m", CONTAINER, SAGEMAKER_TRAIN_ARGUMENT]
    if processes > 1:
        entry = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            CONTAINER,
            SAGEMAKER_TRAIN_ARGUMENT,
        ]
        env["ACCELERATE_USE_CPU"] = "1"
    return subprocess.run(entry, cwd=experiment_dir, env=env, capture_output=True, text=True)


def serve_model(root: Path) -> int:
    """An endpoint's container: the bundle in <root>/model, served on SageMaker's port until stopped."""
    from ml_exp.core.errors import UserError
    from ml_exp.serving.bundle import Bundle
    from ml_exp.serving.predictor import Predictor
    from ml_exp.serving.server import listen, serve, serve_timeout

    logging.basicConfig(level=logging.INFO, format="[serve] %(levelname)s %(message)s", stream=sys.stderr)
    # every interface in a container (SageMaker connects from outside it); loopback when emulated
    host = os.environ.get("ML_EXP_SERVE_HOST", "0.0.0.0")
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", SERVE_PORT))
    experiment_dir = Path(os.environ.get("ML_EXP_EXPERIMENT_DIR", root / "code"))
    try:
        bundle = Bundle.from_folder(root / "model")
        timeout_s = serve_timeout(experiment_dir)
        sock = listen(host, port)
        predictor = Predictor(bundle, experiment_dir)
    except UserError as exc:  # StepError too: the endpoint fails to start; this line is what its CloudWatch log shows
        print(f"{CONTAINER} serve: {exc}", file=sys.stderr)
        return 1
    serve(
        predictor,
        host=host,
        port=port,
        announce=lambda message: print(message, file=sys.stderr, flush=True),
        sock=sock,
        timeout_s=timeout_s,
    )
    return 0


def emulate_serve(
    experiment_dir: Path, root: Path, model_archive: Path, port: int, environ: dict[str, str]
) -> subprocess.Popen:
    """Start an endpoint's container here as SageMaker would: ``model.tar.gz`` unpacked in
    <root>/model, ``serve`` as the argument, the image's environment plus the model's; the
    caller stops the process."""
    from ml_exp.serving.bundle import unpack

    unpack(model_archive, root / "model")
    env = {
        **environ,
        ROOT_VARIABLE: str(root),
        "ML_EXP_EXPERIMENT_DIR": str(experiment_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "ML_EXP_SERVE_HOST": "127.0.0.1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", CONTAINER, SERVE_ARGUMENT],
        cwd=experiment_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


if __name__ == "__main__":
    sys.exit(main())

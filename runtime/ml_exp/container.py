"""``python -m ml_exp.container [step]``: a step inside a SageMaker job, from the experiment's image.

It reads SageMaker's training-job contract and calls the same step functions as the local
backend. What it reads (SageMaker sets all of it; :func:`emulate` sets it up locally):

- ``/opt/ml/input/config/hyperparameters.json``: ``{"step", "run", "model"}`` (strings);
- the environment: every setting of the run (they override the image's settings.ini),
  ``ML_EXP_EXPERIMENT_DIR`` (``/opt/ml/code``: settings.ini and the five functions),
  ``TRAINING_JOB_NAME``, ``SM_MODEL_DIR``, ``SM_CHANNEL_<NAME>``, ``RANK`` under torchrun;
- channels ``/opt/ml/input/data/<name>`` (training: ``prepared``), checkpoints in
  ``/opt/ml/checkpoints`` (SageMaker syncs them with the run's ``checkpoints/<model>/``),
  and the model written to ``/opt/ml/model`` too, so SageMaker packs a deployable model.tar.gz.

The step's facts go to ``<run>/jobs/<job name>.result.json`` for the driver's manifest.
``ML_EXP_SAGEMAKER_ROOT`` moves ``/opt/ml`` elsewhere (local emulation only).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT_VARIABLE = "ML_EXP_SAGEMAKER_ROOT"
STEPS = ("preparation", "training", "inference")


def hps_output(root: Path) -> str:
    return hyperparameters(root).get("output", "")


def sagemaker_root() -> Path:
    return Path(os.environ.get(ROOT_VARIABLE, "/opt/ml"))


def hyperparameters(root: Path) -> dict[str, str]:
    path = root / "input" / "config" / "hyperparameters.json"
    if path.is_file():
        return {key: str(value) for key, value in json.loads(path.read_text()).items()}
    return json.loads(os.environ.get("SM_HPS", "{}"))


def main(argv: list[str] | None = None) -> int:
    from ml_exp.config import load_config
    from ml_exp.context import Context
    from ml_exp.store import Store
    from ml_exp.udf import load_udfs

    argv = sys.argv[1:] if argv is None else argv
    root = sagemaker_root()
    hps = hyperparameters(root)
    step = argv[0] if argv and argv[0] != "train" else hps.get("step", "")  # SageMaker passes "train"
    if step not in STEPS:
        print(f"ml_exp.container: unknown step {step!r}; hyperparameter 'step' must be one of {', '.join(STEPS)}", file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO, format=f"[{step} rank {rank}] %(levelname)s %(message)s", stream=sys.stderr)
    experiment_dir = Path(os.environ.get("ML_EXP_EXPERIMENT_DIR", root / "code"))
    os.environ.update(tuned_settings(hps))  # a tuning trial's values override the settings
    config = load_config(experiment_dir)
    if hps.get("output") == "tuning" and config.tuning_trial_epochs is not None:  # a trial's smaller budget
        os.environ["NUM_TRAIN_EPOCHS"] = repr(min(config.num_train_epochs, config.tuning_trial_epochs))
        config = load_config(experiment_dir)
    run = Store(config.storage_uri, config.experiment_name).open_run(int(hps["run"]))
    udfs = load_udfs(experiment_dir, config.udf_module, keep_loaded=True)
    ctx = Context(config=config, run=run, log=logging.getLogger("ml_exp.experiment"))
    facts = run_in_container(ctx, udfs, step, hps.get("model") or None, root)
    if rank == 0:
        run.write_json(f"jobs/{os.environ.get('TRAINING_JOB_NAME', 'local')}.result.json", facts, overwrite=True)
    return 0


def tuned_settings(hps: dict[str, str]) -> dict[str, str]:
    """Hyper-parameters named like a tunable setting (SageMaker's tuner sets them per trial)."""
    from ml_exp.search_space import TUNABLE

    return {name.upper(): str(value) for name, value in hps.items() if name in TUNABLE}


def run_in_container(ctx: Any, udfs: Any, step: str, model_name: str | None, root: Path) -> dict[str, Any]:
    """The same step functions as the local backend, with SageMaker's paths."""
    if step == "preparation":
        from ml_exp.steps.prepare import run_preparation

        return run_preparation(ctx, udfs)
    assert model_name, f"the {step} step needs the hyperparameter 'model'"
    if step == "training":
        from ml_exp.steps.train import train_model

        data_dir = Path(os.environ.get("SM_CHANNEL_PREPARED", root / "input" / "data" / "prepared"))
        model_out = Path(os.environ.get("SM_MODEL_DIR", root / "model"))
        output = None
        if hps_output(root) == "tuning":  # a trial of SageMaker's tuner: its own folder, no shared checkpoints
            from ml_exp.steps import model_key

            output = f"tuning/{model_key(model_name)}/{os.environ.get('TRAINING_JOB_NAME', 'trial')}"
        return train_model(ctx, udfs, model_name, data_dir, root / "checkpoints", export_to=model_out, output=output)
    from ml_exp.steps.infer import run_inference

    return run_inference(ctx, udfs, model_name)


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
    (config_dir / "hyperparameters.json").write_text(json.dumps({"step": step, "run": str(run_num), "model": model_name or ""}))
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
    entry = [sys.executable, "-m", "ml_exp.container", "train"]
    if processes > 1:
        entry = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", "ml_exp.container", "train"]
        env["ACCELERATE_USE_CPU"] = "1"
    return subprocess.run(entry, cwd=experiment_dir, env=env, capture_output=True, text=True)


if __name__ == "__main__":
    sys.exit(main())

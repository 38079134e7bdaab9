"""The SageMaker container entrypoint, run here under the emulated /opt/ml contract, produces the
same artifacts as the local backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml_exp.config import load_config
from ml_exp.backends.sagemaker.container import emulate
from tests.bake import bake

pytestmark = pytest.mark.slow
EXP = str(Path(sys.executable).with_name("exp"))


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_emulated_jobs_match_the_local_backend(tmp_path):
    project = bake(tmp_path, ticket="EXP-81", model_slug="container")
    env = {**os.environ, "WANDB_MODE": "disabled", "NUM_TRAIN_EPOCHS": "3", "EARLY_STOPPING_PATIENCE": "0"}
    # run_1: reconciliation here (as with BACKEND = sagemaker), the other steps as emulated jobs
    assert subprocess.run([EXP, "run", "--steps", "reconciliation"], cwd=project, env=env, capture_output=True).returncode == 0
    config = load_config(project, environ=env)
    settings = {**env, **dict(config.raw)}  # the job's environment carries every setting
    store = project / ".exp-store" / project.name
    run1 = store / "run_1"

    jobs = [
        ("preparation", None, {"reconciled": run1 / "data" / "reconciled"}),
        ("training", "tiny-bert", {"prepared": run1 / "data" / "prepared" / "tiny-bert"}),
        ("inference", "tiny-bert", {"prepared": run1 / "data" / "prepared" / "tiny-bert", "model": run1 / "models" / "tiny-bert"}),
    ]
    for step, model, channels in jobs:
        root = tmp_path / f"opt-ml-{step}"
        result = emulate(project, root, step, 1, model, channels, settings)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (run1 / "jobs" / f"emulated-{step}.result.json").is_file()
        if step == "training":
            exported = _tree(root / "model")
            assert {"model.safetensors", "config.json", "labels.json", "training_metrics.json"} <= exported
            assert any(p.name.startswith("checkpoint-") for p in (root / "checkpoints").iterdir())

    # run_2: the same steps by the local backend
    local = subprocess.run([EXP, "run"], cwd=project, env=env, capture_output=True, text=True)
    assert local.returncode == 0, local.stderr[-3000:]
    run2 = store / "run_2"
    for folder in ("data/reconciled", "data/prepared", "models/tiny-bert", "inference/tiny-bert"):
        assert _tree(run1 / folder) == _tree(run2 / folder), folder
    trained = [json.loads((run / "models" / "tiny-bert" / "training_metrics.json").read_text()) for run in (run1, run2)]
    assert trained[0]["global_step"] == trained[1]["global_step"]
    tested = [json.loads((run / "inference" / "tiny-bert" / "metrics.json").read_text()) for run in (run1, run2)]
    assert set(tested[0]) == set(tested[1])
    result = json.loads((run1 / "jobs" / "emulated-inference.result.json").read_text())
    assert result["metrics"] == tested[0]


def test_unknown_step_is_refused(tmp_path):
    project = bake(tmp_path, ticket="EXP-82", model_slug="container")
    result = emulate(project, tmp_path / "opt-ml", "tuning-typo", 1, None, {}, dict(os.environ))
    assert result.returncode == 2 and "unknown step 'tuning-typo'" in result.stderr

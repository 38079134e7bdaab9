"""Issue 14 with real training (tiny BERTs, real workers): reproducible runs, resumed training with
the run's own settings, damaged models, a user function's bad output, storage failing mid-training."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.bake import bake
from tests.test_pipeline import exp, run_dir
from tests.test_steps import write_experiment

pytestmark = pytest.mark.slow
QUIET = {"WANDB_MODE": "disabled"}


def manifest(project: Path, num: int = 1) -> dict:
    return json.loads((run_dir(project, num) / "manifest.json").read_text())


def unseeded_demo(tmp_path: Path, **answers: str) -> Path:
    """The demo, with its model built the way a Hub model's new head is: from the global random
    generators, without seeding them itself (only the runtime's seed makes it reproducible)."""
    project = bake(tmp_path, **answers)
    models = project / "demo_documents.py"
    source = models.read_text()
    assert "    torch.manual_seed(seed)\n" in source
    models.write_text(source.replace("    torch.manual_seed(seed)\n", ""))
    return project


def test_same_settings_and_data_give_the_same_metrics(tmp_path):
    project = unseeded_demo(tmp_path, ticket="EXP-140", model_slug="repro")
    for _ in range(2):
        result = exp("run", "--smoke", cwd=project, env=QUIET)
        assert result.returncode == 0, result.stdout + result.stderr
    first, second = (json.loads((run_dir(project, n) / "models" / "tiny-bert" / "training_metrics.json").read_text()) for n in (1, 2))
    losses = [[h.get("eval_loss") for h in t["log_history"] if "eval_loss" in h] for t in (first, second)]
    assert losses[0] and losses[0] == losses[1]
    timing = {"runtime", "samples_per_second", "steps_per_second"}
    assert {k: v for k, v in first["best_eval"].items() if k not in timing} == {k: v for k, v in second["best_eval"].items() if k not in timing}
    assert manifest(project, 1)["steps"]["inference"]["metrics"] == manifest(project, 2)["steps"]["inference"]["metrics"]
    assert manifest(project, 1)["settings"]["FULL_DETERMINISM"] == "false"  # the manifest says which


def test_resumed_training_uses_the_run_settings_or_the_accepted_ones(tmp_path):
    project = bake(tmp_path, ticket="EXP-141", model_slug="resume")
    env = {**QUIET, "NUM_TRAIN_EPOCHS": "1", "EARLY_STOPPING_PATIENCE": "0", "MAX_LENGTH": "32"}
    assert exp("run", "--steps", "reconciliation,preparation", cwd=project, env=env).returncode == 0
    refused = exp("run", "--run", "1", "--steps", "training", cwd=project, env={**env, "NUM_TRAIN_EPOCHS": "2", "LEARNING_RATE": "1e-6"})
    assert refused.returncode == 1 and "NUM_TRAIN_EPOCHS: is '2' now but was '1'" in refused.stderr
    assert manifest(project)["steps"]["training"] == {"status": "pending"}
    accepted = exp("run", "--run", "1", "--steps", "training", "--accept-changed-settings", cwd=project, env={**env, "NUM_TRAIN_EPOCHS": "2"})
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    training = json.loads((run_dir(project, 1) / "models" / "tiny-bert" / "training_metrics.json").read_text())
    assert training["epochs"] == 2 and training["hyperparameters"]["num_train_epochs"] == 2  # what the workers ran
    record = manifest(project)
    assert record["steps"]["training"]["settings_changed"] == {"NUM_TRAIN_EPOCHS": {"recorded": "1", "now": "2"}}
    assert record["settings"]["NUM_TRAIN_EPOCHS"] == "1"


@pytest.mark.parametrize("lost", ["model.safetensors", "config.json", "tokenizer.json"])
def test_damaged_model_names_the_missing_file_and_what_to_do(tmp_path, lost):
    project = bake(tmp_path, ticket="EXP-142", model_slug="damaged")
    assert exp("run", "--smoke", "--steps", "reconciliation,preparation,training", cwd=project, env=QUIET).returncode == 0
    (run_dir(project, 1) / "models" / "tiny-bert" / lost).unlink()
    result = exp("run", "--run", "1", "--steps", "inference", cwd=project, env=QUIET)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"models/tiny-bert is damaged: {lost} is missing" in result.stderr and "`exp run`" in result.stderr
    assert "run_1: inference failed (no step completed in this call)" in result.stderr
    assert manifest(project)["steps"]["inference"]["status"] == "failed"


def test_load_model_returning_none_is_named(tmp_path, monkeypatch):
    project = bake(tmp_path, ticket="EXP-143", model_slug="none", example="blank")
    write_experiment(project)  # its load_model returns None
    result = exp("run", cwd=project, env={**QUIET, "MODEL_NAMES": "plain"})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "load_model('plain') returned None; return a model" in result.stderr
    assert manifest(project)["steps"]["training"]["status"] == "failed"


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"mounting a tmpfs needs root (CAP_SYS_ADMIN): {mounted.stderr.strip()}")


@pytest.mark.parametrize(("options", "errno_name"), [("ro,size=1m", "EROFS"), ("size=64k", "ENOSPC")], ids=["read-only", "full"])
def test_storage_failing_mid_training_is_one_line_and_the_step_failed(tmp_path, options, errno_name):
    project = bake(tmp_path, ticket="EXP-144", model_slug="io")
    # two epochs, the smoke run's sizes otherwise: the checkpoint after the last epoch is not
    # written (nothing would resume from it), so one epoch would never touch the checkpoints
    small = {**QUIET, "NUM_TRAIN_EPOCHS": "2", "MAX_LENGTH": "32", "EARLY_STOPPING_PATIENCE": "0"}
    assert exp("run", "--steps", "reconciliation,preparation", cwd=project, env=small).returncode == 0
    checkpoints = run_dir(project, 1) / "checkpoints" / "tiny-bert"
    _mount(checkpoints, options)  # a real filesystem, read-only or nearly full, where checkpoints go
    try:
        result = exp("run", "--run", "1", "--steps", "training", cwd=project, env=small)
    finally:
        subprocess.run(["umount", str(checkpoints)], check=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    failure = next(line for line in result.stderr.splitlines() if "training: training of tiny-bert failed:" in line)
    assert f"({errno_name})" in failure and str(checkpoints) in failure, failure
    assert "manifest" not in result.stderr.splitlines()[-1]
    step = manifest(project)["steps"]["training"]
    assert step["status"] == "failed" and errno_name in step["error"]

"""Hyper-parameter tuning: the search-space syntax, and local optuna tuning on the training path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_exp.config.search_space import SearchSpaceError, as_settings, parse_space
from ml_exp.pipeline.validate import validate
from tests.bake import bake
from tests.wandb_records import offline_runs

EXP = str(Path(sys.executable).with_name("exp"))
SPACE = "learning_rate = log-uniform(1e-3, 5e-3); per_device_train_batch_size = choice(8, 16)"


def test_space_syntax_and_types():
    space = parse_space(
        "learning_rate = log-uniform(1e-5, 5e-4); per_device_train_batch_size = choice(8, 16, 32)\n"
        "  num_train_epochs = int(2, 5); warmup_ratio = uniform(0, 0.2)"
    )
    assert [(p.name, p.kind, p.is_int, p.log) for p in space] == [
        ("learning_rate", "log-uniform", False, True),
        ("per_device_train_batch_size", "choice", True, False),
        ("num_train_epochs", "int", True, False),
        ("warmup_ratio", "uniform", False, False),
    ]
    assert as_settings({"learning_rate": 3e-05, "per_device_train_batch_size": 16}) == {"LEARNING_RATE": "3e-05", "PER_DEVICE_TRAIN_BATCH_SIZE": "16"}


@pytest.mark.parametrize(
    ("term", "fragment"),
    [
        ("learning_rate = log-uniform(0, 1e-3)", "log-uniform needs low > 0"),
        ("learning_rate = uniform(1e-3, 1e-4)", "must be smaller than high"),
        ("dropout = uniform(0, 0.5)", "dropout cannot be tuned"),
        ("learning_rate = normal(0, 1)", "unknown distribution 'normal'"),
        ("per_device_train_batch_size = choice(8)", "at least two values"),
        ("per_device_train_batch_size = choice(8, 0)", "not a valid PER_DEVICE_TRAIN_BATCH_SIZE"),
        ("num_train_epochs = int(1.5, 3)", "takes whole numbers"),
        ("warmup_ratio = uniform(0, 2)", "not a valid WARMUP_RATIO"),
        ("learning_rate log-uniform(1e-5, 1e-3)", "write <name> = <distribution>"),
        ("learning_rate = uniform(a, 1)", "'a' is not a number"),
        ("learning_rate = uniform(1e-5, 1e-3); learning_rate = uniform(1e-5, 1e-3)", "appears twice"),
    ],
)
def test_bad_terms_are_refused_by_validate_naming_the_term(tmp_path, term, fragment):
    with pytest.raises(SearchSpaceError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_space(term)
    (tmp_path / "settings.ini").write_text(f"[settings]\nEXPERIMENT_NAME = EXP-1\nMODEL_NAMES = m\nWANDB_PROJECT = p\nRUN_TUNING = true\nTUNING_SPACE = {term}\n")
    report = validate(tmp_path, environ={})
    tuning = [p for p in report.problems if p.where == "TUNING_SPACE"]
    assert tuning and any(fragment in p.message for p in tuning)
    assert any(term.split("=")[0].strip() in p.message for p in tuning)  # names the term's parameter


def _tuning_env(trials: int) -> dict[str, str]:
    return {
        **os.environ, "RUN_TUNING": "true", "TUNING_SPACE": SPACE, "TUNING_TRIALS": str(trials),
        "TUNING_TRIAL_EPOCHS": "1", "NUM_TRAIN_EPOCHS": "2", "EARLY_STOPPING_PATIENCE": "0", "WANDB_MODE": "offline",
    }  # fmt: skip


@pytest.mark.slow
def test_tuning_then_training_uses_the_best_trial(tmp_path):
    project = bake(tmp_path, ticket="EXP-90", model_slug="tune")
    steps = "reconciliation,preparation,tuning,training"
    result = subprocess.run([EXP, "run", "--steps", steps], cwd=project, env=_tuning_env(3), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    run = project / ".exp-store" / project.name / "run_1"
    best = json.loads((run / "tuning" / "tiny-bert" / "best.json").read_text())
    trials = json.loads((run / "tuning" / "tiny-bert" / "trials.json").read_text())
    assert len(trials) == 3 and best["trials"] == 3
    complete = [t for t in trials if t["state"] == "completed"]
    winner = max(complete, key=lambda t: t["value"])
    assert (best["best_trial"], best["value"], best["params"]) == (winner["trial"], winner["value"], winner["params"])
    for trial in trials:  # each trial is a real training run with its own values
        summary = json.loads((run / "tuning" / "tiny-bert" / trial["trial"] / "training_metrics.json").read_text())
        assert summary["hyperparameters"]["learning_rate"] == pytest.approx(trial["params"]["learning_rate"])
        assert summary["hyperparameters"]["num_train_epochs"] == 1  # TUNING_TRIAL_EPOCHS
    trained = json.loads((run / "models" / "tiny-bert" / "training_metrics.json").read_text())
    assert trained["hyperparameters"]["learning_rate"] == pytest.approx(best["params"]["learning_rate"])
    assert trained["hyperparameters"]["per_device_train_batch_size"] == best["params"]["per_device_train_batch_size"]
    assert trained["hyperparameters"]["num_train_epochs"] == 2  # the budget is for trials only
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["steps"]["training"]["hyperparameters"]["tiny-bert"]["params"] == best["params"]
    assert manifest["steps"]["tuning"]["best"]["tiny-bert"]["best_trial"] == best["best_trial"]
    assert len(list((project / "wandb").glob("offline-run-*"))) >= 3 + 1 + 1  # trials, study summary, training


@pytest.mark.slow
def test_interrupted_study_resumes_without_rerunning_finished_trials(tmp_path):
    project = bake(tmp_path, ticket="EXP-91", model_slug="tune")
    env = {**_tuning_env(3), **{var: str(tmp_path / var.lower()) for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")}}
    folder = project / ".exp-store" / project.name / "run_1" / "tuning" / "tiny-bert"
    process = subprocess.Popen([EXP, "run", "--steps", "reconciliation,preparation,tuning"], cwd=project, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (folder / "study.db").exists():  # uploaded after each finished trial
        assert process.poll() is None, "tuning ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in (folder / "trial_0").iterdir()}
    assert "_COMPLETE" in finished

    resumed = subprocess.run([EXP, "run", "--run", "1", "--steps", "reconciliation,preparation,tuning"], cwd=project, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "tuning: resuming" in resumed.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "trial_0").iterdir()} == finished  # not re-run
    trials = json.loads((folder / "trials.json").read_text())
    assert sum(t["state"] in ("completed", "pruned") for t in trials) == 3
    assert trials[0]["trial"] == "trial_0" and trials[0]["state"] == "completed"
    # trial_0 ran once, before the kill, and the manifest names its wandb run by the same stable id
    manifest = json.loads((folder.parents[1] / "manifest.json").read_text())
    ids = manifest["steps"]["tuning"]["tracking"]["tiny-bert"]["trials"]
    assert set(ids) == {t["trial"] for t in trials} and len(set(ids.values())) == len(ids)
    trial_0 = [run for run in offline_runs(project / "wandb") if run.run_id == ids["trial_0"]]
    assert len(trial_0) == 1 and trial_0[0].config["trial"] == "trial_0" and trial_0[0].history

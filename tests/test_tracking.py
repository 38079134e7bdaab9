"""Tracking: stable wandb run ids, a resumed step continuing its wandb run with each global step
logged once, and the pointers between the run's storage and the tracker (offline wandb, read back)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from ml_exp.config import load_config
from ml_exp.experiment.context import Context
from ml_exp.storage.store import Store
from ml_exp.steps.tracking import planned, tracked, wandb_id
from tests.wandb_records import offline_runs


def make_ctx(tmp_path: Path, name: str = "EXP-7-track", **settings: str) -> Context:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    values = {"EXPERIMENT_NAME": name, "MODEL_NAMES": "tiny-bert", "WANDB_PROJECT": "ml-exp", "WANDB_MODE": "offline", **settings}
    (folder / "settings.ini").write_text("[settings]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    config = load_config(folder, environ={})
    run = Store(config.storage_uri, config.experiment_name).claim_run(None, {"git": {"commit": "abc123"}})
    return Context(config=config, run=run)


@pytest.fixture(autouse=True)
def wandb_dirs(tmp_path, monkeypatch):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("TRAINING_JOB_NAME", raising=False)


def test_wandb_ids_are_stable_valid_and_distinct(tmp_path):
    ctx = make_ctx(tmp_path)
    first = wandb_id(ctx, "tiny-bert", "training")
    assert first == wandb_id(ctx, "tiny-bert", "training")  # stable: an attempt finds the run of the one before
    assert first.startswith(f"EXP-7-track-r{ctx.run.num}-tiny-bert-training-")
    long = wandb_id(ctx, "org--" + "m" * 200, "tuning", "trial_12")
    ids = {first, long, wandb_id(ctx, "tiny-bert", "inference"), wandb_id(ctx, "tiny-bert", "tuning", "trial_0"),
           wandb_id(ctx, "tiny-bert", "tuning", "trial_1"), wandb_id(ctx, "tiny-bert", "tuning")}
    assert len(ids) == 6
    for value in ids:
        assert len(value) <= 64 and re.fullmatch(r"[A-Za-z0-9._-]+", value), value  # none of wandb's reserved :;,#?/'
    # names that read alike in another experiment of the same project get another id
    other = make_ctx(tmp_path, name="EXP-7")
    assert wandb_id(other, f"track-r{ctx.run.num}-tiny-bert", "training") != first


def test_tracking_off_records_nothing(tmp_path):
    ctx = make_ctx(tmp_path, WANDB_MODE="disabled")
    assert planned(ctx, "tiny-bert", "training") is None
    with tracked(ctx, "tiny-bert", "training") as wb:
        assert wb is None


def _log(callback, step: int, **values: float) -> None:
    callback.on_log(None, SimpleNamespace(global_step=step), None, logs={"epoch": step / 10, **values})


def test_a_resumed_step_continues_its_wandb_run_logging_each_step_once(tmp_path, monkeypatch):
    from ml_exp.steps.training_callbacks import WandbLog

    monkeypatch.setenv("TRAINING_JOB_NAME", "EXP-7-track-r1-train-tiny-bert-abc123")
    ctx = make_ctx(tmp_path)
    state = "checkpoints/tiny-bert/wandb.json"
    with tracked(ctx, "tiny-bert", "training") as wb:  # the first attempt: killed during epoch 2's evaluation
        first = WandbLog(wb, ctx, state)
        _log(first, 10, loss=0.9)
        _log(first, 10, eval_loss=0.8, eval_f1_macro=0.5)
        _log(first, 20, loss=0.7)  # its evaluation never came: not logged, not recorded
    assert ctx.run.read_json(state) == {"wandb_id": wb.id, "last_step": 10}
    with tracked(ctx, "tiny-bert", "training") as wb:  # resumed from checkpoint-10... or, on a lagging sync, from scratch
        second = WandbLog(wb, ctx, state)
        _log(second, 10, loss=0.95)
        _log(second, 10, eval_loss=0.85, eval_f1_macro=0.45)  # done again: the history keeps the first attempt's
        for step in (20, 30):
            _log(second, step, loss=0.5)
            _log(second, step, eval_loss=0.4, eval_f1_macro=0.75)
        _log(second, 30, train_runtime=12.5, train_loss=0.6)
        second.on_train_end(None, SimpleNamespace(global_step=30), None)

    attempts = offline_runs(ctx.experiment_dir / "wandb", finished=2)
    assert [a.run_id for a in attempts] == [wandb_id(ctx, "tiny-bert", "training")] * 2
    assert [[step for step, _ in a.history] for a in attempts] == [[10], [20, 30]]
    assert {k: v for k, v in attempts[0].history[0][1].items() if not k.startswith("_")} == {
        "epoch": 1.0, "loss": 0.9, "eval_loss": 0.8, "eval_f1_macro": 0.5}  # one row per step: loss and evaluation
    assert ["train_runtime" in a.summary for a in attempts] == [False, True]
    where = attempts[1].config
    assert where["storage"] == {"run_uri": ctx.run.uri, "manifest": f"{ctx.run.uri}/manifest.json"}
    assert where["git_commit"] == "abc123" and where["sagemaker_job"] == "EXP-7-track-r1-train-tiny-bert-abc123"
    assert ctx.run.read_json(state)["last_step"] == 30


def test_the_model_folder_is_referenced_not_uploaded(tmp_path):
    from ml_exp.steps.tracking import log_model_reference

    ctx = make_ctx(tmp_path)
    folder = Path(ctx.run.local_path_or_url("models/tiny-bert"))
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    with tracked(ctx, "tiny-bert", "training") as wb:
        log_model_reference(ctx, wb, "tiny-bert", "models/tiny-bert")
    (attempt,) = offline_runs(ctx.experiment_dir / "wandb", finished=1)
    (artifact,) = attempt.artifacts
    assert artifact["type"] == "model" and artifact["name"] == f"EXP-7-track-run_{ctx.run.num}-tiny-bert"
    assert "best" in artifact["aliases"]
    # entries point into the run's storage; none has a local copy staged for upload
    assert [(e["path"], e["ref"], e["local_path"]) for e in artifact["entries"]] == [
        ("tiny-bert/model.safetensors", f"{ctx.run.uri}/models/tiny-bert/model.safetensors", "")]


def test_a_tracker_that_cannot_start_does_not_stop_the_step(tmp_path, monkeypatch, caplog):
    import wandb

    def refuse(**kwargs):
        raise RuntimeError(f"run ID {kwargs['id']} is in use")

    monkeypatch.setattr(wandb, "init", refuse)
    ctx = make_ctx(tmp_path)
    with tracked(ctx, "tiny-bert", "training") as wb:
        assert wb is None
    assert "training goes on without tracking" in caplog.text and "is in use" in caplog.text


def test_each_process_of_a_step_owns_its_tracker_service():
    from ml_exp.steps.tracking import own_service

    inherited = {"WANDB_SERVICE": "2-1234-tcp-localhost-5678", "WANDB_MODE": "offline", "PATH": "/bin"}
    assert own_service(inherited) == {"WANDB_MODE": "offline", "PATH": "/bin"}

"""`exp run` end to end on a baked demo: real training (tiny BERTs), real torchrun processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.bake import bake
from tests.wandb_records import offline_runs

EXP = str(Path(sys.executable).with_name("exp"))
pytestmark = pytest.mark.slow


def exp(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([EXP, *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    return result


def screenshot_of_the_report(page: Path, name: str) -> None:
    """The report as Chromium shows it, kept with the test artifacts (where a browser exists)."""
    from tests.test_report_html import ARTIFACTS, browser_or_none

    browser = browser_or_none()
    if browser is None:
        return
    try:
        browser.get(page.as_uri())
        assert browser.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / name))
    finally:
        browser.quit()


def run_dir(project: Path, num: int) -> Path:
    return project / ".exp-store" / project.name / f"run_{num}"


def test_demo_end_to_end_then_a_second_run(tmp_path):
    project = bake(tmp_path, ticket="EXP-60", model_slug="e2e")
    # truncate: the demo's long documents cut to their first window keep this run short (the demo
    # as shipped, with chunks, runs in test_long_documents_e2e.py)
    quick = {"DOCUMENT_STRATEGY": "truncate"}
    first = exp("run", cwd=project, env={"MPLCONFIGDIR": str(tmp_path / "fresh-matplotlib"), **quick})
    assert first.returncode == 0, first.stdout + first.stderr
    run = run_dir(project, 1)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert [manifest["steps"][s]["status"] for s in ("reconciliation", "preparation", "training", "inference")] == ["completed"] * 4
    assert manifest["steps"]["reconciliation"]["counts"] == {"audit_report": 100, "contract": 100, "invoice": 100, "policy": 100}
    assert manifest["steps"]["preparation"]["split_sizes"] == {"train": 320, "validation": 40, "test": 40}

    model = run / "models" / "tiny-bert"
    assert {"model.safetensors", "config.json", "labels.json", "tokenizer.json", "training_metrics.json", "_COMPLETE"} <= {p.name for p in model.iterdir()}
    training = json.loads((model / "training_metrics.json").read_text())
    assert training["world_size"] == 1 and training["resumed_from"] is None
    assert [h for h in training["log_history"] if "eval_f1_macro" in h], "validation metrics each epoch"
    assert any(p.name.startswith("checkpoint-") for p in (run / "checkpoints" / "tiny-bert").iterdir())

    inference = run / "inference" / "tiny-bert"
    metrics = json.loads((inference / "metrics.json").read_text())
    # the first window decides a third of the documents (the passage at the start), the rest by chance
    assert metrics["accuracy"] > 0.35, f"test accuracy {metrics['accuracy']} should be above chance (0.25)"
    predictions = pq.read_table(inference / "predictions.parquet").to_pylist()
    assert len(predictions) == 40 and len({p["id"] for p in predictions}) == 40
    assert abs(sum(v for k, v in predictions[0].items() if k.startswith("score_")) - 1) < 1e-4
    accuracy = sum(p["true_label"] == p["predicted_label"] for p in predictions) / len(predictions)
    assert accuracy == pytest.approx(metrics["accuracy"])
    assert (inference / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "report.md").exists() and json.loads((run / "comparison.json").read_text())["best_model"] == "tiny-bert"
    assert list((project / "wandb").glob("offline-run-*")), "wandb offline runs"
    assert "accuracy" in first.stdout and "run_1 (completed)" in first.stdout
    # what a person watches, off a terminal: one row per evaluation, none of the libraries' noise
    said = first.stdout + first.stderr
    assert "tiny-bert 1/6: loss " in said and " f1_macro " in said and said.count(" *\n") >= 1
    for noise in ("ml-exp-metric:", "{'loss'", "{'eval_loss'", "fontManager", "LOAD REPORT", "Running in WANDB", " batches "):
        assert noise not in said, f"{noise!r} in the console output"
    assert max(len(line) for line in first.stdout.splitlines() if "file://" not in line) <= 80
    screenshot_of_the_report(run / "report.html", "report-demo.png")  # README's picture of report.html

    # Continuing run_1 re-runs nothing and overwrites nothing.
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")}
    again = exp("run", "--run", "1", "--steps", "inference", cwd=project, env=quick)
    assert again.returncode == 0, again.stderr
    assert "inference: already completed in run_1" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # A second run is a new, isolated folder.
    second = exp("run", "--steps", "reconciliation", cwd=project)
    assert second.returncode == 0 and second.stdout.startswith("run_2: ")
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_two_process_training_resumes_after_kill(tmp_path):
    """Killed after its first checkpoint, training resumes from it, and its wandb run goes on:
    one run id for both attempts, each global step logged once, the final figures once."""
    project = bake(tmp_path, ticket="EXP-61", model_slug="resume")
    env = {"NUM_PROCESSES": "2", "EARLY_STOPPING_PATIENCE": "0", "NUM_TRAIN_EPOCHS": "6", "WANDB_MODE": "offline",
           **{var: str(tmp_path / var.lower()) for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")}}
    checkpoints = run_dir(project, 1) / "checkpoints" / "tiny-bert"
    process = subprocess.Popen([EXP, "run", "--steps", "reconciliation,preparation,training"], cwd=project, env={**os.environ, **env}, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # exp run and its torchrun workers, mid-training
    process.wait()
    first_checkpoint = min(int(p.parent.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*/trainer_state.json"))
    manifest = json.loads((run_dir(project, 1) / "manifest.json").read_text())
    assert manifest["steps"]["training"]["status"] == "running"  # killed: nobody could mark it
    assert not (run_dir(project, 1) / "models" / "tiny-bert" / "_COMPLETE").exists()
    logged = json.loads((checkpoints / "wandb.json").read_text())  # the steps the killed attempt logged
    assert logged["last_step"] >= first_checkpoint  # a step is logged with its evaluation, before its checkpoint

    resumed = exp("run", "--run", "1", "--steps", "reconciliation,preparation,training", cwd=project, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "reconciliation: already completed" in resumed.stdout and "training: resuming" in resumed.stdout
    training = json.loads((run_dir(project, 1) / "models" / "tiny-bert" / "training_metrics.json").read_text())
    assert training["resumed_from"] is not None, (resumed.stdout + resumed.stderr)[-3000:]
    assert int(training["resumed_from"].split("-")[1]) >= first_checkpoint
    assert training["world_size"] == 2
    assert sorted(r["rank"] for r in training["ranks"]) == [0, 1]
    assert all(r["steps"] > 0 for r in training["ranks"]), training["ranks"]
    assert len({r["pid"] for r in training["ranks"]}) == 2
    manifest = json.loads((run_dir(project, 1) / "manifest.json").read_text())
    assert manifest["steps"]["training"]["attempt"] == 2

    # the tracker followed: both attempts wrote to one wandb run, which the manifest names
    tracking = manifest["steps"]["training"]["tracking"]["tiny-bert"]
    attempts = [r for r in offline_runs(project / "wandb", finished=1) if r.run_id == tracking["wandb_id"]]
    assert len(attempts) == 2 and tracking["project"] == "ml-exp" and tracking["mode"] == "offline"
    assert all(attempt.folder.name.endswith(tracking["wandb_id"]) for attempt in attempts)
    steps = [step for attempt in attempts for step, _ in attempt.history]  # SIGKILL: wandb may have lost the first attempt's
    assert steps == sorted(set(steps)), f"steps logged twice or backwards across attempts: {steps}"
    assert attempts[1].history and min(step for step, _ in attempts[1].history) > logged["last_step"]  # none logged again
    last_step, last_values = attempts[1].history[-1]
    assert last_step == training["global_step"] and "eval_f1_macro" in last_values and "loss" in last_values
    assert ["train_runtime" in attempt.summary for attempt in attempts] == [False, True]  # the final figures, once
    assert attempts[1].config["storage"]["run_uri"] == f"file://{run_dir(project, 1).resolve()}"
    assert attempts[1].config["storage"]["manifest"].endswith("/run_1/manifest.json") and "git_commit" in attempts[1].config
    listed = json.loads(exp("runs", "--json", cwd=project, env=env).stdout)
    assert listed[0]["tracking"]["training"]["tiny-bert"]["wandb_id"] == tracking["wandb_id"]


def test_smoke_comparison_of_two_models(tmp_path):
    project = bake(tmp_path, ticket="EXP-62", model_slug="compare", model_names="tiny-bert,tiny-bert-wide")
    result = exp("run", "--smoke", "--verbose", cwd=project, env={"WANDB_MODE": "disabled", "MPLCONFIGDIR": str(tmp_path / "fresh-matplotlib")})
    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert all(line in said for line in ("ml-exp-metric: eval_f1_macro=", "{'loss'", "fontManager")), said[-3000:]  # -v: all of it
    run = run_dir(project, 1)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["smoke"] is True and manifest["overrides"]["NUM_TRAIN_EPOCHS"] == "1"
    assert manifest["steps"]["reconciliation"]["records"] == 48  # 12 per label
    assert manifest["settings"]["MAX_LENGTH"] == "32"
    comparison = json.loads((run / "comparison.json").read_text())
    assert set(comparison["models"]) == {"tiny-bert", "tiny-bert-wide"}
    assert comparison["best_model"] in comparison["models"]
    report = (run / "report.md").read_text()
    assert "tiny-bert-wide" in report and "tiny-bert" in report
    for model in ("tiny-bert", "tiny-bert-wide"):
        assert (run / "models" / model / "model.safetensors").exists()
        assert (run / "inference" / model / "metrics.json").exists()
    assert (run / "comparison.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ('return classification_metrics(predictions, references, labels)', "compute_metrics (called before training on the validation labels) returned ['accuracy']; it must return a dict holding METRIC_FOR_BEST_MODEL = f1_macro"),
        ("demo_documents.tiny_bert(model_name, labels,", "returned a model with 2 outputs for 4 labels"),
        ("return classification_metrics(predictions, references, labels)#nan", "compute_metrics returned f1_macro = nan (METRIC_FOR_BEST_MODEL)"),
    ],
    ids=["metric-missing", "wrong-num-labels", "metric-nan"],
)
def test_training_failure_names_the_function_and_marks_the_step(tmp_path, broken, message):
    project = bake(tmp_path, ticket="EXP-63", model_slug="broken")
    source = (project / "experiment.py").read_text()
    replacement = {
        "return classification_metrics(predictions, references, labels)": 'return {"accuracy": classification_metrics(predictions, references, labels)["accuracy"]}',
        "demo_documents.tiny_bert(model_name, labels,": "demo_documents.tiny_bert(model_name, labels[:2],",
        "return classification_metrics(predictions, references, labels)#nan": 'return {**classification_metrics(predictions, references, labels), "f1_macro": float("nan")}',
    }[broken]
    broken = broken.split("#")[0]
    assert broken in source
    (project / "experiment.py").write_text(source.replace(broken, replacement, 1))
    result = exp("run", "--smoke", cwd=project, env={"WANDB_MODE": "disabled"})
    assert result.returncode == 1
    assert "training: training of tiny-bert failed: " in result.stderr and message in result.stderr, result.stderr[-2000:]
    assert "exp run --run 1" in result.stderr
    manifest = json.loads((run_dir(project, 1) / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["steps"]["training"]["status"] == "failed" and message in manifest["steps"]["training"]["error"]


def test_balanced_class_weights_help_the_rare_classes(tmp_path):
    """One frequent document type and three rare ones: CLASS_WEIGHTS = balanced lifts macro-F1 on
    the test split over none (same data, same seed), and the run records the weights."""
    project = bake(tmp_path, ticket="EXP-64", model_slug="imbalanced")
    source = (project / "experiment.py").read_text()
    uniform = (
        "    records = demo_documents.documents(DOCUMENTS_PER_LABEL, seed=ctx.config.seed)\n"
        '    if ctx.config.problem_type == "multi_label":  # some documents bind two types: a list of labels\n'
        "        records = demo_documents.bound_documents(records, seed=ctx.config.seed)\n"
        "    yield from records\n"
    )
    assert uniform in source
    (project / "experiment.py").write_text(source.replace(uniform, (
        '    keep = {"contract": 240, "audit_report": 16, "invoice": 16, "policy": 16}\n'
        "    for record in demo_documents.documents(240, seed=ctx.config.seed, sentences=(1, 3)):\n"
        '        if int(record["id"].rsplit("-", 1)[1]) < keep[record["label"]]:\n'
        "            yield record\n")))
    scores = {}
    for num, weights in enumerate(("none", "balanced"), start=1):
        # short documents, one window each: this test is about the class weights, not long documents
        result = exp("run", "-q", cwd=project, env={"WANDB_MODE": "disabled", "CLASS_WEIGHTS": weights, "SPLIT_RATIOS": "0.6,0.2,0.2",
                                                    "DOCUMENT_STRATEGY": "truncate", "NUM_TRAIN_EPOCHS": "10"})
        assert result.returncode == 0, result.stdout + result.stderr
        manifest = json.loads((run_dir(project, num) / "manifest.json").read_text())
        scores[weights] = manifest["steps"]["inference"]["metrics"]["tiny-bert"]["f1_macro"]
        recorded = manifest["steps"]["training"]["models"]["tiny-bert"]["class_weights"]
        if weights == "none":
            assert recorded is None
        else:  # 174 training records: 144 contracts, ~10 of each rare type
            assert recorded["contract"] < 0.35 and all(recorded[label] > 4 for label in ("audit_report", "invoice", "policy"))
    assert scores["balanced"] > scores["none"] + 0.1, scores

"""Reconciliation and preparation against malformed user functions: every error names the
function and the record, and leaves the step marked failed (in-process, no training)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ml_exp.pipeline.runner import StepFailed, run_pipeline
from ml_exp.storage.store import Store
from tests.bake import bake

# A valid experiment without ML libraries: a whitespace "tokenizer" and fixed records.
BASE = '''
LABELS = ["contract", "invoice", "policy"]


def records():
    for index in range(30):
        label = LABELS[index % 3]
        yield {"id": f"doc-{index}", "text": f"{label} words number {index}", "label": label}


def reconcile(ctx):
    yield from records()


def load_processor(model_name, ctx):
    return {"vocabulary": {}}


def encode(batch, processor, ctx):
    vocabulary = processor["vocabulary"]
    ids = [[vocabulary.setdefault(word, len(vocabulary) + 1) for word in text.split()][:8] for text in batch["text"]]
    ids = [row + [0] * (8 - len(row)) for row in ids]
    return {"input_ids": ids, "attention_mask": [[1 if t else 0 for t in row] for row in ids]}


def load_model(model_name, labels, ctx):
    return None


def compute_metrics(predictions, references, labels, ctx):
    return {"f1_macro": 0.0}
'''


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    project = bake(tmp_path, ticket="EXP-70", model_slug="steps", example="blank")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("MODEL_NAMES", "plain")
    return project


def write_experiment(project: Path, replace: dict[str, str] | None = None, append: str = "") -> None:
    source = BASE
    for old, new in (replace or {}).items():
        assert old in source, old
        source = source.replace(old, new)
    (project / "experiment.py").write_text(source + textwrap.dedent(append))


def manifest(project: Path, run: int = 1) -> dict:
    return Store((project / ".exp-store").as_uri(), project.name).open_run(run).read_manifest()


def test_valid_experiment_reconciles_and_prepares(project):
    write_experiment(project)
    run = run_pipeline(project, steps=["reconciliation", "preparation"], announce=lambda _: None)
    steps = run.read_manifest()["steps"]
    assert steps["reconciliation"]["counts"] == {"contract": 10, "invoice": 10, "policy": 10}
    assert steps["preparation"]["labels"] == ["contract", "invoice", "policy"]
    assert sum(steps["preparation"]["split_sizes"].values()) == 30
    assert json.loads(run.read_text("data/prepared/labels.json")) == ["contract", "invoice", "policy"]
    assert run.is_complete("data/prepared/plain")


RECONCILE_CASES = [
    ({"yield from records()": "yield from records()\n    yield ['not', 'a', 'dict']"}, "record #31 is a list"),
    ({'"id": f"doc-{index}", ': ""}, "record #1 has no 'id'"),
    ({'f"doc-{index}"': '"same"'}, "record #2 (id='same') repeats an id"),
    ({'"label": label}': '"label": "" if index == 4 else label}'}, "record #5 (id='doc-4') has no 'label'"),
    ({'"text": f"{label} words number {index}", ': '**({} if index == 6 else {"text": f"{label} words"}), '}, "record #7 (id='doc-6') lacks field(s) text"),
    ({"yield from records()": "yield next(records())\n    raise RuntimeError('database gone')"}, "reconcile raised RuntimeError after record #1: database gone"),
    ({'"label": label}': '"label": label, "split": "dev"}'}, "record #1 (id='doc-0') has split='dev'"),
    ({"yield from records()": "return 42"}, "reconcile"),
]


@pytest.mark.parametrize(("replace", "message"), RECONCILE_CASES, ids=[m for _, m in RECONCILE_CASES])
def test_bad_records_fail_reconciliation_naming_the_record(project, replace, message):
    write_experiment(project, replace)
    with pytest.raises(StepFailed) as caught:
        run_pipeline(project, steps=["reconciliation"], announce=lambda _: None)
    assert caught.value.step == "reconciliation"
    assert message in caught.value.message
    state = manifest(project)["steps"]["reconciliation"]
    assert state["status"] == "failed" and message in state["error"]
    assert not Store((project / ".exp-store").as_uri(), project.name).open_run(1).is_complete("data/reconciled")


PREPARATION_CASES = [
    ({'"attention_mask": [[1 if t else 0 for t in row] for row in ids]': '"attention_mask": [[1]] * 3'}, "column 'attention_mask' has 3 rows for a batch of 8 records (ragged output)"),
    ({'return {"input_ids": ids, "attention_mask": [[1 if t else 0 for t in row] for row in ids]}': "return [ids]"}, "encode for 'plain' returned a list"),
    ({'return {"input_ids": ids, ': 'return {"tokens": ids, '}, "no model input"),
    ({'return {"vocabulary": {}}': 'raise OSError("model not found: " + model_name)'}, "load_processor('plain') raised OSError: model not found: plain"),
    ({"    vocabulary = processor": "    if 'doc-3' in batch['id']: raise KeyError('title')\n    vocabulary = processor"}, "encode for 'plain' raised KeyError"),
    ({"label = LABELS[index % 3]": "label = 'only'"}, "classification needs at least 2"),
]


@pytest.mark.parametrize(("replace", "message"), PREPARATION_CASES, ids=range(len(PREPARATION_CASES)))
def test_bad_encoding_fails_preparation_naming_the_function(project, replace, message):
    write_experiment(project, replace)
    with pytest.raises(StepFailed) as caught:
        run_pipeline(project, steps=["reconciliation", "preparation"], announce=lambda _: None)
    assert caught.value.step == "preparation"
    assert message in caught.value.message
    steps = manifest(project)["steps"]
    assert steps["reconciliation"]["status"] == "completed"
    assert steps["preparation"]["status"] == "failed" and message in steps["preparation"]["error"]


def test_failed_step_is_resumed_and_completed_one_never_rerun(project):
    write_experiment(project, {'return {"vocabulary": {}}': 'raise OSError("offline")'})
    with pytest.raises(StepFailed):
        run_pipeline(project, steps=["reconciliation", "preparation"], announce=lambda _: None)
    reconciled = Store((project / ".exp-store").as_uri(), project.name).open_run(1).path("data/reconciled")
    shard = Path(reconciled.removeprefix("file://")) / "part-00000.parquet"
    before = shard.stat().st_mtime_ns
    write_experiment(project)  # the user fixes load_processor
    said: list[str] = []
    run = run_pipeline(project, steps=["reconciliation", "preparation"], run_num=1, announce=said.append,
                       accept_changed_code=True)  # the fixed experiment.py: other code than the run recorded
    assert any(s.startswith("reconciliation: already completed") for s in said)
    assert any(s.startswith("preparation: resuming (attempt 2") for s in said)
    assert run.read_manifest()["steps"]["preparation"]["status"] == "completed"
    assert shard.stat().st_mtime_ns == before


def test_split_honours_pinned_records_and_stratifies(project):
    write_experiment(project, {'"label": label}': '"label": label, **({"split": "test"} if index < 3 else {})}'})
    run = run_pipeline(project, steps=["reconciliation", "preparation"], announce=lambda _: None)
    import datasets

    prepared = datasets.load_from_disk(run.local_path_or_url("data/prepared/plain"))
    assert {"doc-0", "doc-1", "doc-2"} <= set(prepared["test"]["id"])
    assert not {"doc-0", "doc-1", "doc-2"} & set(prepared["train"]["id"])
    train_labels = prepared["train"]["label"]
    assert sorted(set(train_labels)) == [0, 1, 2]  # every class in train (stratified)
    everything = [i for split in prepared.values() for i in split["id"]]
    assert sorted(everything) == sorted(f"doc-{i}" for i in range(30))


def test_reconciliation_writes_several_shards(project, monkeypatch):
    import ml_exp.steps.reconciliation as reconcile

    monkeypatch.setattr(reconcile, "SHARD_ROWS", 7)
    write_experiment(project)
    run = run_pipeline(project, steps=["reconciliation"], announce=lambda _: None)
    assert run.read_manifest()["steps"]["reconciliation"]["shards"] == 5
    assert len([n for n in run.listdir("data/reconciled") if n.endswith(".parquet")]) == 5

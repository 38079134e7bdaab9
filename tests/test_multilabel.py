"""PROBLEM_TYPE = multi_label (issue 25): label lists checked at the record, iterative
stratification, a real multi-label training with thresholds, calibration and review routing,
and the same decisions in the inference step and `exp predict`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from ml_exp.pipeline.runner import StepFailed, run_pipeline
from ml_exp.storage.store import Store

from tests.bake import bake
from tests.test_steps import BASE as STEPS_BASE

# test_steps.py's experiment without ML libraries (a whitespace "tokenizer"), its labels lists:
# some empty, some of two labels
SINGLE_RECORDS = """    for index in range(30):
        label = LABELS[index % 3]
        yield {"id": f"doc-{index}", "text": f"{label} words number {index}", "label": label}
"""
LIST_RECORDS = """    for index in range(60):
        first, second = LABELS[index % 3], LABELS[(index + 1) % 3]
        label = [] if index % 10 == 9 else [first, second] if index % 4 == 0 else [first]
        yield {"id": f"doc-{index}", "text": " ".join(map(str, label)) + f" words number {index}", "label": label}
"""
assert SINGLE_RECORDS in STEPS_BASE
BASE = STEPS_BASE.replace(SINGLE_RECORDS, LIST_RECORDS)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    project = bake(tmp_path, ticket="EXP-250", model_slug="labels", example="blank")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("MODEL_NAMES", "plain")
    monkeypatch.setenv("PROBLEM_TYPE", "multi_label")
    return project


def write_experiment(project: Path, replace: dict[str, str] | None = None) -> None:
    source = BASE
    for old, new in (replace or {}).items():
        assert old in source, old
        source = source.replace(old, new)
    (project / "experiment.py").write_text(source)


def test_label_lists_are_reconciled_and_split_by_iterative_stratification(project):
    import datasets

    write_experiment(project)
    run = run_pipeline(project, steps=["reconciliation", "preparation"], announce=lambda _: None)
    steps = run.read_manifest()["steps"]
    # records per label they carry; (none) counts the empty lists
    assert steps["reconciliation"]["counts"] == {"(none)": 6, "contract": 23, "invoice": 23, "policy": 23}
    assert steps["reconciliation"]["records"] == 60
    assert steps["preparation"]["labels"] == ["contract", "invoice", "policy"]
    sizes = steps["preparation"]["split_sizes"]
    # iterative stratification keeps the labels' shares first, the sizes approximately
    assert sum(sizes.values()) == 60 and abs(sizes["train"] - 48) <= 2 and min(sizes.values()) >= 5
    counts = steps["preparation"]["label_counts"]
    for split, per_label in counts.items():  # every label in every split, in proportion
        for label, n in per_label.items():
            total = steps["reconciliation"]["counts"][label]
            assert abs(n - total * sizes[split] / 60) <= 2, (split, label, n)
    prepared = datasets.load_from_disk(str(Path(run.path("data/prepared/plain")[len("file://") :])))
    rows = prepared["train"]["label"]
    assert all(len(row) == 3 and set(row) <= {0.0, 1.0} for row in rows)  # one 0/1 per label: the BCE targets
    assert [0.0, 0.0, 0.0] in rows  # a document of none of the labels


BAD_LISTS = [
    ({"label = [] if": 'label = "contract" if index == 4 else [] if'}, "record #5 (id='doc-4') has label 'contract'"),
    ({"label = [] if": 'label = ["contract", 7] if index == 2 else [] if'}, "(id='doc-2') has 7 in its label list"),
    ({"label = [] if": 'label = ["policy", "policy"] if index == 3 else [] if'}, "label(s) 'policy' more than once"),
    ({"label = [] if": 'label = ["", "policy"] if index == 1 else [] if'}, "(id='doc-1') has '' in its label list"),
]  # fmt: skip


@pytest.mark.parametrize(("replace", "message"), BAD_LISTS, ids=range(len(BAD_LISTS)))
def test_bad_label_lists_are_refused_naming_the_record(project, replace, message):
    write_experiment(project, replace)
    with pytest.raises(StepFailed) as caught:
        run_pipeline(project, steps=["reconciliation"], announce=lambda _: None)
    assert message in caught.value.message
    assert not Store((project / ".exp-store").as_uri(), project.name).open_run(1).is_complete("data/reconciled")


def test_a_list_label_in_a_single_label_experiment_names_the_setting(project, monkeypatch):
    monkeypatch.setenv("PROBLEM_TYPE", "single_label")
    write_experiment(project)
    with pytest.raises(StepFailed) as caught:
        run_pipeline(project, steps=["reconciliation"], announce=lambda _: None)
    assert "record #1 (id='doc-0') has a list label ['contract', 'invoice']" in caught.value.message
    assert "PROBLEM_TYPE = multi_label" in caught.value.message


def test_multi_label_settings_are_checked(project, monkeypatch):
    from ml_exp.config import load_config
    from ml_exp.core.errors import ProblemsFound

    monkeypatch.setenv("LABEL_THRESHOLDS", "precision:1.5")
    monkeypatch.setenv("REVIEW_TARGET_PRECISION", "0")
    with pytest.raises(ProblemsFound) as caught:
        load_config(project)
    text = str(caught.value)
    assert "LABEL_THRESHOLDS" in text and "precision:<p> with 0 < p < 1" in text
    assert "REVIEW_TARGET_PRECISION" in text
    monkeypatch.setenv("PROBLEM_TYPE", "single_label")
    monkeypatch.setenv("LABEL_THRESHOLDS", "0.4")
    monkeypatch.setenv("REVIEW_TARGET_PRECISION", "0.95")
    with pytest.raises(ProblemsFound) as caught:
        load_config(project)
    assert "LABEL_THRESHOLDS: = 0.4 is used only by PROBLEM_TYPE = multi_label" in str(caught.value)


@pytest.fixture(scope="module")
def multi_label_demo(tmp_path_factory) -> tuple[Path, Path, dict]:
    """The document-types demo with PROBLEM_TYPE = multi_label (about a third of the documents bind
    two types), short documents read whole, trained for real with a tiny BERT."""
    project = bake(tmp_path_factory.mktemp("multilabel"), ticket="EXP-251", model_slug="bound")
    source = (project / "experiment.py").read_text()
    source = source.replace("DOCUMENTS_PER_LABEL = 100", "DOCUMENTS_PER_LABEL = 60")
    source = source.replace("seed=ctx.config.seed)\n", "seed=ctx.config.seed, sentences=(3, 6))\n", 1)
    (project / "experiment.py").write_text(source)
    env = {**os.environ, "WANDB_MODE": "disabled", "PROBLEM_TYPE": "multi_label", "DOCUMENT_STRATEGY": "truncate",
           "MAX_LENGTH": "128", "NUM_TRAIN_EPOCHS": "5", "PER_DEVICE_TRAIN_BATCH_SIZE": "4",
           "EARLY_STOPPING_PATIENCE": "0", "REVIEW_TARGET_PRECISION": "0.9", "TQDM_DISABLE": "1",
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}  # fmt: skip
    exp = str(Path(sys.executable).with_name("exp"))
    done = subprocess.run([exp, "run"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return project, project / ".exp-store" / project.name / "run_1", env


@pytest.mark.slow  # a real training of 5 epochs (about a minute)
def test_multi_label_demo_trains_decides_and_routes(multi_label_demo):
    import pyarrow.parquet as pq

    project, run, env = multi_label_demo
    labels = json.loads((run / "data/prepared/labels.json").read_text())
    saved = json.loads((run / "models/tiny-bert/decisions.json").read_text())
    assert saved["problem_type"] == "multi_label" and saved["labels"] == labels
    assert set(saved["thresholds"]) == set(labels)
    assert all(0 <= t["threshold"] <= 1 for t in saved["thresholds"].values())
    # a temperature per label, fitted by validation NLL (on 25 documents it need not lower the
    # binned calibration error; test_decisions_fitted_on_overconfident_scores... measures that)
    assert len(saved["calibration"]["temperature"]) == len(labels)
    assert all(0.049 <= t <= 20.1 for t in saved["calibration"]["temperature"])
    assert saved["review"]["target"] == 0.9

    metrics = json.loads((run / "inference/tiny-bert/metrics.json").read_text())
    assert {"f1_micro", "f1_macro", "f1_samples", "subset_accuracy", "hamming_loss"} <= set(metrics)
    assert metrics["f1_micro"] > 0.6, metrics  # above every label everywhere (about 0.5): the passages are learnt
    decided = json.loads((run / "inference/tiny-bert/decisions.json").read_text())
    review = decided["review"]
    assert review["target_precision"] == 0.9 and review["validation_coverage"] is not None
    assert review["test_coverage"] is not None  # the test split's coverage next to the target

    table = pq.read_table(run / "inference/tiny-bert/predictions.parquet").to_pylist()
    bound = [row for row in table if len(row["true_label"]) == 2]
    assert bound, "the test split has documents of two types"
    for row in table:
        assert set(row["predicted_label"]) <= set(labels)
        assert len(row["evidence_window"]) == len(row["predicted_label"])  # one window per predicted label
        assert isinstance(row["needs_review"], bool)
    right = [set(row["true_label"]) == set(row["predicted_label"]) for row in table]
    automated = [r for r, row in zip(right, table) if not row["needs_review"]]
    if automated:
        assert review["test_precision"] == pytest.approx(sum(automated) / len(automated))

    # exp predict decides as the inference step did
    sys.path.insert(0, str(project))
    try:
        import demo_documents

        sample = list(demo_documents.bound_documents(demo_documents.documents(2, seed=9, sentences=(3, 6)), seed=9))
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("demo_documents", None)
    lines = "\n".join(json.dumps(r) for r in sample[:6]) + "\n"
    exp = str(Path(sys.executable).with_name("exp"))
    done = subprocess.run(
        [exp, "predict", "-", "--run", "1"], cwd=project, env=env, input=lines, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    predictions = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(predictions) == 6
    for prediction, record in zip(predictions, sample):
        assert isinstance(prediction["prediction"], list) and prediction["label"] == record["label"]
        assert isinstance(prediction["needs_review"], bool) and 0 <= prediction["confidence"] <= 1

    # exp serve answers as exp predict does, needs_review and per-label evidence included
    from tests.test_serving import free_port, stop, wait_until_up

    port = free_port()
    server = subprocess.Popen(
        [exp, "serve", "--run", "1", "--port", str(port)], cwd=project, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}", server)
        served = requests.post(f"http://127.0.0.1:{port}/invocations", json=sample[:6], timeout=60)
        assert served.status_code == 200, served.text
        for got, want in zip(served.json(), predictions):
            assert got["prediction"] == want["prediction"] and got["needs_review"] == want["needs_review"]
            assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)
        url = f"http://127.0.0.1:{port}/invocations"
        refused = requests.post(url, json={**sample[0], "label": "contract"}, timeout=30)
        assert refused.status_code == 400 and "must be a list of labels" in refused.text
    finally:
        stop(server)

    bad = json.dumps({**sample[0], "label": ["contract", "letter"]}) + "\n"
    done = subprocess.run(
        [exp, "predict", "-", "--run", "1"], cwd=project, env=env, input=bad, capture_output=True, text=True
    )
    assert done.returncode != 0 and "label 'letter' is not one of the model's labels" in done.stderr


def test_single_label_models_are_calibrated_and_decide_as_before(trained_run):
    """The default (single_label, CALIBRATION = temperature): the winning class is the uncalibrated
    argmax, the scores are the calibrated ones, and no review column appears without a target."""
    import numpy as np
    import pyarrow.parquet as pq

    saved = json.loads((trained_run.run_dir / "models/tiny-bert/decisions.json").read_text())
    assert saved["problem_type"] == "single_label" and isinstance(saved["calibration"]["temperature"], float)
    assert "review" not in saved and "thresholds" not in saved
    table = pq.read_table(trained_run.run_dir / "inference/tiny-bert/predictions.parquet")
    assert "needs_review" not in table.column_names
    labels = json.loads((trained_run.run_dir / "data/prepared/labels.json").read_text())
    scores = np.stack([table.column(f"score_{label}").to_numpy() for label in labels], axis=1)
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert [labels[i] for i in scores.argmax(axis=1)] == table.column("predicted_label").to_pylist()
    decided = json.loads((trained_run.run_dir / "inference/tiny-bert/decisions.json").read_text())
    assert decided["calibration"]["test_ece"] is not None


def _config(**values):
    from types import SimpleNamespace

    base = {"problem_type": "single_label", "calibration": "temperature", "label_thresholds": "f1",
            "review_target_precision": None}  # fmt: skip
    return SimpleNamespace(**{**base, **values})


def test_decisions_fitted_on_overconfident_scores_calibrate_and_route():
    """Scores 3x too confident (logits x 3): the fitted temperature brings the calibration error
    down, never changes the winning class, and the review threshold meets its target on the split
    it was chosen on; the same decisions read back from their file decide alike."""
    import numpy as np
    from ml_exp.steps.calibrate import fit_decisions
    from ml_exp.toolkit.decisions import Decisions, probabilities

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 2000)
    logits = rng.normal(0, 1, (2000, 3)) + 1.5 * np.eye(3)[truth]
    scores = probabilities(3 * logits, multi_label=False)
    saved = fit_decisions(scores, truth, ["a", "b", "c"], _config(review_target_precision=0.9))
    calibration = saved["calibration"]
    assert calibration["temperature"] > 1.5  # softened
    assert calibration["after"]["ece"] < calibration["before"]["ece"] / 3
    decisions = Decisions.from_dict(json.loads(json.dumps(saved)), ["a", "b", "c"])
    calibrated = decisions.calibrated(scores)
    assert (calibrated.argmax(axis=1) == scores.argmax(axis=1)).all()
    automated = ~np.asarray(decisions.needs_review(calibrated))
    assert 0 < automated.mean() < 1
    assert (calibrated.argmax(axis=1) == truth)[automated].mean() >= 0.9
    assert saved["review"]["coverage"] == pytest.approx(automated.mean())
    with pytest.raises(ValueError, match="not the model's"):
        Decisions.from_dict(saved, ["a", "b"])


def test_multi_label_decisions_pick_a_threshold_per_label():
    """A rare label whose scores run low gets a lower threshold than 0.5; every label's threshold
    reaches a precision target where one can."""
    import numpy as np
    from ml_exp.steps.calibrate import fit_decisions
    from ml_exp.toolkit.decisions import Decisions

    rng = np.random.default_rng(1)
    truth = (rng.random((1500, 2)) < [0.5, 0.1]).astype(int)
    scores = np.clip(truth * [0.7, 0.35] + rng.normal(0, 0.12, truth.shape) + [0.15, 0.05], 0.001, 0.999)
    saved = fit_decisions(scores, truth, ["common", "rare"], _config(problem_type="multi_label", calibration="none"))
    thresholds = {label: t["threshold"] for label, t in saved["thresholds"].items()}
    assert thresholds["rare"] < 0.5 < thresholds["common"] + 0.2
    decisions = Decisions.from_dict(saved, ["common", "rare"])
    predicted = decisions.predicted(scores)
    assert predicted.shape == truth.shape and set(np.unique(predicted)) <= {0, 1}
    assert decisions.label_names([1, 1]) == ["common", "rare"] and decisions.label_names([0, 0]) == []
    strict = fit_decisions(
        scores, truth, ["common", "rare"], _config(problem_type="multi_label", label_thresholds="precision:0.95")
    )
    assert all(t["precision"] >= 0.95 for t in strict["thresholds"].values() if t["met"])


def test_windows_combine_per_label_with_each_labels_own_evidence():
    import numpy as np
    from ml_exp.toolkit.documents import combine_labels

    windows = np.array([[0.1, 0.9], [0.8, 0.2], [0.8, 0.1], [0.3, 0.3]])  # document 1: rows 0-2; 2: row 3
    scores, evidence = combine_labels(windows, [0, 3], "max")
    assert np.allclose(scores, [[0.8, 0.9], [0.3, 0.3]])
    assert evidence.tolist() == [[1, 0], [0, 0]]  # label 0 first reaches 0.8 in window 1
    means, _ = combine_labels(windows, [0, 3], "mean")
    assert means[0].tolist() == pytest.approx([1.7 / 3, 1.2 / 3])


def test_multi_label_document_loss_reaches_each_labels_deciding_window():
    """CHUNK_TRAINING = document in multi-label: each label's probability is its best window's
    (max), the loss is the documents' BCE, and a label's gradient reaches only that window."""
    import torch
    from ml_exp.steps.document_batches import multi_label_document_loss

    logits = torch.tensor([[2.0, -1.0], [-1.0, 0.5], [0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    windows = torch.tensor([0, 1, 2, 0])  # document 1: rows 0-2; document 2: row 3
    labels = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    loss = multi_label_document_loss(logits, labels, windows, "max")
    p = torch.sigmoid(torch.tensor([[2.0, 0.5], [1.0, 1.0]]))
    target = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy(p, target)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    touched = (logits.grad != 0).tolist()
    assert touched == [[True, False], [False, True], [False, False], [True, True]]
    weighted = multi_label_document_loss(logits.detach(), labels, windows, "max", positive_weights=[1.0, 3.0])
    assert float(weighted) > float(loss)

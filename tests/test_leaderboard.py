"""exp leaderboard, the model registry and champion/challenger.

Fast: the paired bootstrap on a real difference and on none, its metrics against scikit-learn,
the registry's records, DATA_FROM's names. Slow (one module of three real runs in one storage,
each a few seconds of training): two experiments, the second reusing the first's data with
DATA_FROM, ranked together on one test split, a third with its own data listed apart; register,
approve, registry, deploy --registry, and the champion compared with a confidence interval.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml_exp.core.errors import UserError
from ml_exp.pipeline.challenger import _metric, compare
from ml_exp.storage.errors import StoreError
from ml_exp.storage.registry import APPROVED, PENDING, REJECTED, Registry
from ml_exp.storage.sources import parse_data_from

EXP = str(Path(sys.executable).with_name("exp"))
LABELS = ["a", "b", "c"]


def _predictions(true: list[str], right: np.ndarray, seed: int) -> dict[str, tuple[str, str]]:
    """Predictions that are right where ``right`` says, a wrong label elsewhere."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, (label, ok) in enumerate(zip(true, right)):
        wrong = [x for x in LABELS if x != label][rng.integers(2)]
        out[f"doc-{i}"] = (label, label if ok else wrong)
    return out


def test_a_real_difference_is_better_beyond_noise():
    rng = np.random.default_rng(1)
    true = [LABELS[i % 3] for i in range(300)]
    champion = _predictions(true, rng.random(300) < 0.6, seed=2)
    challenger = _predictions(true, rng.random(300) < 0.85, seed=3)
    for metric in ("accuracy", "f1_macro"):
        result = compare(champion, challenger, metric, resamples=1000, seed=0)
        low, high = result["interval"]
        assert 0 < low < result["difference"] < high and result["verdict"] == "better", result
        assert compare(challenger, champion, metric, resamples=1000)["verdict"] == "worse"
    # seeded: the same interval again
    assert compare(champion, challenger, "f1_macro", seed=5) == compare(champion, challenger, "f1_macro", seed=5)


def test_no_difference_has_an_interval_around_zero():
    rng = np.random.default_rng(4)
    true = [LABELS[i % 3] for i in range(300)]
    right = rng.random(300) < 0.7
    champion = _predictions(true, right, seed=5)
    challenger = _predictions(true, np.roll(right, 1), seed=6)  # as often right, on other documents
    result = compare(champion, challenger, "f1_macro", resamples=1000)
    low, high = result["interval"]
    assert low < 0 < high and result["verdict"] == "no difference beyond noise", result


def test_other_documents_or_an_unknown_metric_are_refused():
    true = [LABELS[i % 3] for i in range(30)]
    champion = _predictions(true, np.ones(30, bool), seed=1)
    other = dict(list(champion.items())[:-1])
    with pytest.raises(UserError, match="not tested on the same documents"):
        compare(champion, other, "accuracy")
    with pytest.raises(UserError, match="not 'auc'"):
        compare(champion, champion, "auc")


def test_the_bootstrap_metrics_are_scikit_learns():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    pred[:3] = 0  # some class never predicted in places: the zero-division cases
    matrix = np.zeros((1, 4, 4))
    np.add.at(matrix[0], (true, pred), 1)
    expected = {
        "accuracy": accuracy_score(true, pred),
        "f1_macro": f1_score(true, pred, average="macro", zero_division=0),
        "precision_macro": precision_score(true, pred, average="macro", zero_division=0),
        "recall_macro": recall_score(true, pred, average="macro", zero_division=0),
        "f1_weighted": f1_score(true, pred, average="weighted", zero_division=0),
        "f1_micro": f1_score(true, pred, average="micro", zero_division=0),
    }
    for metric, value in expected.items():
        assert _metric(matrix, metric)[0] == pytest.approx(value), metric


def test_registry_versions_status_history_and_production(tmp_path):
    registry = Registry(f"file://{tmp_path}/store", "EXP")
    assert registry.versions() == [] and registry.production() is None
    first = registry.add({"experiment": "EXP-1-a", "run": 1, "status": PENDING})
    second = registry.add({"experiment": "EXP-2-b", "run": 3, "status": PENDING})
    assert (first["version"], second["version"]) == (1, 2)
    assert first["uri"] == f"file://{tmp_path}/store/registry/EXP/v1.json"
    with pytest.raises(StoreError, match="version 2 is already"):
        registry.add({"run": 9}, version=2)
    registry.set_status(1, APPROVED, "good")
    registry.set_status(2, REJECTED)
    assert registry.production()["version"] == 1
    registry.set_status(2, APPROVED)
    done = registry.read(2)
    assert registry.production()["version"] == 2 and [h["status"] for h in done["history"]] == [REJECTED, APPROVED]
    assert done["history"][0]["by"]["user"] and done["history"][0]["at"]
    with pytest.raises(StoreError, match=r"version 7 is not in the registry .* \(versions: 1, 2\)"):
        registry.read(7)


def test_data_from_names():
    assert parse_data_from("EXP-1-a/run_4", "file:///s") == ("file:///s", "EXP-1-a", 4)
    assert parse_data_from("s3://b/p/EXP-1-a/run_12", "file:///s") == ("s3://b/p", "EXP-1-a", 12)
    with pytest.raises(StoreError, match="EXPERIMENT/run_N"):
        parse_data_from("EXP-1-a/latest", "file:///s")


# --- three real runs in one storage --------------------------------------------------------------


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """EXP-1-a/run_1; EXP-2-b/run_1 with DATA_FROM = EXP-1-a/run_1 (and another SEED, which must not
    change the split); EXP-3-c/run_1 with another SEED and its own data. One epoch each."""
    from tests.bake import bake

    root = tmp_path_factory.mktemp("leaderboard")
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "NUM_TRAIN_EPOCHS": "1",
        "EARLY_STOPPING_PATIENCE": "0",
        "DOCUMENT_STRATEGY": "truncate",
        "TQDM_DISABLE": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "STORAGE_URI": f"file://{root}/store",
    }
    projects = {}
    for ticket, slug, extra in (
        ("EXP-1", "a", {}),
        ("EXP-2", "b", {"DATA_FROM": "EXP-1-a/run_1", "SEED": "7"}),
        ("EXP-3", "c", {"SEED": "7"}),
    ):
        project = bake(root, ticket=ticket, model_slug=slug)
        done = subprocess.run(
            [EXP, "run"], cwd=project, env={**env, **extra}, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        projects[slug] = project
    return root / "store", projects, env


def exp(project, env, *args):
    return subprocess.run([EXP, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300)


def manifest(store, experiment):
    return json.loads((store / experiment / "run_1" / "manifest.json").read_text())


@pytest.mark.slow
def test_data_from_ranks_two_experiments_on_one_test_split_and_lists_the_third_apart(storage):
    store, projects, env = storage
    first, second = manifest(store, "EXP-1-a"), manifest(store, "EXP-2-b")
    reused = second["steps"]["reconciliation"]
    assert reused["data_from"]["experiment"] == "EXP-1-a" and reused["data_from"]["run"] == 1
    assert reused["fingerprint"] == first["steps"]["reconciliation"]["fingerprint"]
    assert second["settings"]["DATA_FROM"] == "EXP-1-a/run_1"
    assert second["steps"]["preparation"]["split_fingerprints"] == first["steps"]["preparation"]["split_fingerprints"]

    done = exp(projects["a"], env, "leaderboard", "--json")
    assert done.returncode == 0, done.stderr
    board = json.loads(done.stdout)
    groups = {tuple(sorted(r["experiment"] for r in g["rows"])): g for g in board["groups"]}
    assert set(groups) == {("EXP-1-a", "EXP-2-b"), ("EXP-3-c",)}
    shared = groups[("EXP-1-a", "EXP-2-b")]
    assert shared["test_fingerprint"] == first["steps"]["preparation"]["split_fingerprints"]["test"]
    assert sorted(r["rank"] for r in shared["rows"]) == [1, 2] and groups[("EXP-3-c",)]["rows"][0]["rank"] == 1
    row = shared["rows"][0]
    assert row["model"] == "tiny-bert" and row["model_size"]["parameters"] > 0 and row["training_s"] > 0
    assert row["documents_per_s"] > 0 and row["test_records"] == 40
    table = exp(projects["a"], env, "leaderboard")
    assert (
        table.returncode == 0 and "ranked only against each other" in table.stdout and "EXP-3-c/run_1" in table.stdout
    )
    page = store.parent / "leaderboard.html"
    assert exp(projects["a"], env, "leaderboard", "--html", str(page)).returncode == 0
    text = page.read_text()
    assert "ranked only against models tested on the same" in text and text.count("<h2>Test split ") == 2
    assert "data:image/png;base64," in text and "EXP-2-b/run_1" in text and "http" not in text.replace("http-equiv", "")
    # filters: a label set no run has, a date after every run
    assert json.loads(exp(projects["a"], env, "leaderboard", "--json", "--labels", "x,y").stdout)["groups"] == []
    assert json.loads(exp(projects["a"], env, "leaderboard", "--json", "--since", "2999-01-01").stdout)["groups"] == []
    bad = exp(projects["a"], env, "leaderboard", "--until", "someday")
    assert bad.returncode == 1 and "--until='someday': give a date as YYYY-MM-DD" in bad.stderr


@pytest.mark.slow
def test_a_bad_data_from_is_refused_before_anything_runs(storage):
    store, projects, env = storage
    done = exp(projects["c"], {**env, "DATA_FROM": "EXP-1-a/run_9"}, "validate")
    assert done.returncode == 1 and "DATA_FROM" in done.stderr and "there is no run_9" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_register_approve_and_compare_with_production(storage):
    store, projects, env = storage
    done = exp(projects["a"], env, "register", "--run", "1")
    assert done.returncode == 0, done.stderr
    assert "EXP version 1: run_1 model tiny-bert, PendingManualApproval" in done.stdout
    refused = exp(projects["a"], env, "deploy", "--registry", "1")
    assert refused.returncode == 1 and "PendingManualApproval" in refused.stderr and "exp approve 1" in refused.stderr
    assert exp(projects["a"], env, "approve", "1", "--note", "best so far").returncode == 0

    record = json.loads((store / "registry" / "EXP" / "v1.json").read_text())
    assert (record["experiment"], record["run"], record["status"]) == ("EXP-1-a", 1, APPROVED)
    assert record["run_uri"] == f"file://{store}/EXP-1-a/run_1" and record["metrics"]["f1_macro"] >= 0
    assert record["history"][-1]["note"] == "best so far" and record["history"][-1]["by"]["user"]
    assert manifest(store, "EXP-1-a")["registry"] == [{"group": "EXP", "version": 1, "uri": record["uri"]}]
    listed = json.loads(exp(projects["b"], env, "registry", "--json").stdout)  # the use case's, from any experiment
    assert [r["version"] for r in listed] == [1]

    # an approved version on local storage: exp deploy says why it cannot, as for --run
    local = exp(projects["a"], env, "deploy", "--registry", "1")
    assert local.returncode == 1 and "local storage" in local.stderr
    elsewhere = exp(projects["b"], env, "deploy", "--registry", "1")
    assert elsewhere.returncode == 1 and "deploy it from that experiment's folder" in elsewhere.stderr

    versus = json.loads(exp(projects["b"], env, "leaderboard", "--json", "--against", "production").stdout)
    assert versus["champion"]["version"] == 1
    rows = {r["experiment"]: r for g in versus["groups"] for r in g["rows"]}
    assert rows["EXP-1-a"]["against"] is None and rows["EXP-3-c"]["against"] is None  # itself; another test split
    result = rows["EXP-2-b"]["against"]
    assert result["documents"] == 40 and result["interval"][0] <= result["difference"] <= result["interval"][1]

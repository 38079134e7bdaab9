"""`exp` as a user runs it: real console script, real baked experiments, real subprocesses."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ml_exp
from tests.bake import bake

EXP = str(Path(sys.executable).with_name("exp"))
HEAVY = ("torch", "transformers", "datasets", "sagemaker", "wandb", "accelerate")


def exp(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXP, *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp("demo"), ticket="EXP-42", model_slug="tiny-bert")


@pytest.fixture
def fresh_demo(tmp_path) -> Path:
    return bake(tmp_path, ticket="EXP-43", model_slug="fresh")


def test_version_and_help(tmp_path):
    assert exp("--version", cwd=tmp_path).stdout.strip() == f"ml-exp {ml_exp.__version__}"
    help_text = exp("--help", cwd=tmp_path).stdout
    for command in ("validate", "run", "runs", "predict", "serve", "deploy", "endpoints", "undeploy"):
        assert command in help_text


def test_validate_demo_is_clean(demo):
    result = exp("validate", cwd=demo)
    assert result.returncode == 0, result.stderr
    assert "EXP-42-tiny-bert is ready" in result.stdout


def test_validate_blank_names_all_five_functions_at_once(tmp_path):
    blank = bake(tmp_path, ticket="EXP-44", model_slug="blank", example="blank")
    result = exp("validate", cwd=blank)
    assert result.returncode == 1
    for function in ("reconcile", "load_processor", "encode", "load_model", "compute_metrics"):
        assert f"experiment.{function}: is not implemented yet" in result.stderr
    assert "5 problem(s)" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_usage_errors_exit_2(demo, tmp_path):
    assert exp("validate", "--no-such-option", cwd=demo).returncode == 2
    assert exp("validate", "--dir", str(tmp_path / "missing"), cwd=demo).returncode == 2


def test_validate_outside_an_experiment_says_so(tmp_path):
    result = exp("validate", cwd=tmp_path)
    assert result.returncode == 1
    assert "settings.ini: not found" in result.stderr


def test_several_mistakes_reported_together(fresh_demo):
    settings = fresh_demo / "settings.ini"
    text = settings.read_text().replace("SEED = 42", "SEED = many").replace("BACKEND = local", "BACKEND = cloud")
    settings.write_text(text + "\nLEARNING_RATES = 1\n")
    source = (fresh_demo / "experiment.py").read_text()
    (fresh_demo / "experiment.py").write_text(re.sub(r"def encode\(batch[^)]*\)", "def encode(batch, ctx)", source))
    result = exp("validate", cwd=fresh_demo)
    assert result.returncode == 1
    for where in ("SEED:", "BACKEND:", "LEARNING_RATES:", "experiment.encode:"):
        assert where in result.stderr
    assert not (fresh_demo / ".exp-store").exists()


def test_wandb_online_without_key_is_a_problem(fresh_demo, tmp_path):
    env = {"WANDB_MODE": "online", "HOME": str(tmp_path), "WANDB_API_KEY": ""}
    result = exp("validate", cwd=fresh_demo, env=env)
    assert result.returncode == 1 and "WANDB_MODE:" in result.stderr and "WANDB_API_KEY" in result.stderr
    assert exp("validate", cwd=fresh_demo, env={**env, "WANDB_API_KEY": "x" * 40}).returncode == 0


@pytest.mark.parametrize(("strategy", "imported"), [("truncate", ""), ("chunks", "transformers")])
def test_validate_imports_nothing_heavy(demo, strategy, imported):
    """With chunks (the demo's), validate loads each processor to check it can return overflowing
    tokens: transformers' tokenizers, nothing more."""
    code = (f"import os, sys; os.environ['DOCUMENT_STRATEGY'] = {strategy!r}; from ml_exp.commands import app; from ml_exp.pipeline.validate import validate; "
            f"r = validate({str(demo)!r}); assert r.ok, r.problems; print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == imported


RECONCILE = ("run", "--steps", "reconciliation")  # the cheapest real step: no torch involved


def test_run_claims_runs_and_refuses_an_existing_run_num(fresh_demo):
    first = exp(*RECONCILE, cwd=fresh_demo)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("run_1: file://")
    assert exp(*RECONCILE, cwd=fresh_demo).stdout.startswith("run_2: ")
    again = exp("validate", cwd=fresh_demo, env={"RUN_NUM": "1"})
    assert again.returncode == 1 and "RUN_NUM:" in again.stderr and "already exists" in again.stderr
    assert exp(*RECONCILE, cwd=fresh_demo, env={"RUN_NUM": "1"}).returncode == 1
    assert exp(*RECONCILE, cwd=fresh_demo, env={"RUN_NUM": "7"}).stdout.startswith("run_7: ")
    assert sorted(p.name for p in (fresh_demo / ".exp-store" / "EXP-43-fresh").iterdir()) == ["run_1", "run_2", "run_7"]


def test_concurrent_runs_get_distinct_numbers(fresh_demo):
    processes = [subprocess.Popen([EXP, *RECONCILE], cwd=fresh_demo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [(p.returncode, out, err[-2000:]) for p, (out, err) in zip(processes, outputs) if p.returncode]
    claimed = sorted(out.split("run_")[1].split(":")[0] for out, _ in outputs)
    assert claimed == ["1", "2", "3", "4"]


def test_manifest_records_settings_code_versions_and_redacts_secrets(fresh_demo):
    subprocess.run(["git", "init", "-q"], cwd=fresh_demo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "x", "--allow-empty"], cwd=fresh_demo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=fresh_demo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baked"], cwd=fresh_demo, check=True)
    secrets = {"WANDB_API_KEY": "wandb-secret-123", "AWS_SECRET_ACCESS_KEY": "aws-secret-456", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE789", "SEED": "7"}
    assert exp(*RECONCILE, cwd=fresh_demo, env=secrets).returncode == 0
    path = fresh_demo / ".exp-store" / "EXP-43-fresh" / "run_1" / "manifest.json"
    text = path.read_text()
    for secret in ("wandb-secret-123", "aws-secret-456", "AKIAEXAMPLE789"):
        assert secret not in text
    manifest = json.loads(text)
    assert manifest["experiment"] == "EXP-43-fresh" and manifest["run"] == 1
    assert manifest["settings"]["SEED"] == "7" and "SEED" in manifest["settings_from_environment"]
    assert manifest["environment"]["WANDB_API_KEY"] == "***redacted***"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=fresh_demo, capture_output=True, text=True).stdout.strip()
    assert manifest["git"] == {"commit": head, "branch": manifest["git"]["branch"], "dirty": False}
    assert manifest["versions"]["ml-exp"] == ml_exp.__version__ and manifest["versions"]["torch"]
    assert manifest["template"]["template_version"] == ml_exp.__version__
    assert manifest["template"]["answers"]["ticket"] == "EXP-43"
    assert manifest["steps"]["reconciliation"]["status"] == "completed"
    assert {s: manifest["steps"][s] for s in ("preparation", "training", "inference")} == {s: {"status": "pending"} for s in ("preparation", "training", "inference")}
    (fresh_demo / "experiment.py").write_text((fresh_demo / "experiment.py").read_text() + "\n# edited\n")
    assert exp(*RECONCILE, cwd=fresh_demo).returncode == 0
    second = json.loads((path.parent.parent / "run_2" / "manifest.json").read_text())
    assert second["git"]["dirty"] is True


def test_runs_table_and_json(fresh_demo):
    assert exp("runs", "--json", cwd=fresh_demo).stdout.strip() == "[]"
    for _ in range(2):
        assert exp(*RECONCILE, cwd=fresh_demo).returncode == 0
    listed = json.loads(exp("runs", "--json", cwd=fresh_demo).stdout)
    assert [r["run"] for r in listed] == [1, 2]
    assert listed[0]["steps"]["reconciliation"] == "completed" and listed[0]["steps"]["training"] == "pending"
    assert listed[0]["status"] == "partial" and listed[0]["best"] is None
    table = exp("runs", cwd=fresh_demo).stdout  # 80 columns off a terminal
    assert "EXP-43-fresh: 2 run(s)" in table and "recon✓" in table and "train·" in table
    assert max(len(line) for line in table.splitlines()) <= 80 and "…" not in table



@pytest.mark.s3
def test_runs_on_s3_as_a_user_would(fresh_demo, s3_env):
    env = {"STORAGE_URI": f"s3://{s3_env.bucket}/cli-{fresh_demo.parent.name}"}
    assert exp("validate", cwd=fresh_demo, env=env).returncode == 0
    processes = [subprocess.Popen([EXP, *RECONCILE], cwd=fresh_demo, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [(p.returncode, out, err[-2000:]) for p, (out, err) in zip(processes, outputs) if p.returncode]
    assert sorted(out.split(":")[0] for out, _ in outputs) == ["run_1", "run_2", "run_3"]
    listed = json.loads(exp("runs", "--json", cwd=fresh_demo, env=env).stdout)
    assert [r["steps"]["reconciliation"] for r in listed] == ["completed"] * 3
    assert all(r["uri"].startswith(env["STORAGE_URI"]) for r in listed)
    denied = exp("validate", cwd=fresh_demo, env={**env, "AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    assert denied.returncode == 1 and "STORAGE_URI:" in denied.stderr
    assert "Traceback" not in denied.stderr and "botocore" not in denied.stderr
    assert not (fresh_demo / ".exp-store").exists()


@pytest.mark.slow
def test_compare_three_runs_with_different_settings(fresh_demo, tmp_path):
    for seed, rate in (("42", "2e-3"), ("42", "5e-3"), ("7", "5e-3")):
        result = exp("run", "--smoke", "-q", cwd=fresh_demo, env={"SEED": seed, "LEARNING_RATE": rate, "WANDB_MODE": "disabled"})
        assert result.returncode == 0, result.stdout + result.stderr
    shown = exp("compare", "--output", str(tmp_path / "runs.png"), cwd=fresh_demo)
    assert shown.returncode == 0, shown.stderr
    assert "LEARNING_RATE: run_1=2e-3, run_2=5e-3, run_3=5e-3" in shown.stdout
    assert "SEED: run_1=42, run_2=42, run_3=7" in shown.stdout and "data fingerprint: " in shown.stdout  # new data with the seed
    assert "completed (smoke)" in shown.stdout and max(len(line) for line in shown.stdout.splitlines()) <= 80
    assert (tmp_path / "runs.png").read_bytes()[:4] == b"\x89PNG"
    compared = json.loads(exp("compare", "1", "3", "--json", cwd=fresh_demo).stdout)
    assert [r["run"] for r in compared["runs"]] == [1, 3] and "LEARNING_RATE" in compared["differing_settings"]
    assert all(r["models"]["tiny-bert"]["split"] == "test" for r in compared["runs"])
    missing = exp("compare", "9", cwd=fresh_demo)
    assert missing.returncode == 1 and "no run run_9" in missing.stderr

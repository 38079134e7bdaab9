"""The code is part of the record: each step records the experiment's commit, dirty flag and the
hash of its module; continuing a run whose module changed is refused like changed settings, or
accepted (--accept-changed-code) and recorded in the step."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.bake import bake

EXP = str(Path(sys.executable).with_name("exp"))
RECONCILE = ["run", "--steps", "reconciliation"]


def exp(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([EXP, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_a_changed_module_is_refused_then_accepted_and_recorded(tmp_path):
    project = bake(tmp_path, ticket="EXP-233", model_slug="code")
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baked"],
    ):
        subprocess.run(["git", *args], cwd=project, check=True)
    module = project / "experiment.py"
    original = module.read_text()
    module.write_text(original + "\n\ndef reconcile(ctx):\n    raise ValueError('not yet')\n")
    failed = exp(project, *RECONCILE)
    assert failed.returncode == 1 and "not yet" in failed.stderr
    manifest_path = project / ".exp-store" / "EXP-233-code" / "run_1" / "manifest.json"
    step = json.loads(manifest_path.read_text())["steps"]["reconciliation"]
    broken_sha = hashlib.sha256(module.read_bytes()).hexdigest()
    assert step["code"]["module_sha256"] == broken_sha and step["code"]["dirty"] is True and step["code"]["commit"]

    module.write_text(original)  # the fix: the run would now run other code than it recorded
    refused = exp(project, "run", "--run", "1", "--steps", "reconciliation")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "run_1 was started with other code" in refused.stderr and "experiment: changed since run_1" in refused.stderr
    assert "--accept-changed-code" in refused.stderr
    assert json.loads(manifest_path.read_text())["steps"]["reconciliation"]["status"] == "failed"  # nothing ran

    accepted = exp(project, "run", "--run", "1", "--steps", "reconciliation", "--accept-changed-code")
    assert accepted.returncode == 0, accepted.stderr
    step = json.loads(manifest_path.read_text())["steps"]["reconciliation"]
    assert step["status"] == "completed" and step["code_changed"]["module_sha256"] == broken_sha
    assert (
        step["code"]["module_sha256"] == hashlib.sha256(original.encode()).hexdigest()
        and step["code"]["dirty"] is False
    )


def test_a_changed_helper_module_is_refused_and_named(tmp_path):
    """Not only UDF_MODULE: the demo's experiment.py imports demo_documents.py, and a run continued
    after that changed would run other code than it recorded."""
    project = bake(tmp_path, ticket="EXP-234", model_slug="code")
    assert exp(project, *RECONCILE).returncode == 0
    manifest_path = project / ".exp-store" / "EXP-234-code" / "run_1" / "manifest.json"
    recorded = json.loads(manifest_path.read_text())["steps"]["reconciliation"]["code"]
    assert {"experiment.py", "demo_documents.py"} <= set(recorded["sources"]) and recorded["commit"] is None
    assert not any(path.startswith(("tests/", ".exp-store/")) for path in recorded["sources"])

    helper = project / "demo_documents.py"
    helper.write_text(helper.read_text() + "\n# changed\n")
    (project / "tests" / "test_more.py").write_text("def test_nothing():\n    pass\n")  # tests are not the run's code
    refused = exp(project, "run", "--run", "1", "--steps", "reconciliation")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "demo_documents.py changed" in refused.stderr and "experiment.py changed" not in refused.stderr


def test_the_sources_are_what_git_would_track_else_every_python_file(tmp_path):
    from ml_exp.storage.code import code_differs, code_state, python_sources

    for path in (
        "experiment.py",
        "lib/helpers.py",
        "tests/test_x.py",
        ".venv/lib/x.py",
        "env/pyvenv.cfg",
        "env/y.py",
        "ignored/z.py",
        "notes.txt",
    ):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x = 1\n")
    walked = [p.as_posix() for p in python_sources(tmp_path)]
    assert walked == ["experiment.py", "ignored/z.py", "lib/helpers.py"]  # no git: every .py but tests and venvs

    (tmp_path / ".gitignore").write_text("ignored/\nenv/\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert [p.as_posix() for p in python_sources(tmp_path)] == ["experiment.py", "lib/helpers.py"]  # untracked counts

    before = code_state(tmp_path, "experiment")
    (tmp_path / "ignored" / "z.py").write_text("x = 2\n")
    assert not code_differs(before, code_state(tmp_path, "experiment"))
    (tmp_path / "lib" / "helpers.py").write_text("x = 2\n")
    assert code_differs(before, code_state(tmp_path, "experiment"))
    old_record = {"module_sha256": before["module_sha256"]}  # runs recorded before every file was hashed
    assert not code_differs(old_record, code_state(tmp_path, "experiment"))

"""A third backend is one module implementing the task interface: a toy backend that runs every
task in `exp run`'s own process trains and tests the demo, with the same outputs as the local one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ml_exp.backends import backend_for
from ml_exp.config import load_config
from ml_exp.core.names import INFERENCE, PREPARATION, TRAINING, TUNING
from ml_exp.steps import Task, plan
from tests.bake import bake

EXP = str(Path(sys.executable).with_name("exp"))

# The whole backend: every task in this process, training from the run's own checkpoint folder.
INLINE_BACKEND = '''
from pathlib import Path

from ml_exp.backends.base import Backend, Task
from ml_exp.backends.execute import execute
from ml_exp.core.errors import StepError
from ml_exp.storage.layout import checkpoint_dir, prepared_dir

TASKS_RUN = []


class InlineBackend(Backend):
    name = "inline"

    def run(self, task, ctx, functions):
        TASKS_RUN.append(str(task))
        print(f"inline backend: {task}", flush=True)
        if task.step == "tuning":
            raise StepError("the inline backend does not tune; set RUN_TUNING = false")
        if task.step != "training":
            return execute(task, ctx, functions)
        scratch = ctx.run.scratch_area()
        data = ctx.run.local_input(prepared_dir(task.model), scratch)
        checkpoints = Path(ctx.run.local_path_or_url(checkpoint_dir(task.model)))
        return execute(task, ctx, functions, data_dir=data, checkpoints=checkpoints)

    def describe(self, task, ctx):
        return [f"{task}: would run inline"]


BACKEND = InlineBackend()
'''


def test_a_task_names_its_step_and_model():
    assert str(Task(PREPARATION)) == "preparation" and str(Task(TRAINING, "m")) == "training of m"
    with pytest.raises(ValueError, match="needs model"):
        Task(INFERENCE)
    with pytest.raises(ValueError, match="takes no model"):
        Task(PREPARATION, "m")
    with pytest.raises(ValueError, match="one of"):
        Task("reconciliation")


def test_each_step_plans_its_tasks(tmp_path):
    project = bake(tmp_path, ticket="EXP-90", model_slug="plan")
    env = {**os.environ, "MODEL_NAMES": "a, b", "TUNING_SPACE": "learning_rate = log-uniform(1e-5, 1e-3)"}
    ctx = type("Ctx", (), {"config": load_config(project, environ=env)})()
    assert plan(ctx, PREPARATION) == [Task(PREPARATION)]
    assert [str(t) for t in plan(ctx, TRAINING)] == ["training of a", "training of b"]
    (tuning_a, _) = plan(ctx, TUNING)
    assert tuning_a.model == "a" and [p.name for p in tuning_a.parameters] == ["learning_rate"]


def test_a_backend_of_the_teams_own_is_named_by_its_module(tmp_path):
    project = bake(tmp_path, ticket="EXP-91", model_slug="custom")
    (project / "toy").mkdir()
    (project / "toy" / "__init__.py").write_text("")
    (project / "toy" / "inline.py").write_text(textwrap.dedent(INLINE_BACKEND))
    backend = backend_for("toy.inline", project)
    assert backend.name == "inline" and backend.describe(Task(TRAINING, "m"), None) == ["training of m: would run inline"]
    (project / "toy" / "broken.py").write_text("BACKEND = 'not a backend'\n")
    refused = subprocess.run([EXP, "validate"], cwd=project, capture_output=True, text=True, env={**os.environ, "BACKEND": "toy.broken"})
    assert refused.returncode == 1 and "BACKEND: module toy.broken has no BACKEND that is an ml_exp.backends.base.Backend" in refused.stderr


@pytest.mark.slow
def test_a_toy_backend_runs_the_demo(tmp_path):
    project = bake(tmp_path, ticket="EXP-92", model_slug="inline")
    (project / "toy").mkdir()
    (project / "toy" / "__init__.py").write_text("")
    (project / "toy" / "inline.py").write_text(textwrap.dedent(INLINE_BACKEND))
    env = {**os.environ, "BACKEND": "toy.inline", "DOCUMENT_STRATEGY": "truncate", "NUM_TRAIN_EPOCHS": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run([EXP, "run", "-v"], cwd=project, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    said = [line for line in result.stdout.splitlines() if line.startswith("inline backend: ")]
    assert said == ["inline backend: preparation", "inline backend: training of tiny-bert", "inline backend: inference of tiny-bert"]
    run = project / ".exp-store" / project.name / "run_1"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["settings"]["BACKEND"] == "toy.inline"
    assert (run / "models" / "tiny-bert" / "model.safetensors").is_file()
    assert set(json.loads((run / "inference" / "tiny-bert" / "metrics.json").read_text())) >= {"accuracy", "f1_macro"}

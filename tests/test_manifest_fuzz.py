"""Manifests read defensively: a real run's manifest, with random type changes and truncations,
read by every command that reads one (exp runs, exp compare, exp run --run N, exp predict,
exp deploy): a "damaged" row or a one-line problem, never a traceback; --json is strict JSON."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml_exp.commands import app
from tests.bake import bake

REPLACEMENTS = [[], {}, "x", "", 7, -1, 1.5, None, True, float("nan"), [1, "a"], {"a": [1]}]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The demo, with run_1 reconciled for real and run_2 a copy whose manifest is fuzzed; the
    real manifest gets what later steps and SageMaker add (metrics, jobs, deployments)."""
    project = bake(tmp_path_factory.mktemp("fuzz"), ticket="EXP-232", model_slug="fuzz")
    runner = CliRunner()
    done = runner.invoke(app, ["run", "--steps", "reconciliation", "-q", "-C", str(project)], env={"WANDB_MODE": "disabled"})
    assert done.exit_code == 0, done.output
    run_1 = project / ".exp-store" / "EXP-232-fuzz" / "run_1"
    manifest = json.loads((run_1 / "manifest.json").read_text())
    metrics = {"tiny-bert": {"accuracy": 0.5, "f1_macro": 0.4, "eval_loss": 1.2}}
    manifest["steps"]["training"].update(status="completed", metrics=metrics, tracking={"url": "u"}, duration_s=3.0)
    manifest["steps"]["inference"].update(status="completed", metrics=metrics)
    manifest["sagemaker_jobs"] = {"EXP-232-fuzz-r1-train": {"billable_seconds": 60, "cost_usd": 0.01}}
    manifest["deployments"] = [{"endpoint": "e", "model": "tiny-bert", "status": "InService"}]
    (run_1 / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (project / "in.jsonl").write_text('{"text": "x", "title": "t"}\n')
    return project


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, (*prefix, index))


def mutated(manifest: dict, rng: random.Random) -> bytes:
    text = json.dumps(manifest, indent=2)
    if rng.random() < 0.2:
        return text.encode()[: rng.randrange(len(text))]
    copy = json.loads(text)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice([p for p in paths(copy) if p])
        parent = copy
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = rng.choice(REPLACEMENTS)
    return json.dumps(copy, indent=2).encode()  # NaN written as bare NaN: what Python's json reads back


COMMANDS = [
    ["runs"],
    ["runs", "--json"],
    ["compare"],
    ["compare", "--json"],
    ["compare", "2", "--metric", "accuracy", "--json"],
    ["run", "--run", "2", "--dry-run", "-q"],
    ["predict", "--run", "2", "{project}/in.jsonl"],
    ["deploy", "--run", "2", "--dry-run"],
]


def strict(text: str):
    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_fuzzed_manifests_give_no_traceback_in_any_command(project, tmp_path):
    store = project / ".exp-store" / "EXP-232-fuzz"
    real = json.loads((store / "run_1" / "manifest.json").read_text())
    runner = CliRunner()
    rng = random.Random(23)
    seen_damaged = 0
    for attempt in range(50):
        data = mutated(real, rng)
        (store / "run_2").mkdir(exist_ok=True)
        (store / "run_2" / "manifest.json").write_bytes(data)
        for command in COMMANDS:
            result = runner.invoke(
                app, [c.format(project=project) for c in command] + ["-C", str(project)], env={"WANDB_MODE": "disabled", "COLUMNS": "200"}
            )
            where = f"attempt {attempt}, exp {' '.join(command)}, manifest {data[:3000]!r}"
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                where,
                result.exception,
            )
            assert result.exit_code in (0, 1) and "Traceback" not in result.output, (where, result.output)
            if command[-1] == "--json" and result.exit_code == 0:
                strict(result.stdout)
        listed = strict(runner.invoke(app, ["runs", "--json", "-C", str(project)]).stdout)
        assert [r["run"] for r in listed] == [1, 2]  # the fuzzed run hides no other
        seen_damaged += listed[1]["status"] == "damaged"
    assert seen_damaged > 10  # the fuzz reached the schema check


def test_a_damaged_run_is_one_row_in_compare_and_runs(project):
    store = project / ".exp-store" / "EXP-232-fuzz"
    (store / "run_2").mkdir(exist_ok=True)
    (store / "run_2" / "manifest.json").write_text('{"steps": [], "experiment": "EXP-232-fuzz"}')
    runner = CliRunner()
    compared = strict(runner.invoke(app, ["compare", "--json", "-C", str(project)]).stdout)
    assert [(r["run"], r["status"]) for r in compared["runs"]] == [(1, "completed"), (2, "damaged")] or [
        r["run"] for r in compared["runs"]
    ] == [1, 2]
    assert "steps is not an object" in compared["runs"][1]["problem"]
    shown = runner.invoke(app, ["compare", "-C", str(project), "--output", str(project / "new" / "dir" / "c.png")])
    assert shown.exit_code == 0 and "damaged" in shown.output, shown.output
    assert (project / "new" / "dir" / "c.png").read_bytes()[:4] == b"\x89PNG"
    run = runner.invoke(app, ["run", "--run", "2", "-C", str(project)])
    assert run.exit_code == 1 and "steps is not an object" in run.output and "Traceback" not in run.output
    nope = runner.invoke(app, ["compare", "--metric", "nope", "-C", str(project)])
    assert nope.exit_code == 1 and "--metric" in nope.output and "accuracy, eval_loss, f1_macro" in nope.output


def test_compare_writes_its_chart_into_the_experiment_folder_it_was_given(project, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # `exp compare -C <experiment>` from another folder
    result = CliRunner().invoke(app, ["compare", "-C", str(project)], env={"WANDB_MODE": "disabled", "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert (project / "comparison-runs.png").is_file() and not list(elsewhere.iterdir())

"""ruff, lint and format, on the runtime, the tools and the hooks (pyproject.toml's [tool.ruff]),
and on experiments baked from the template (its files are Jinja until baked): what a user starts
from is as clean as the runtime."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bake import ROOT, bake

RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
pytestmark = pytest.mark.skipif(RUFF is None, reason="ruff is not installed (the test extra: pip install -e '.[test]')")


def ruff(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([RUFF, *args], cwd=cwd, capture_output=True, text=True)


def test_the_runtime_tools_and_hooks_are_lint_clean_and_formatted():
    checked = ruff("check", ".", cwd=ROOT)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    formatted = ruff("format", "--check", ".", cwd=ROOT)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@pytest.mark.parametrize("example", ["document-types", "blank"])
def test_a_baked_experiment_is_lint_clean_and_formatted(tmp_path, example):
    project = bake(tmp_path, ticket="EXP-95", model_slug=f"lint-{example}", example=example)
    # the runtime's rules, given here: a baked experiment has no configuration of its own
    settings = ["--isolated", "--line-length", "120", "--target-version", "py310"]
    checked = ruff("check", *settings, "--select", "E,F,W,I,B,UP", "--ignore", "B905", ".", cwd=project)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    formatted = ruff("format", *settings, "--check", ".", cwd=project)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr

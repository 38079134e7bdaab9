"""`make dist`: the runtime's wheel and sdist build and pass `twine check` (what a release needs)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ml_exp

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_and_sdist_build_and_pass_twine_check(tmp_path):
    pytest.importorskip("build", reason="the dist extra (pip install -e '.[dist]', as make dist does)")
    pytest.importorskip("twine", reason="the dist extra (pip install -e '.[dist]', as make dist does)")
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel = tmp_path / f"ml_exp-{ml_exp.__version__}-py3-none-any.whl"
    sdist = tmp_path / f"ml_exp-{ml_exp.__version__}.tar.gz"
    assert wheel.is_file() and sdist.is_file(), sorted(p.name for p in tmp_path.iterdir())
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("ml_exp/commands/__init__.py", "ml_exp/core/names.py", "ml_exp/backends/sagemaker/container.py", "ml_exp/toolkit/metrics/classification.py",
                   "ml_exp/backends/sagemaker/prices.json"):  # the price table of the cost lines
        assert module in names
    assert not [n for n in names if n.startswith("tests/")]
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

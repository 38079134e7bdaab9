"""Baking the template in tests: the project root is the template, the runtime is this checkout."""

from __future__ import annotations

from pathlib import Path

from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_REQUIREMENT = f"ml-exp @ {ROOT.as_uri()}"


def bake(output_dir: Path, **answers: str) -> Path:
    """Bake with ``answers`` (no prompts) into ``output_dir``; return the experiment folder."""
    answers.setdefault("runtime_requirement", RUNTIME_REQUIREMENT)
    return Path(cookiecutter(str(ROOT), no_input=True, extra_context=answers, output_dir=str(output_dir)))

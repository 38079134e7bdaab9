"""The run manifest: what ran, with which settings, code and packages (secrets redacted)."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from ml_exp import __version__
from ml_exp.config import Config
from ml_exp.core.redact import REDACTED, SECRET_NAME, redact, redact_text
from ml_exp.storage.code import code_state, git_state
from ml_exp.storage.run import now

TEMPLATE_RECORD = ".ml-exp.json"
# Environment variables worth recording: they change what a run does.
__all__ = ["REDACTED", "SECRET_NAME", "code_state", "new_manifest", "redact", "redact_urls"]
RECORDED_ENV_PREFIXES = ("ML_EXP_", "WANDB_", "AWS_", "HF_", "TRANSFORMERS_", "CUDA_", "ACCELERATE_", "SM_")
KEY_PACKAGES = (
    "torch",
    "transformers",
    "datasets",
    "accelerate",
    "evaluate",
    "scikit-learn",
    "wandb",
    "sagemaker",
    "fsspec",
    "s3fs",
    "optuna",
)


def redact_urls(text: str) -> str:
    """``text`` with every credential in it replaced (:func:`ml_exp.core.redact.redact_text`)."""
    return redact_text(text)


def new_manifest(
    config: Config, run_num: int, environ: Mapping[str, str] | None = None, argv: list[str] | None = None
) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    return {
        "experiment": config.experiment_name,
        "run": run_num,
        "created_at": now(),
        "status": "created",
        "command": [redact_urls(arg) for arg in (argv if argv is not None else sys.argv)],
        "host": socket.gethostname(),
        # no secret can be a setting (validation refuses them), but a URL in one can hold credentials
        "settings": redact(dict(config.raw)),
        "settings_from_environment": sorted(key for key in config.raw if key in env),
        "environment": redact({k: v for k, v in sorted(env.items()) if k.startswith(RECORDED_ENV_PREFIXES)}),
        "git": git_state(config.experiment_dir),
        "code": code_state(config.experiment_dir, config.udf_module),
        "template": template_record(config.experiment_dir),
        "versions": package_versions(),
        "steps": {step: {"status": "pending"} for step in config.steps},
    }


def template_record(directory: Path) -> dict[str, Any] | None:
    """The template version and answers the experiment was baked with (``.ml-exp.json``)."""
    path = directory / TEMPLATE_RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "ml-exp": __version__}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)  # metadata only: importing torch would cost seconds
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions

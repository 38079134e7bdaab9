"""``exp doctor``: is the AWS account ready for this experiment's SageMaker jobs? (before spending money)

One line per check (``ml_exp.backends.sagemaker.doctor``): ok, or what is wrong and what to do.
Exit status 1 when a check fails; warnings (a check that could not run) leave it 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ExperimentDir = Annotated[
    Path,
    typer.Option("--dir", "-C", envvar="ML_EXP_EXPERIMENT_DIR", help="Experiment folder (the one with settings.ini).",
                 file_okay=False, exists=True),
]


def doctor(experiment_dir: ExperimentDir = Path(".")) -> None:
    """Check AWS before spending money: credentials, region, bucket, role, image, secret, quotas."""
    from ml_exp.backends.sagemaker.doctor import FAIL, OK, WARN, failed, run_checks
    from ml_exp.config import ConfigError, load_config

    try:
        config = load_config(experiment_dir)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"FAIL  settings: {problem}", err=True)
        raise typer.Exit(1) from None
    checks = run_checks(config)
    for check in checks:
        typer.echo(str(check))
    bad = [c for c in checks if c.status == FAIL]
    warned = sum(1 for c in checks if c.status == WARN)
    if failed(checks):
        typer.echo(f"{len(bad)} check(s) failed: fix them before `exp run` (docs/aws/ holds the IAM policies)", err=True)
        raise typer.Exit(1)
    passed = sum(1 for c in checks if c.status == OK)
    typer.echo(f"ready for SageMaker: {passed} checks ok" + (f", {warned} could not run (see above)" if warned else ""))

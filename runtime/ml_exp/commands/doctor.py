"""``exp doctor``: is the AWS account ready for this experiment's SageMaker jobs? (before spending money)

One line per check (``ml_exp.backends.sagemaker.doctor``): ok, or what is wrong and what to do.
Exit status 1 when a check fails; warnings (a check that could not run) leave it 0.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ml_exp.commands.app import ExperimentDir, app, user_errors


@app.command()
def doctor(experiment_dir: ExperimentDir = Path(".")) -> None:
    """Check AWS before spending money: credentials, region, bucket, role, image, secret, quotas."""
    from ml_exp.backends.sagemaker.doctor import FAIL, OK, WARN, failed, run_checks
    from ml_exp.config import load_config

    with user_errors("settings"):
        config = load_config(experiment_dir)
    checks = run_checks(config)
    for check in checks:
        typer.echo(str(check))
    if failed(checks):
        bad = sum(1 for c in checks if c.status == FAIL)
        typer.echo(f"{bad} check(s) failed: fix them before `exp run` (docs/aws/ holds the IAM policies)", err=True)
        raise typer.Exit(1)
    passed, warned = sum(1 for c in checks if c.status == OK), sum(1 for c in checks if c.status == WARN)
    typer.echo(f"ready for SageMaker: {passed} checks ok" + (f", {warned} could not run (see above)" if warned else ""))

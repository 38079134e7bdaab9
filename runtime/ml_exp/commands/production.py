"""From a run to production: ``exp predict``, ``exp serve`` (here), ``exp deploy``, ``exp endpoints``,
``exp undeploy`` (SageMaker endpoints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ml_exp.commands.app import ExperimentDir, ModelOption, RunOption, announce, app, user_errors
from ml_exp.core.errors import UserError


@app.command()
def predict(
    input_file: Annotated[
        str,
        typer.Argument(
            metavar="INPUT", help="JSON Lines records (the fields reconcile yields; label optional), or - for stdin."
        ),
    ],
    run_num: RunOption,
    model: ModelOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the predictions here (default: stdout).")
    ] = None,
    experiment_dir: ExperimentDir = Path("."),
) -> None:
    """Predict records with a run's model on this machine: a JSON line per record (id, prediction, scores).

    Every record is read and checked before any is predicted: a bad one is named (file and line)
    and nothing is written; --output is written atomically (complete, or not at all)."""
    import shutil
    import sys
    import tempfile

    from ml_exp.core.files import atomic_output, check_output
    from ml_exp.serving.predict import check_lines, load_predictor, predict_lines

    source = "stdin" if input_file == "-" else input_file
    if input_file != "-" and not Path(input_file).is_file():
        raise typer.BadParameter(f"{input_file} is not a file", param_hint="INPUT")
    with tempfile.TemporaryDirectory(prefix="ml-exp-predict-") as scratch:
        with user_errors("--output"):
            if output:
                check_output(output, "--output", inputs=[] if input_file == "-" else [input_file])
        if input_file == "-":  # read twice (checked, then predicted): stdin is kept in the scratch folder
            input_file = str(Path(scratch, "stdin.jsonl"))
            with open(input_file, "wb") as spool:
                shutil.copyfileobj(sys.stdin.buffer, spool)
        with user_errors("--run"):
            predictor = load_predictor(experiment_dir, run_num, model, Path(scratch))
        with user_errors("INPUT"), open(input_file, "rb") as lines:
            check_lines(predictor, lines, source)
        with user_errors("INPUT"), open(input_file, "rb") as lines:
            try:
                if output:
                    with atomic_output(output, "--output", "w", encoding="utf-8") as out:
                        count = predict_lines(predictor, lines, out, source)
                else:
                    count = predict_lines(predictor, lines, sys.stdout, source)
            except UserError as exc:
                exc.outcome = (
                    f"nothing was written to {output}"
                    if output
                    else "the predictions printed before it are of the records before it"
                )
                raise
    if output:
        typer.echo(f"{count} predictions of run_{run_num} model {predictor.info['model']} in {output}", err=True)


@app.command()
def serve(
    run_num: RunOption,
    model: ModelOption = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port (SageMaker's is 8080).")] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    experiment_dir: ExperimentDir = Path("."),
) -> None:
    """Serve a run's model over HTTP as a SageMaker endpoint does: GET /ping, POST /invocations (JSON, JSON Lines)."""
    import tempfile

    from ml_exp.serving.predict import load_predictor
    from ml_exp.serving.server import listen, serve_timeout
    from ml_exp.serving.server import serve as run_server

    with user_errors("--port"):  # a busy port or a bad setting fails before the model loads
        timeout_s = serve_timeout(experiment_dir)
        sock = listen(host, port)
    with user_errors("--run"), tempfile.TemporaryDirectory(prefix="ml-exp-serve-") as scratch:
        predictor = load_predictor(experiment_dir, run_num, model, Path(scratch))
        announce = lambda message: typer.echo(message, err=True)  # noqa: E731
        run_server(predictor, host=host, port=port, announce=announce, sock=sock, timeout_s=timeout_s)


@app.command()
def deploy(
    run_num: Annotated[int | None, typer.Option("--run", min=1, help="The run whose model to deploy.")] = None,
    model: ModelOption = None,
    version: Annotated[
        int | None, typer.Option("--registry", min=1, help="Deploy this approved registry version instead.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print and save (in the run) the requests; send nothing.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the endpoint is in service.")] = True,
    experiment_dir: ExperimentDir = Path("."),
) -> None:
    """Deploy a run's model as a SageMaker endpoint named <experiment>-r<run>-<model>-<token>."""
    from ml_exp.core.console import setup_logging
    from ml_exp.deploy.deployments import deploy as deploy_model

    setup_logging()
    if (run_num is None) == (version is None):
        raise typer.BadParameter("give --run N or --registry VERSION (one of them)", param_hint="--run")
    with user_errors("--run"):
        if version is not None:  # the version's run and model (exp approve first)
            from ml_exp.deploy.registry import deploy_version

            done = deploy_version(experiment_dir, version, dry_run=dry_run, wait=wait, announce=announce)
            run_num = done["run"]
        else:
            done = deploy_model(experiment_dir, run_num, model, dry_run=dry_run, wait=wait, announce=announce)
    if dry_run:
        typer.echo(json.dumps(done["requests"], indent=2))
        typer.echo(done["cost"], err=True)
        typer.echo(f"dry run, nothing sent: endpoint {done['endpoint_name']} described in {done['spec_uri']}", err=True)
        return
    typer.echo(
        f"endpoint {done['endpoint_name']}: {done['status']} (run_{run_num}, model {done['model']}; "
        f"recorded in run_{run_num}'s manifest)"
    )


@app.command()
def endpoints(
    experiment_dir: ExperimentDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List this experiment's SageMaker endpoints (from their tags): status, run, model."""
    from ml_exp.deploy.deployments import list_endpoints

    with user_errors("AWS"):
        found = list_endpoints(experiment_dir)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no endpoints of this experiment")
    for e in found:
        typer.echo(f"{e['endpoint']}  {e['status']}  run_{e['run']}  {e['model']}  {e['created']}")


@app.command()
def undeploy(
    name: Annotated[str, typer.Argument(help="The endpoint (as exp endpoints lists it).")],
    experiment_dir: ExperimentDir = Path("."),
) -> None:
    """Delete a SageMaker endpoint of this experiment, its endpoint config and its model."""
    from ml_exp.deploy.deployments import undeploy as delete_endpoint

    with user_errors("NAME"):
        deleted = delete_endpoint(experiment_dir, name)
    typer.echo("deleted " + ", ".join(deleted))

"""The SageMaker backend: each step as SageMaker jobs from the experiment's own image.

- :mod:`.jobs`: a step of a run (for one model) as a training job through the SDK v3
  ``ModelTrainer``: its specification, submission, waiting and failure reporting;
- :mod:`.tuner`: the tuning step's search driver, a ``HyperparameterTuner`` job over the trials;
- :mod:`.container`: the child half, inside the image: reads SageMaker's contract and calls the
  same step functions as the local backend.

The job's container leaves the step's facts in the run's jobs folder; they become the step's
facts in the manifest, with the job's name. ``sagemaker`` (the SDK) is imported only when a job
is created.
"""

from __future__ import annotations

import json
from typing import Any

from ml_exp.backends.base import Backend, Facts, Task
from ml_exp.core.errors import StepError
from ml_exp.core.names import PREPARATION, TUNING
from ml_exp.experiment.context import Context
from ml_exp.experiment.functions import Functions
from ml_exp.storage.layout import LABELS


class SageMakerBackend(Backend):
    name = "sagemaker"

    def run(self, task: Task, ctx: Context, functions: Functions) -> Facts:
        from ml_exp.backends.sagemaker import jobs

        if task.step == TUNING:
            from ml_exp.backends.sagemaker.tuner import search

            assert task.model is not None
            return {"trials": search(ctx, task.model, task.parameters)}
        job = jobs.run_step(ctx, task.step, task.model)
        facts = {**(job.get("result") or {}), "job_name": job["job_name"]}
        if task.step == PREPARATION and not ctx.run.exists(LABELS):
            raise StepError(
                f"preparation job {facts['job_name']} ended but wrote no {ctx.run.path(LABELS)}; see its logs"
            )
        return facts

    def describe(self, task: Task, ctx: Context) -> list[str]:
        """Every job ``task`` would create, its specification saved in the run, and the upper bound
        of its cost (instances x MAX_RUN_HOURS x the shipped price table); nothing submitted."""
        from ml_exp.backends.sagemaker import jobs

        if task.step == TUNING:
            from ml_exp.backends.sagemaker.tuner import plan

            assert task.model is not None
            planned = plan(ctx, task.model, task.parameters)
            spec = planned["spec"]
            return [
                f"{TUNING}: SageMaker tuning job for {task.model}:",
                _cost(ctx, f"{TUNING} {task.model}", spec["training"], spec["max_jobs"]),
                _json(planned),
            ]
        spec = jobs.run_step(ctx, task.step, task.model, dry_run=True)
        return [
            f"{task.step}: job {spec['job_name']} (saved in {spec['spec_uri']}):",
            _cost(ctx, f"{task.step} {task.model or '(every model)'}", spec["spec"]),
            _json(spec["spec"]),
        ]


BACKEND = SageMakerBackend()


def _cost(ctx: Context, what: str, spec: dict[str, Any], jobs: int = 1) -> str:
    """``cost: <what>: <count> x <type> x <hours> h max ... = at most $X (<the price table>)``."""
    from ml_exp.backends.sagemaker.instances import job_cost_line, table_note

    compute = spec["compute"]
    hours = spec["stopping_condition"]["max_runtime_in_seconds"] / 3600
    line = job_cost_line(
        what,
        compute["instance_type"],
        compute["instance_count"],
        hours,
        jobs,
        compute.get("enable_managed_spot_training", False),
    )
    return f"cost: {line} ({table_note(ctx.config.aws_region)})"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)

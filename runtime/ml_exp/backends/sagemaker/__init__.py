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

from ml_exp.backends.base import Backend, Facts
from ml_exp.experiment.context import Context
from ml_exp.storage.layout import LABELS
from ml_exp.core.names import INFERENCE, PREPARATION, TRAINING, TUNING
from ml_exp.config.search_space import Parameter, parse_space
from ml_exp.core.errors import StepError
from ml_exp.steps.tuning import Trial
from ml_exp.experiment.functions import UDFs


class SageMakerBackend(Backend):
    name = "sagemaker"

    def prepare(self, ctx: Context, udfs: UDFs) -> Facts:
        facts = _job(ctx, PREPARATION, None)
        if not ctx.run.exists(LABELS):
            raise StepError(f"preparation job {facts['job_name']} ended but wrote no {ctx.run.path(LABELS)}; see its logs")
        return facts

    def search(self, ctx: Context, model_name: str, parameters: tuple[Parameter, ...]) -> list[Trial]:
        from ml_exp.backends.sagemaker.tuner import search

        return search(ctx, model_name, parameters)

    def train(self, ctx: Context, model_name: str) -> Facts:
        return _job(ctx, TRAINING, model_name)

    def infer(self, ctx: Context, udfs: UDFs, model_name: str) -> Facts:
        return _job(ctx, INFERENCE, model_name)

    def describe(self, ctx: Context, step: str) -> list[str]:
        """Every job ``step`` would create, its specification saved in the run, and the upper
        bound of its cost (instances x hours x the shipped price table); nothing submitted."""
        from ml_exp.backends.sagemaker import jobs
        from ml_exp.backends.sagemaker.instances import table_note

        lines = []
        for model_name in [None] if step == PREPARATION else ctx.config.model_names:
            if step == TUNING:
                from ml_exp.backends.sagemaker.tuner import plan

                planned = plan(ctx, model_name, parse_space(ctx.config.tuning_space))
                spec = planned["spec"]
                lines += [f"{TUNING}: SageMaker tuning job for {model_name}:",
                          f"cost: {_cost(f'{TUNING} {model_name}', spec['training'], spec['max_jobs'])}", _json(planned)]
            else:
                spec = jobs.run_step(ctx, step, model_name, dry_run=True)
                what = f"{step} {model_name or '(every model)'}"
                lines += [f"{step}: job {spec['job_name']} (saved in {spec['spec_uri']}):", f"cost: {_cost(what, spec['spec'])}",
                          _json(spec["spec"])]
        lines.append(f"cost: upper bounds from the {table_note(ctx.config.aws_region)}")
        return lines


BACKEND = SageMakerBackend()


def _job(ctx: Context, step: str, model_name: str | None) -> Facts:
    """Run a step as a SageMaker job; its facts are what the container left, with the job's name."""
    from ml_exp.backends.sagemaker import jobs

    job = jobs.run_step(ctx, step, model_name)
    return {**(job.get("result") or {}), "job_name": job["job_name"]}


def _cost(what: str, spec: dict[str, Any], jobs: int = 1) -> str:
    """A job's (or a tuning job's ``jobs`` trials') instances x MAX_RUN_HOURS x price."""
    from ml_exp.backends.sagemaker.instances import job_cost_line

    compute = spec["compute"]
    hours = spec["stopping_condition"]["max_runtime_in_seconds"] / 3600
    return job_cost_line(what, compute["instance_type"], compute["instance_count"], hours, jobs, compute.get("enable_managed_spot_training", False))


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)

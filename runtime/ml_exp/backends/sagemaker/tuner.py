"""The SageMaker search driver: one hyperparameter tuning job per model, its trials training jobs.

The trials are jobs of the tuning step (:func:`ml_exp.backends.sagemaker.jobs.job_spec`: a
training job without checkpoints, since a tuning job gives all its trials the same one and a
trial must not resume from another's), created by SageMaker's tuner through the SDK v3
:class:`sagemaker.train.tuner.HyperparameterTuner` over the same :class:`~sagemaker.train.ModelTrainer`.
This driver only runs the trials and reads them back; the tuning step keeps the results. What a
trial differs in from a training job:

- hyperparameter ``step=tuning``: the container trains into the trial's folder, ``trial_<k>``
  for SageMaker's trial ``<tuning job>-<k+1, 3 digits>-<hex>`` (:func:`trial_of`), as a local
  trial would; and the tuned values, as hyperparameters named
  like the settings (``learning_rate``...), which override the settings;
- metric definitions read the objective (and the loss) from the lines the training step prints
  (``ml-exp-metric: eval_<name>=<value>;``, :data:`ml_exp.steps.training_callbacks.METRIC_LINE`);
- how it starts. The tuning API cannot set a container entrypoint, so a trial runs the image's
  own: the training toolkit of the Deep Learning Container the image extends, which runs the
  hyperparameter ``sagemaker_program`` from ``/opt/ml/code``. The SDK sets it to the entry
  script and ships the script in ``sourcedir.tar.gz``, which the toolkit only unpacks into an
  *empty* ``/opt/ml/code``, and the experiment's image has its code there (with a
  requirements.txt, which the toolkit would pip-install before a ``.py`` program). So the program
  is a small shell script in this job's own ``code`` channel (:data:`TRIAL_ENTRY_SOURCE`) that
  hands over to the SDK's driver script, as a training job of the training step starts: torchrun
  runs ``ml_exp_entry.py`` in every process of every instance;
- at most 48 environment variables (SageMaker's limit for a tuning job's training jobs; a
  training job may have 100). When the settings are more, settings whose value is the one in the
  experiment's settings.ini (which the image carries) are left to the image, the settings that
  shape the job (instance types, VPC...) first; the spec lists them (``environment_from_image``).

What the SDK's tuner leaves out of the trials' definition, put back here: the volume KMS key.
It stages its driver scripts under ``<run>/jobs/<tuning job>/tuning-<unix time>/input/``.

In the model's tuning folder it keeps ``sagemaker_tuning_job.json`` (the spec: saved before the
job is created; a later attempt attaches to that job instead of creating another).
``sagemaker`` is imported only when a job is created.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

from ml_exp.backends.sagemaker import jobs
from ml_exp.backends.sagemaker.instances import billed_jobs, record_job
from ml_exp.config import SETTINGS, Config, read_settings_file
from ml_exp.config.search_space import Parameter
from ml_exp.core.errors import StepError
from ml_exp.core.names import TUNING
from ml_exp.core.redact import redact
from ml_exp.experiment.context import Context
from ml_exp.steps.tuning import Trial
from ml_exp.storage.layout import SAGEMAKER_TUNING_JOB, model_key, trial_name, tuning_dir
from ml_exp.storage.store import OutputExistsError

MAX_NAME = 32  # CreateHyperParameterTuningJob: a tuning job's name has at most 32 characters
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$")
ENV_MAX = 48  # HyperParameterTrainingJobDefinition: at most 48 environment variables
STRATEGY = "Bayesian"
FINAL = ("Completed", "Failed", "Stopped")
GONE = ("Deleting", "DeleteFailed")
COUNTERS = (
    ("Completed", "completed"),
    ("InProgress", "in progress"),
    ("RetryableError", "retrying"),
    ("NonRetryableError", "failed"),
    ("Stopped", "stopped"),
)
# A trial's TrainingJobStatus as the tuning step's trial state.
STATES = {
    "InProgress": "running",
    "Completed": "completed",
    "Failed": "failed",
    "Stopping": "stopped",
    "Stopped": "stopped",
}
METRIC_REGEX = r"ml-exp-metric: {name}=([-+0-9.eE]+);"  # matches ml_exp.steps.training_callbacks.METRIC_LINE
SCALING = {
    "uniform": ("Continuous", "Linear"),
    "log-uniform": ("Continuous", "Logarithmic"),
    "int": ("Integer", "Linear"),
    "log-int": ("Integer", "Logarithmic"),
}
# Settings left to the image's settings.ini first when the environment is over ENV_MAX: those
# that shape the job rather than what runs in it, then the rest (training settings last).
LEAVE_FIRST = ("sagemaker", "steps", "tuning", "identity", "tracking", "where", "data", "training")
TRIAL_ENTRY = "ml_exp_trial.sh"
# The toolkit runs a program that is not a .py file as ./<program> in /opt/ml/code (and then, unlike
# for a .py program, installs no requirements.txt it finds there): the script in the code channel.
TRIAL_PROGRAM = f"../input/data/code/{TRIAL_ENTRY}"
TRIAL_ENTRY_SOURCE = """#!/bin/sh
# ml-exp trial entry for SageMaker tuning jobs (from ml_exp.backends.sagemaker.tuner).
# A tuning job cannot set the container's entrypoint: the image's training toolkit runs this script
# (hyperparameter sagemaker_program) with the hyperparameters as arguments. It hands over to the
# SageMaker SDK's driver script, as a training job starts: torchrun runs ml_exp_entry.py in every
# process, and the container reads the hyperparameters from hyperparameters.json.
exec /bin/bash /opt/ml/input/data/sm_drivers/sm_train.sh
"""


def tuning_job_name(experiment: str, run_num: int, model: str, token: str | None = None) -> str:
    """``<experiment>-r<N>-<model>-<token>``, valid as a tuning job name (at most 32 characters).

    ``token`` (default: 6 random hex digits) makes retries unique. Too long: the experiment and
    model parts are shortened and a hash of the full name is added, so two long names stay
    distinct. (SageMaker names the trials ``<tuning job>-<NNN>-<hex>``.)"""
    token = jobs.clean_name(token if token is not None else secrets.token_hex(3))[:8] or secrets.token_hex(3)
    exp, mod, run = jobs.clean_name(experiment) or "exp", jobs.clean_name(model_key(model)) or "model", f"r{run_num}"
    name = "-".join([exp, run, mod, token])
    if len(name) > MAX_NAME:
        digest = hashlib.sha256("\0".join([experiment, str(run_num), model]).encode()).hexdigest()[:4]
        room = MAX_NAME - len("-".join([run, digest, token])) - 2
        exp = exp[: max(room - len(mod), room // 2)].strip("-")
        mod = mod[: room - len(exp)].strip("-")
        name = "-".join(p for p in [exp, run, mod, digest, token] if p)
    if not (len(name) <= MAX_NAME and NAME_RE.match(name)):
        raise StepError(
            f"cannot name a SageMaker tuning job for run {run_num} in {MAX_NAME} characters ({name}); use a smaller "
            "run number"
        )
    return name


def parameter_ranges(parameters: tuple[Parameter, ...]) -> dict[str, list[dict[str, Any]]]:
    """The search space as CreateHyperParameterTuningJob's ParameterRanges (values are strings)."""
    ranges: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [],
        "IntegerParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for p in parameters:
        if p.kind == "choice":
            ranges["CategoricalParameterRanges"].append({"Name": p.name, "Values": [_text(c) for c in p.choices]})
        else:
            kind, scaling = SCALING[p.kind]
            ranges[f"{kind}ParameterRanges"].append(
                {"Name": p.name, "MinValue": _text(p.low), "MaxValue": _text(p.high), "ScalingType": scaling}
            )
    return ranges


def _text(value: float | int | None) -> str:
    return str(int(value)) if isinstance(value, int) else repr(float(value))


def metric_definitions(objective: str) -> list[dict[str, str]]:
    """How SageMaker reads the objective (and the loss) from a trial's log."""
    names = [f"eval_{objective}"] + (["eval_loss"] if objective != "loss" else [])
    return [{"Name": name, "Regex": METRIC_REGEX.format(name=re.escape(name))} for name in names]


def tuning_spec(
    ctx: Context, model_name: str, parameters: tuple[Parameter, ...], name: str | None = None
) -> dict[str, Any]:
    """The complete, JSON-serialisable description of the tuning job :func:`search` creates
    (saved before it is created); it holds no secret."""
    config = ctx.config
    if not parameters:
        raise StepError("TUNING_SPACE is empty: nothing to tune on SageMaker; describe the search space")
    run = ctx.run
    name = name or (tuning_job_name(config.experiment_name, run.num, model_name) if run is not None else None)
    training = jobs.job_spec(ctx, TUNING, model_name, name=name)  # the checks of a training job too
    name = training["job_name"]
    training["environment"], training["environment_from_image"] = fit_environment(config, training["environment"])
    staging = training["staging"]
    staged = f"s3://{staging['bucket']}/{staging['key_prefix']}/{name}"
    # the SDK stages its driver scripts and a sourcedir.tar.gz under a folder named by the time
    staging["channels"] = {
        "code": f"{staged}/input/code",
        "sm_drivers": f"{staged}/tuning-<unix time>/input/sm_drivers",
    }
    staging["sourcedir"] = f"{staged}/tuning-<unix time>/input/sourcedir/sourcedir.tar.gz"
    training["trial_entry"] = {"sagemaker_program": TRIAL_PROGRAM, "script": f"{staged}/input/code/{TRIAL_ENTRY}"}
    objective = config.objective
    spec = {
        "tuning_job_name": name,
        "experiment": config.experiment_name,
        "run": run.num,
        "model": model_name,
        "region": config.aws_region,
        "objective": {
            "name": objective,
            "metric_name": f"eval_{objective}",
            "direction": config.tuning_direction,
            "type": "Maximize" if config.tuning_direction == "maximize" else "Minimize",
        },
        "metric_definitions": metric_definitions(objective),
        "parameters": [
            {"name": p.name, "kind": p.kind, "low": p.low, "high": p.high, "choices": list(p.choices)}
            for p in parameters
        ],
        "parameter_ranges": parameter_ranges(parameters),
        "strategy": STRATEGY,
        "random_seed": config.seed,
        "max_jobs": config.tuning_trials,
        "max_parallel_jobs": config.tuning_parallel_trials,
        "training": training,
        "sdk": training["sdk"],
    }
    return redact(json.loads(json.dumps(spec)))


def fit_environment(config: Config, environment: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """At most ENV_MAX variables: leave settings to the image's settings.ini (where their value
    is the same) until the rest fits (no secret travels in a job: ``jobs.SECRET_ENV`` is empty).
    Returns (environment, the settings left to the image)."""
    excess = len(environment) + sum(1 for key in jobs.SECRET_ENV if key not in environment) - ENV_MAX
    if excess <= 0:
        return environment, []
    in_image = read_settings_file(config.experiment_dir)
    order = {group: i for i, group in enumerate(LEAVE_FIRST)}
    candidates = [
        s.key
        for s in sorted(SETTINGS, key=lambda s: order.get(s.group, len(order)))
        if s.key in environment and environment[s.key] == in_image.get(s.key)
    ]
    if len(candidates) < excess:
        overrides = sorted(key for key in config.raw if environment.get(key) != in_image.get(key))
        raise StepError(
            f"a SageMaker tuning job's trials get at most {ENV_MAX} environment variables, and {len(environment)} "
            "settings "
            f"and variables are needed: the settings set in the environment ({', '.join(overrides)}) differ from "
            "settings.ini. "
            "Put some of them in settings.ini (and rebuild the image), then run again"
        )
    left = set(candidates[:excess])
    return {key: value for key, value in environment.items() if key not in left}, sorted(left)


def create(spec: dict[str, Any]) -> None:
    """Create the tuning job ``spec`` describes through the SDK's HyperparameterTuner."""
    with warnings.catch_warnings():  # the SDK imports its own deprecated sagemaker.train.configs
        warnings.simplefilter("ignore", DeprecationWarning)
        from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter
        from sagemaker.train.tuner import HyperparameterTuner

    training, name = spec["training"], spec["tuning_job_name"]
    ranges: dict[str, Any] = {}
    for r in spec["parameter_ranges"]["ContinuousParameterRanges"]:
        ranges[r["Name"]] = ContinuousParameter(
            float(r["MinValue"]), float(r["MaxValue"]), scaling_type=r["ScalingType"]
        )
    for r in spec["parameter_ranges"]["IntegerParameterRanges"]:
        ranges[r["Name"]] = IntegerParameter(int(r["MinValue"]), int(r["MaxValue"]), scaling_type=r["ScalingType"])
    for r in spec["parameter_ranges"]["CategoricalParameterRanges"]:
        ranges[r["Name"]] = CategoricalParameter(list(r["Values"]))

    # the SDK stages its scripts in the run, as the spec says (jobs.staging_in_the_run)
    with tempfile.TemporaryDirectory(prefix="ml-exp-sagemaker-entry-") as source_dir, jobs.staging_in_the_run():
        for script, source in ((jobs.ENTRY_SCRIPT, jobs.ENTRY_SOURCE), (TRIAL_ENTRY, TRIAL_ENTRY_SOURCE)):
            with open(os.path.join(source_dir, script), "w") as f:
                f.write(source)
        trainer = jobs.model_trainer(training, source_dir)
        staging = training["staging"]
        # The tuner stages the SDK's driver scripts under <base_job_name>/tuning-<time>/: in the run.
        trainer.base_job_name = f"{staging['key_prefix']}/{name}"
        code = trainer.create_input_data_channel("code", source_dir, key_prefix=f"{staging['key_prefix']}/{name}/input")
        tuner = HyperparameterTuner(
            model_trainer=trainer,
            objective_metric_name=spec["objective"]["metric_name"],
            objective_type=spec["objective"]["type"],
            hyperparameter_ranges=ranges,
            metric_definitions=spec["metric_definitions"],
            strategy=spec["strategy"],
            max_jobs=spec["max_jobs"],
            max_parallel_jobs=spec["max_parallel_jobs"],
            random_seed=spec["random_seed"],
        )
        prepare = tuner._prepare_model_trainer_for_tuning

        def prepare_then_start_trials_from_the_code_channel(
            model_trainer: Any, inputs: Any = None, job_name: Any = None, **kwargs: Any
        ) -> None:
            prepare(model_trainer, inputs, job_name, **kwargs)  # sets sagemaker_program to the entry script
            model_trainer.hyperparameters["sagemaker_program"] = training["trial_entry"]["sagemaker_program"]

        tuner._prepare_model_trainer_for_tuning = prepare_then_start_trials_from_the_code_channel
        build, volume_key = tuner._build_training_job_definition, training["compute"].get("volume_kms_key_id")

        def build_with_the_volume_key(inputs: Any) -> Any:
            definition = build(inputs)  # the SDK leaves out the ModelTrainer's volume KMS key
            if volume_key:
                definition.resource_config.volume_kms_key_id = volume_key
            return definition

        tuner._build_training_job_definition = build_with_the_volume_key
        quiet, sdk_log = jobs.QuietSDK(), logging.getLogger("sagemaker.core.utils.utils")
        sdk_log.addFilter(quiet)
        try:
            tuner.tune(inputs=[*trainer.input_data_config, code], job_name=name, wait=False)
        finally:
            sdk_log.removeFilter(quiet)
    created = getattr(tuner.latest_tuning_job, "hyper_parameter_tuning_job_name", name)
    if created != name:
        raise RuntimeError(f"the SageMaker SDK named the tuning job {created!r} instead of {name!r}")


def _counters(description: dict[str, Any]) -> str:
    """The trials by state, e.g. '3 completed, 2 in progress, 0 retrying, 1 failed, 0 stopped'."""
    counters = description.get("TrainingJobStatusCounters") or {}
    return ", ".join(f"{counters.get(key, 0)} {label}" for key, label in COUNTERS)


def wait_for_tuning_job(
    client: Any,
    name: str,
    region: str,
    poll_seconds: float = 30,
    on_status: Callable[[str, str, str], None] | None = None,
) -> dict[str, Any]:
    """Poll DescribeHyperParameterTuningJob until the job ends; ``on_status(name, status,
    trial counts)`` on each change. Returns the final description; StepError when it failed,
    was stopped or deleted."""
    last = None
    while True:
        description = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        status, counts = description["HyperParameterTuningJobStatus"], _counters(description)
        if (status, counts) != last:
            last = (status, counts)
            if on_status:
                on_status(name, status, counts)
        if status in FINAL or status in GONE:
            break
        time.sleep(poll_seconds)
    description.pop("ResponseMetadata", None)
    if status != "Completed":
        reason = description.get("FailureReason") or {"Stopped": "it was stopped (by a user, or a limit ran out)"}.get(
            status, "no reason given"
        )
        raise StepError(
            f"SageMaker tuning job {name} {status.lower()}: {reason}. Its trials' logs are in CloudWatch log group "
            f"{jobs.LOG_GROUP}, "
            f"streams {name}-*: "
            f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/hyper-tuning-jobs/{name} "
            "(or: aws sagemaker list-training-jobs-for-hyper-parameter-tuning-job --hyper-parameter-tuning-job-name "
            f"{name} --region {region})"
        )
    return description


def _typed(parameters: list[dict[str, Any]], tuned: dict[str, str]) -> dict[str, float | int]:
    """A trial's values (strings from SageMaker) typed as the search space says."""
    values: dict[str, float | int] = {}
    for p in parameters:
        if p["name"] not in tuned:
            continue
        is_int = p["kind"] in ("int", "log-int") or (
            p["kind"] == "choice" and all(isinstance(c, int) for c in p["choices"])
        )
        value = float(tuned[p["name"]])
        values[p["name"]] = int(round(value)) if is_int else value
    return values


def trial_of(training_job: str) -> str:
    """The trial's name (``trial_<k>``, numbered from 0 as optuna's) of a training job SageMaker's
    tuner named ``<tuning job>-<k+1, 3 digits>-<8 hex>``; the job's own name if it is not one."""
    match = re.search(r"-(\d{3,})-[0-9a-f]{8}$", training_job)
    return trial_name(int(match.group(1)) - 1) if match else (training_job or "trial")


def _trials(client: Any, name: str, parameters: list[dict[str, Any]]) -> list[Trial]:
    trials, token = [], None
    while True:
        page = client.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name, MaxResults=100, **({"NextToken": token} if token else {})
        )
        for job in page["TrainingJobSummaries"]:
            metric = job.get("FinalHyperParameterTuningJobObjectiveMetric")
            trials.append(
                {
                    "trial": trial_of(job["TrainingJobName"]),
                    "state": STATES.get(job["TrainingJobStatus"], "running"),
                    "value": float(metric["Value"]) if metric else None,
                    "params": _typed(parameters, job.get("TunedHyperParameters", {})),
                    "job_name": job["TrainingJobName"],
                }
            )
        token = page.get("NextToken")
        if not token:
            return sorted(trials, key=lambda t: t["job_name"])  # by trial number (3 digits and more)


def _exists(client: Any, name: str) -> bool:
    """Whether SageMaker has the tuning job ``name`` (False: it was never created)."""
    try:
        client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        return True
    except Exception as exc:  # noqa: BLE001 - only "no such job" means create it
        response = getattr(exc, "response", None)
        error = response.get("Error", {}) if isinstance(response, dict) else {}
        message = str(error.get("Message", "")).lower()
        if error.get("Code") == "ResourceNotFound" or (
            error.get("Code") == "ValidationException" and ("not found" in message or "find" in message)
        ):
            return False
        raise


def saved_spec(ctx: Context, model_name: str, parameters: tuple[Parameter, ...]) -> tuple[dict[str, Any], str, bool]:
    """The tuning job of ``model_name`` in this run: (spec, its URI, whether an earlier attempt
    saved it). A new spec is saved before any job is created, so that a later attempt finds it."""
    path = f"{tuning_dir(model_name)}/{SAGEMAKER_TUNING_JOB}"
    if not ctx.run.exists(path):
        spec = tuning_spec(ctx, model_name, parameters)
        try:
            return spec, ctx.run.write_json(path, spec), False
        except OutputExistsError:  # another attempt saved one meanwhile: that one counts
            pass
    return ctx.run.read_json(path), ctx.run.path(path), True


def plan(ctx: Context, model_name: str, parameters: tuple[Parameter, ...]) -> dict[str, Any]:
    """``exp run --dry-run``: save (or find) the spec, create nothing; ``{"tuning_job_name",
    "status": "dry-run", "spec_uri", "spec"}``."""
    spec, spec_uri, _ = saved_spec(ctx, model_name, parameters)
    return {"tuning_job_name": spec["tuning_job_name"], "status": "dry-run", "spec_uri": spec_uri, "spec": spec}


def search(
    ctx: Context,
    model_name: str,
    parameters: tuple[Parameter, ...],
    poll_seconds: float = 30,
    on_status: Callable[[str, str, str], None] | None = None,
) -> list[Trial]:
    """Run the trials of ``model_name`` as a SageMaker tuning job; every trial, as the tuning step
    takes them. When an earlier attempt saved a spec, its job is used (attached to, or created
    when it never was). StepError when the job fails or is stopped."""
    spec, spec_uri, earlier = saved_spec(ctx, model_name, parameters)
    name, region = spec["tuning_job_name"], spec["region"]
    if on_status is None:

        def on_status(job: str, status: str, counts: str) -> None:
            ctx.log.info("SageMaker tuning job %s: %s (trials: %s)", job, status, counts)

    training = spec["training"]
    client = jobs.sagemaker_client(region)
    try:
        if earlier and _exists(client, name):
            ctx.log.info("tuning %s: attaching to SageMaker tuning job %s (from %s)", model_name, name, spec_uri)
        else:
            ctx.log.info(
                "tuning %s: SageMaker tuning job %s (%s trials, %s at a time, each %s x %s)",
                model_name,
                name,
                spec["max_jobs"],
                spec["max_parallel_jobs"],
                training["compute"]["instance_count"],
                training["compute"]["instance_type"],
            )
            create(spec)
        wait_for_tuning_job(client, name, region, poll_seconds, on_status)
        trials = _trials(client, name, spec["parameters"])
        billing = billed_jobs(
            lambda job: client.describe_training_job(TrainingJobName=job), [t["job_name"] for t in trials]
        )
        record_job(ctx.run, name, TUNING, model_name, billing)
        return trials
    except KeyboardInterrupt:  # the job goes on (and costs) without us: say how to stop it
        ctx.log.warning(
            "SageMaker tuning job %s keeps running; stop it with: aws sagemaker stop-hyper-parameter-tuning-job "
            "--hyper-parameter-tuning-job-name %s --region %s",
            name,
            name,
            region,
        )
        raise
    except StepError:
        raise
    except Exception as exc:  # noqa: BLE001 - AWS's and the SDK's errors: one line naming the role and the fix
        message = jobs.aws_error(exc, {"job_name": name, "region": region, "role": training.get("role")})
        if message is None:
            raise
        raise StepError(message) from None

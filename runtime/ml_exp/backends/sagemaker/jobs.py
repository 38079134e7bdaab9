"""SageMaker jobs: a step of a run (for one model) as a SageMaker training job from the experiment's image.

One job per step (and model): the image is ``IMAGE_URI``, the command is the container side of
this backend (``python -m ml_exp.backends.sagemaker.container <step>``), submitted through
the SageMaker Python SDK v3 :class:`sagemaker.train.ModelTrainer`. The job/container contract:

- hyperparameters ``{"step", "run", "model"}`` (strings);
- environment: every setting of the run (``config.raw``; they override the image's settings.ini)
  and ``ML_EXP_EXPERIMENT_DIR=/opt/ml/code``; no secret: the W&B key travels by the name of its
  Secrets Manager secret (``WANDB_API_KEY_SECRET``), read by the container at start;
- channels: preparation ``reconciled``; training ``prepared``; inference ``model`` + ``prepared``;
- output: the run's jobs folder (SageMaker writes ``<job>/output/model.tar.gz``); training
  checkpoints: the run's checkpoint folder of the model <-> ``/opt/ml/checkpoints``.

What the SDK adds: with a ``SourceCode`` it uploads its driver scripts as channel ``sm_drivers``
and overrides the image's entrypoint with ``/bin/bash -c .../sm_drivers/sm_train.sh``. Training
runs under the SDK's ``Torchrun`` driver, which needs an entry *script*: the runtime ships a
tiny one (``ml_exp_entry.py``, channel ``code``) that calls the container side. Preparation
and inference run the container command directly, one process. Everything the SDK stages goes
under the run's jobs folder, ``<job>/input/``. ``sagemaker`` is imported only when a job is submitted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from ml_exp.backends.sagemaker.instances import billed, record_job, volume_kms_key
from ml_exp.backends.sagemaker.sdk_errors import explain
from ml_exp.core.errors import StepError
from ml_exp.core.names import INFERENCE, PREPARATION, TOKENS, TRAINING, TUNING
from ml_exp.core.redact import redact
from ml_exp.experiment.context import Context
from ml_exp.storage.layout import JOBS, RECONCILED, checkpoint_dir, job_result, model_dir, model_key, prepared_dir
from ml_exp.storage.layout import job_spec as job_spec_file

# The steps that run as SageMaker jobs (a tuning trial is a job of the tuning step).
JOB_STEPS = (PREPARATION, TUNING, TRAINING, INFERENCE)
# A training image starts as "<image> train" (SageMaker's contract): that word names no step.
SAGEMAKER_TRAIN_ARGUMENT = "train"
CONTAINER = "ml_exp.backends.sagemaker.container"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
EXPERIMENT_DIR = "/opt/ml/code"
CHECKPOINTS = "/opt/ml/checkpoints"
SECRET_ENV: tuple[str, ...] = ()  # no secret travels in a job: ml_exp.backends.sagemaker.secret_store
ENTRY_SCRIPT = "ml_exp_entry.py"
ENTRY_SOURCE = '''"""ml-exp entry script for the SageMaker SDK's torchrun driver (from ml_exp.backends.sagemaker.jobs).

torchrun runs it in every process as ``ml_exp_entry.py --step S --run N --model M``."""
import sys

from ml_exp.backends.sagemaker.container import main

args = sys.argv[1:]
sys.exit(main([args[args.index("--step") + 1]] if "--step" in args[:-1] else []))  # none: the hyperparameters say
'''
FINAL = ("Completed", "Failed", "Stopped")
MAX_NAME = 63
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ENV_VALUE_MAX = 512  # CreateTrainingJob: environment values are at most 512 characters
_sdk_lock = threading.Lock()


class QuietSDK(logging.Filter):
    """Drop SDK warnings that mislead here: the container reads the hyperparameters from
    hyperparameters.json, and the region is the boto session's (AWS_REGION)."""

    NOISE = ("Hyperparameters are set but are not passed", "No region provided")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


class JobFailed(Exception):
    """A SageMaker job ended Failed or Stopped; the message says why and where its logs are."""

    def __init__(
        self, job_name: str, status: str, failure_reason: str | None, region: str, secondary_status: str | None = None
    ):
        self.job_name, self.status, self.failure_reason = job_name, status, failure_reason
        self.secondary_status, self.region = secondary_status, region
        self.log_group, self.log_stream_prefix = LOG_GROUP, job_name
        self.logs_url = (
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/"
            f"log-group/$252Faws$252Fsagemaker$252FTrainingJobs/log-events$3FlogStreamNameFilter$3D{job_name}"
        )
        reason = failure_reason or {"Stopped": "it was stopped (by a user, or MaxRuntime / MaxWaitTime ran out)"}.get(
            status, "no reason given"
        )
        detail = f" ({secondary_status})" if secondary_status and secondary_status != status else ""
        super().__init__(
            f"SageMaker job {job_name} {status.lower()}{detail}: {reason}. Its logs are in CloudWatch log group "
            f"{LOG_GROUP}, streams {job_name}/algo-*: {self.logs_url} "
            f"(or: aws logs tail {LOG_GROUP} --log-stream-name-prefix {job_name} --region {region})"
        )


def clean_name(text: str) -> str:
    """Letters and digits, other runs of characters -> one '-', no '-' at the ends."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def job_name(experiment: str, run_num: int, step: str, model: str | None, token: str | None = None) -> str:
    """``<experiment>-r<N>-<step token>-<model>-<token>``, valid as a SageMaker job name.

    ``token`` (default: 6 random hex digits) makes retries unique; give it to get the same name
    again. Too long: the experiment and model parts are shortened and a hash of the full name
    is added, so two long names stay distinct."""
    return sagemaker_name(experiment, run_num, clean_name(TOKENS.get(step, step)) or "step", model, token, salt=step)


def sagemaker_name(
    experiment: str, run_num: int, kind: str | None, model: str | None, token: str | None = None, salt: str = ""
) -> str:
    """``<experiment>-r<N>[-<kind>]-<model>-<token>`` (<= 63 characters, SageMaker's name rules):
    job names, and endpoint names (no kind), carry the experiment and run number in front."""
    token = clean_name(token if token is not None else secrets.token_hex(3))[:16] or secrets.token_hex(3)
    exp, mod = clean_name(experiment) or "exp", clean_name(model_key(model)) if model else ""
    fixed = [f"r{run_num}", *([kind] if kind else [])]
    name = "-".join(p for p in [exp, *fixed, mod, token] if p)
    if len(name) > MAX_NAME:
        digest = hashlib.sha256("\0".join([experiment, str(run_num), salt, model or ""]).encode()).hexdigest()[:6]
        room = MAX_NAME - len("-".join([*fixed, digest, token])) - (2 if mod else 1)
        exp = exp[: max(room - len(mod), room // 2) if mod else room].strip("-")
        mod = mod[: room - len(exp)].strip("-")
        name = "-".join(p for p in [exp, *fixed, mod, digest, token] if p)
    assert len(name) <= MAX_NAME and NAME_RE.match(name), name
    return name


def _s3_dir(ctx: Context, relpath: str) -> str:
    return ctx.run.path(relpath) + "/"


def job_spec(ctx: Context, step: str, model_name: str | None, name: str | None = None) -> dict[str, Any]:
    """The complete, JSON-serialisable description of the job :func:`submit` will create
    (``exp run --dry-run`` prints and saves it): all of it, since it holds no secret."""
    config, run = ctx.config, ctx.run
    if step not in JOB_STEPS:
        raise StepError(f"the {step} step does not run as a SageMaker job (SageMaker runs: {', '.join(JOB_STEPS)})")
    if step != PREPARATION and not model_name:
        raise StepError(f"the {step} step needs a model name")
    if run is None or not run.is_remote:
        raise StepError(
            "BACKEND = sagemaker needs STORAGE_URI = s3://bucket/prefix (SageMaker jobs read and write S3), not "
            f"{config.storage_uri}"
        )
    for key in ("SAGEMAKER_ROLE_ARN", "IMAGE_URI"):
        if not config.raw.get(key):
            raise StepError(f"{key} is required when BACKEND = sagemaker; set it in settings.ini or the environment")
    model_name = model_name if step != PREPARATION else None  # preparation encodes for every model
    name = name or job_name(config.experiment_name, run.num, step, model_name)

    environment = {key: str(value) for key, value in config.raw.items()}
    environment["ML_EXP_EXPERIMENT_DIR"] = EXPERIMENT_DIR
    too_long = sorted(key for key, value in environment.items() if len(value) > ENV_VALUE_MAX)
    if too_long:
        raise StepError(
            f"{', '.join(too_long)}: longer than the {ENV_VALUE_MAX} characters SageMaker allows an environment "
            "variable of a job; shorten it"
        )

    if step == PREPARATION:
        channels = {"reconciled": _s3_dir(ctx, RECONCILED)}
    elif step in (TRAINING, TUNING):
        channels = {"prepared": _s3_dir(ctx, prepared_dir(model_name))}
    else:
        channels = {"model": _s3_dir(ctx, model_dir(model_name)), "prepared": _s3_dir(ctx, prepared_dir(model_name))}
    training = step in (TRAINING, TUNING)  # a tuning trial trains
    kms = config.kms_key_id or None
    instance_type = config.training_instance_type if training else getattr(config, f"{step}_instance_type")
    compute = {
        "instance_type": instance_type,
        "instance_count": config.training_instance_count if training else 1,
        "volume_size_in_gb": config.volume_size_gb,
        # not for types with local NVMe storage: AWS refuses a volume key there (instances.py)
        "volume_kms_key_id": volume_kms_key(instance_type, kms),
        "enable_managed_spot_training": config.use_spot,
    }
    stopping = {"max_runtime_in_seconds": round(config.max_run_hours * 3600)}
    if config.use_spot:
        stopping["max_wait_time_in_seconds"] = round(config.max_wait_hours * 3600)
    if training:  # the SDK's torchrun driver runs an entry script, in every process of every instance
        source_code = {
            "source_dir": f"<{ENTRY_SCRIPT} written by ml_exp.backends.sagemaker.submit()>",
            "entry_script": ENTRY_SCRIPT,
        }
        distributed = {"torchrun": {"process_count_per_node": config.num_processes}}  # None: one per GPU
    else:
        source_code, distributed = {"command": f"python3 -m {CONTAINER} {step}"}, None
    bucket = run.transport.bucket
    staging_prefix = run.uri[len(f"s3://{bucket}/") :] + f"/{JOBS}"
    staged = f"s3://{bucket}/{staging_prefix}/{name}/input"
    spec = {
        "job_name": name,
        "experiment": config.experiment_name,
        "run": run.num,
        "step": step,
        "model": model_name,
        "region": config.aws_region,
        "role": config.sagemaker_role_arn,
        "training_image": config.image_uri,
        "hyperparameters": {"step": step, "run": str(run.num), "model": model_name or ""},
        "environment": environment,
        "input_data": channels,
        "output_data_config": _drop_none({"s3_output_path": _s3_dir(ctx, JOBS), "kms_key_id": kms}),
        # not for tuning trials: a tuning job gives all its trials one, and a trial must not
        # resume from another trial's checkpoints
        "checkpoint_config": {"s3_uri": _s3_dir(ctx, checkpoint_dir(model_name)), "local_path": CHECKPOINTS}
        if step == TRAINING
        else None,
        "compute": _drop_none(compute),
        "stopping_condition": stopping,
        "networking": {"subnets": list(config.subnets), "security_group_ids": list(config.security_group_ids)}
        if config.subnets
        else None,
        "source_code": source_code,
        "distributed": distributed,
        # what the SDK stages itself: its driver scripts (and the entry script) as extra channels
        "staging": {
            "bucket": bucket,
            "key_prefix": staging_prefix,
            "channels": {**({"code": f"{staged}/code"} if training else {}), "sm_drivers": f"{staged}/sm_drivers"},
        },
        "sdk": {"sagemaker": _version("sagemaker"), "ml-exp": _version("ml-exp")},
    }
    return redact(json.loads(json.dumps(spec)))  # plain JSON types only; no credential in an image URI...


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _boto_session(region: str) -> Any:
    import boto3

    return boto3.Session(region_name=region)


def sagemaker_client(region: str) -> Any:
    """The client that polls jobs (a function, so tests can hand in a stubbed one)."""
    return _boto_session(region).client("sagemaker")


def model_trainer(spec: dict[str, Any], source_dir: str | None) -> Any:
    """The ModelTrainer for ``spec``, exactly as saved (no secret is added)."""
    with warnings.catch_warnings():  # the SDK imports its own deprecated sagemaker.train.configs
        warnings.simplefilter("ignore", DeprecationWarning)
        from sagemaker.core.training.configs import (
            CheckpointConfig,
            Compute,
            InputData,
            Networking,
            OutputDataConfig,
            SourceCode,
            StoppingCondition,
        )
        from sagemaker.train import ModelTrainer, Session
        from sagemaker.train.distributed import Torchrun

    environment = dict(spec["environment"])
    staging = spec["staging"]
    # An explicit SDK config: no user/organisation defaults slip into the job (the spec is all of
    # it), and no telemetry calls. An explicit default bucket: no STS call to find the account.
    sdk_config = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
    session = Session(
        boto_session=_boto_session(spec["region"]), default_bucket=staging["bucket"], sagemaker_config=sdk_config
    )
    source = dict(spec["source_code"])
    if "entry_script" in source:
        source["source_dir"] = source_dir
    distributed = spec.get("distributed") or {}
    return ModelTrainer(
        sagemaker_session=session,
        role=spec["role"],
        base_job_name=spec["job_name"],
        input_s3_key_prefix=staging["key_prefix"],
        training_image=spec["training_image"],
        source_code=SourceCode(**source),
        distributed=Torchrun(**distributed["torchrun"]) if "torchrun" in distributed else None,
        compute=Compute(**spec["compute"]),
        networking=Networking(**spec["networking"]) if spec.get("networking") else None,
        stopping_condition=StoppingCondition(**spec["stopping_condition"]),
        output_data_config=OutputDataConfig(**spec["output_data_config"]),
        checkpoint_config=CheckpointConfig(**spec["checkpoint_config"]) if spec.get("checkpoint_config") else None,
        input_data_config=[InputData(channel_name=name, data_source=uri) for name, uri in spec["input_data"].items()],
        environment=environment,
        hyperparameters=dict(spec["hyperparameters"]),
    )


@contextmanager
def staging_in_the_run() -> Iterator[None]:
    """The SDK stages its scripts in the run's bucket, where the spec says. Left alone, it simulates
    ``s3:PutObject`` on ``<bucket>/*`` for the role, and for a role allowed only the runs prefix
    stages them under the output path instead (``<run>/jobs/<run prefix>/jobs/...``)."""
    from sagemaker.train.model_trainer import ModelTrainer

    resolve = ModelTrainer._resolve_staging_bucket
    ModelTrainer._resolve_staging_bucket = lambda trainer: (trainer.sagemaker_session.default_bucket(), None)
    try:
        yield
    finally:
        ModelTrainer._resolve_staging_bucket = resolve


def _create(spec: dict[str, Any]) -> None:
    """Create the job named ``spec["job_name"]`` through ModelTrainer.train(wait=False)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import sagemaker.train.model_trainer as sdk_model_trainer

    with tempfile.TemporaryDirectory(prefix="ml-exp-sagemaker-entry-") as source_dir:
        with open(os.path.join(source_dir, ENTRY_SCRIPT), "w") as f:
            f.write(ENTRY_SOURCE)
        trainer = model_trainer(spec, source_dir)
        # ModelTrainer names a job <base_job_name>-<timestamp>; the spec's name is already unique
        # and was saved (and maybe printed) before submission, so it is used as it is. No public
        # API takes a job name (SDK 3.27: train() calls its module's _get_unique_name), hence the
        # patch, under a lock; _latest_training_job is likewise the only handle on the job created.
        quiet, sdk_log = QuietSDK(), logging.getLogger("sagemaker.core.utils.utils")
        with _sdk_lock, staging_in_the_run():
            unique_name = sdk_model_trainer._get_unique_name
            sdk_model_trainer._get_unique_name = lambda base, max_length=MAX_NAME: base
            sdk_log.addFilter(quiet)
            try:
                trainer.train(wait=False, logs=False)
            finally:
                sdk_model_trainer._get_unique_name = unique_name
                sdk_log.removeFilter(quiet)
    created = getattr(trainer._latest_training_job, "training_job_name", spec["job_name"])
    if created != spec["job_name"]:
        raise RuntimeError(f"the SageMaker SDK named the job {created!r} instead of {spec['job_name']!r}")


def wait_for_job(
    client: Any,
    name: str,
    region: str,
    poll_seconds: float = 30,
    on_status: Callable[[str, str, str], None] | None = None,
) -> dict[str, Any]:
    """Poll DescribeTrainingJob until the job ends; ``on_status(name, status, secondary)`` on
    each change. Returns the final description; JobFailed when it failed or was stopped."""
    last = None
    while True:
        description = client.describe_training_job(TrainingJobName=name)
        status, secondary = description["TrainingJobStatus"], description.get("SecondaryStatus", "")
        if (status, secondary) != last:
            last = (status, secondary)
            if on_status:
                on_status(name, status, secondary)
        if status in FINAL:
            break
        time.sleep(poll_seconds)
    description.pop("ResponseMetadata", None)
    if status != "Completed":
        raise JobFailed(name, status, description.get("FailureReason"), region, secondary)
    return description


def submit(
    ctx: Context,
    spec: dict[str, Any],
    wait: bool = True,
    poll_seconds: float = 30,
    on_status: Callable[[str, str, str], None] | None = None,
) -> dict[str, Any]:
    """Create the job ``spec`` describes through the SDK's ModelTrainer; with ``wait``, poll until it
    ends (JobFailed if Failed or Stopped).
    Returns the job's last description."""
    _create(spec)
    client = sagemaker_client(spec["region"])
    if not wait:
        return client.describe_training_job(TrainingJobName=spec["job_name"])
    try:
        return wait_for_job(client, spec["job_name"], spec["region"], poll_seconds, on_status)
    except KeyboardInterrupt:  # the job goes on (and costs) without us: say how to stop it
        ctx.log.warning(
            "SageMaker job %s keeps running; stop it with: aws sagemaker stop-training-job "
            "--training-job-name %s --region %s",
            spec["job_name"],
            spec["job_name"],
            spec["region"],
        )
        raise


def aws_error(exc: Exception, spec: dict[str, Any]) -> str | None:
    """One line for an error creating or watching a job: AWS's (a ClientError), the SDK's (its
    RoleValidationError and the rest), naming the role and what to fix (sdk_errors); None for
    anything else (a bug: it keeps its traceback)."""
    return explain(exc, f"SageMaker job {spec['job_name']}", spec.get("role"), spec.get("region"))


def run_step(
    ctx: Context,
    step: str,
    model_name: str | None,
    dry_run: bool = False,
    poll_seconds: float = 30,
    on_status: Callable[[str, str, str], None] | None = None,
) -> dict[str, Any]:
    """Describe the job, save the description in the run's jobs folder, then (unless
    ``dry_run``) run it to the end. StepError when the job fails (the message says where the logs are)."""
    spec = job_spec(ctx, step, model_name)
    name = spec["job_name"]
    spec_uri = ctx.run.write_json(job_spec_file(name), spec)
    if dry_run:
        return {"job_name": name, "status": "dry-run", "spec_uri": spec_uri, "spec": spec}
    if on_status is None:

        def on_status(job: str, status: str, secondary: str) -> None:
            ctx.log.info("SageMaker job %s: %s (%s)", job, status, secondary)

    ctx.log.info(
        "%s: SageMaker job %s (%s x %s)",
        step,
        name,
        spec["compute"]["instance_count"],
        spec["compute"]["instance_type"],
    )
    try:
        description = submit(ctx, spec, wait=True, poll_seconds=poll_seconds, on_status=on_status)
    except JobFailed as exc:
        raise StepError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - AWS's and the SDK's errors: one line naming the role and the fix
        message = aws_error(exc, spec)
        if message is None:
            raise
        ctx.log.debug("SageMaker job %s could not be created or watched", name, exc_info=True)
        raise StepError(message) from None
    billing = billed(description)
    record_job(ctx.run, name, step, model_name, billing)
    result_path = job_result(name)  # the container's facts for the manifest
    return {
        "job_name": name,
        "status": description["TrainingJobStatus"],
        "spec_uri": spec_uri,
        "model_artifacts": description.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
        "billable_seconds": billing["billable_seconds"],
        "cost_usd": billing.get("cost_usd"),
        "result": ctx.run.read_json(result_path) if ctx.run.exists(result_path) else None,
    }

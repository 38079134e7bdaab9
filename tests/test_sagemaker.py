"""The SageMaker backend against moto's server on loopback: the jobs it creates, as SageMaker sees them.

moto stores a CreateTrainingJob request and describes it back (status Completed at once), but
it keeps no Environment: the environment is read from the request itself, through moto's
recorder. A failing job (moto has none) comes from a stubbed DescribeTrainingJob.
"""

from __future__ import annotations

import base64
import os
import json
import re
import subprocess
import sys

import boto3
import pytest
import requests
from botocore.stub import Stubber

from tests.aws_requests import aws_client
from ml_exp.backends.sagemaker import jobs as sm
from ml_exp.config import load_config
from ml_exp.experiment.context import Context
from ml_exp.storage.manifest import REDACTED, new_manifest
from ml_exp.core.names import TOKENS
from ml_exp.core.errors import StepError
from ml_exp.storage.store import Store
from tests.bake import bake

BUCKET = "mlexp-sm"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml-exp/exp-80:tag"
MODEL = "org/Model_v2.1"
SECRET = "wandb-secret-0123456789"
FULL = {  # every optional SageMaker setting switched on
    "TRAINING_INSTANCE_TYPE": "ml.g5.12xlarge", "TRAINING_INSTANCE_COUNT": "2", "PREPARATION_INSTANCE_TYPE": "ml.m5.4xlarge",
    "INFERENCE_INSTANCE_TYPE": "ml.g5.2xlarge", "VOLUME_SIZE_GB": "77", "MAX_RUN_HOURS": "2", "USE_SPOT": "true",
    "MAX_WAIT_HOURS": "3.5", "KMS_KEY_ID": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "SUBNETS": "subnet-0abc,subnet-0def", "SECURITY_GROUP_IDS": "sg-0123", "NUM_PROCESSES": "4",
}
CHANNELS = {
    "preparation": {"reconciled": "data/reconciled/"},
    "training": {"prepared": "data/prepared/org--Model_v2.1/"},
    "inference": {"model": "models/org--Model_v2.1/", "prepared": "data/prepared/org--Model_v2.1/"},
}
INSTANCE = {"preparation": ("ml.m5.4xlarge", 1), "training": ("ml.g5.12xlarge", 2), "inference": ("ml.g5.2xlarge", 1)}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    return bake(tmp_path_factory.mktemp("sagemaker"), ticket="EXP-80", model_slug="sm")


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    """A fresh moto (state reset), the AWS environment pointing at it, and the runs bucket."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    for var, value in {
        "AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "SAGEMAKER_VALIDATE_ROLE": "false", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",  # moto answers what it lacks (iam:SimulatePrincipalPolicy) with HTTP 500: no retries
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(var, value)
    aws_client("s3").create_bucket(Bucket=BUCKET)
    return moto_server


def sagemaker_context(project, monkeypatch: pytest.MonkeyPatch, **settings: str) -> Context:
    """A Context with a real config (the baked demo + overrides) and a run claimed in moto's S3."""
    base = {"BACKEND": "sagemaker", "STORAGE_URI": f"s3://{BUCKET}/runs", "SAGEMAKER_ROLE_ARN": ROLE, "IMAGE_URI": IMAGE}
    for key, value in {**base, **settings}.items():
        monkeypatch.setenv(key, value)
    config = load_config(project)
    run = Store(config.storage_uri, config.experiment_name).claim_run(None, {"steps": {}})
    return Context(config=config, run=run)


@pytest.fixture
def make_ctx(aws: str, project, monkeypatch: pytest.MonkeyPatch):
    return lambda **settings: sagemaker_context(project, monkeypatch, **settings)


@pytest.fixture
def recorded(aws: str, tmp_path):
    """The CreateTrainingJob requests moto receives while the test runs (moto's recorder)."""
    from moto.moto_api import recorder

    recorder._location = str(tmp_path / "moto-recording.jsonl")  # set from MOTO_RECORDER_FILEPATH at import
    recorder.reset_recording()
    recorder.start_recording()

    def requests_made() -> list[dict]:
        found = []
        for line in open(recorder._location):
            entry = json.loads(line)
            if entry["headers"].get("X-Amz-Target") == "SageMaker.CreateTrainingJob":
                body = base64.b64decode(entry["body"]) if entry["body_encoded"] else entry["body"]
                found.append(json.loads(body))
        return found

    yield requests_made
    recorder.stop_recording()


def describe(name: str) -> dict:
    return aws_client("sagemaker").describe_training_job(TrainingJobName=name)


def s3_text(uri: str) -> str:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return aws_client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def assert_submitted_as_specified(spec: dict, job: dict, request: dict | None = None) -> None:
    """Every field of the spec, as SageMaker got it (``job``: DescribeTrainingJob)."""
    compute, resources = spec["compute"], job["ResourceConfig"]
    assert job["TrainingJobName"] == spec["job_name"]
    assert job["AlgorithmSpecification"]["TrainingImage"] == spec["training_image"]
    assert job["RoleArn"] == spec["role"]
    assert (resources["InstanceType"], resources["InstanceCount"], resources["VolumeSizeInGB"]) == (
        compute["instance_type"], compute["instance_count"], compute["volume_size_in_gb"])
    assert resources.get("VolumeKmsKeyId") == compute.get("volume_kms_key_id")
    assert job["EnableManagedSpotTraining"] is compute["enable_managed_spot_training"]
    assert job["StoppingCondition"] == {
        "MaxRuntimeInSeconds": spec["stopping_condition"]["max_runtime_in_seconds"],
        **({"MaxWaitTimeInSeconds": spec["stopping_condition"]["max_wait_time_in_seconds"]} if compute["enable_managed_spot_training"] else {}),
    }
    assert job["HyperParameters"] == spec["hyperparameters"]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels == {**spec["input_data"], **spec["staging"]["channels"]}
    assert job["OutputDataConfig"]["S3OutputPath"] == spec["output_data_config"]["s3_output_path"]
    assert job["OutputDataConfig"].get("KmsKeyId") == spec["output_data_config"].get("kms_key_id")
    checkpoint = spec["checkpoint_config"]
    assert job.get("CheckpointConfig") == ({"S3Uri": checkpoint["s3_uri"], "LocalPath": checkpoint["local_path"]} if checkpoint else None)
    vpc = spec["networking"]
    assert job.get("VpcConfig") == ({"Subnets": vpc["subnets"], "SecurityGroupIds": vpc["security_group_ids"]} if vpc else None)
    # the SDK runs its driver script instead of the image's entrypoint
    assert job["AlgorithmSpecification"]["ContainerEntrypoint"] == ["/bin/bash"]
    assert "sm_drivers/sm_train.sh" in " ".join(job["AlgorithmSpecification"]["ContainerArguments"])
    if request is not None:  # the environment as saved: no secret is added on the way
        assert request["Environment"] == spec["environment"] and "WANDB_API_KEY" not in request["Environment"]


# --- the jobs of each step -------------------------------------------------------------------


@pytest.mark.parametrize("step", ["preparation", "training", "inference"])
def test_each_step_creates_the_job_it_describes(make_ctx, recorded, monkeypatch: pytest.MonkeyPatch, step: str):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    ctx = make_ctx(MODEL_NAMES=MODEL, **FULL)
    seen = []
    result = sm.run_step(ctx, step, MODEL, poll_seconds=0.01, on_status=lambda *s: seen.append(s))
    name, run = result["job_name"], ctx.run.uri

    assert result["status"] == "Completed" and seen == [(name, "Completed", "Completed")]
    assert result["model_artifacts"] == f"{run}/jobs/{name}/output/model.tar.gz"
    spec = ctx.run.read_json(f"jobs/{name}.json")
    (request,) = recorded()
    job = describe(name)
    assert_submitted_as_specified(spec, job, request)

    # what the settings and the contract ask for, literally
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE and job["RoleArn"] == ROLE
    assert (job["ResourceConfig"]["InstanceType"], job["ResourceConfig"]["InstanceCount"]) == INSTANCE[step]
    assert job["ResourceConfig"]["VolumeSizeInGB"] == 77
    # the volume key only for ml.m5 (EBS); ml.g5 has local NVMe storage, for which AWS refuses one
    assert job["ResourceConfig"].get("VolumeKmsKeyId") == (FULL["KMS_KEY_ID"] if step == "preparation" else None)
    assert job["OutputDataConfig"] == {"S3OutputPath": f"{run}/jobs/", "KmsKeyId": FULL["KMS_KEY_ID"], "CompressionType": "GZIP"}
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 2 * 3600, "MaxWaitTimeInSeconds": int(3.5 * 3600)}
    assert job["VpcConfig"] == {"Subnets": ["subnet-0abc", "subnet-0def"], "SecurityGroupIds": ["sg-0123"]}
    assert job["HyperParameters"] == {"step": step, "run": str(ctx.run.num), "model": "" if step == "preparation" else MODEL}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    staged = f"{run}/jobs/{name}/input"
    assert channels == {**{channel: f"{run}/{path}" for channel, path in CHANNELS[step].items()},
                        "sm_drivers": f"{staged}/sm_drivers", **({"code": f"{staged}/code"} if step == "training" else {})}
    if step == "training":
        assert job["CheckpointConfig"] == {"S3Uri": f"{run}/checkpoints/org--Model_v2.1/", "LocalPath": "/opt/ml/checkpoints"}
    else:
        assert "CheckpointConfig" not in job

    environment = request["Environment"]
    assert "WANDB_API_KEY" not in environment  # the key never travels in a job (WANDB_API_KEY_SECRET names its secret)
    assert environment["ML_EXP_EXPERIMENT_DIR"] == "/opt/ml/code"
    assert {key: environment[key] for key in ctx.config.raw} == dict(ctx.config.raw)
    assert environment["TRAINING_INSTANCE_COUNT"] == "2" and environment["BACKEND"] == "sagemaker"
    saved = ctx.run.read_text(f"jobs/{name}.json")  # nor does the saved spec
    assert SECRET not in saved and "WANDB_API_KEY" not in spec["environment"]
    assert SECRET not in json.dumps(result, default=str) and SECRET not in json.dumps(request)

    # what runs in the container: the SDK's driver script, then the ml-exp container entrypoint
    train_sh = s3_text(f"{staged}/sm_drivers/sm_train.sh")
    if step == "training":  # torchrun across 2 instances x NUM_PROCESSES, through the entry script
        assert "torchrun_driver.py" in train_sh and "cd /opt/ml/input/data/code" in train_sh
        assert json.loads(s3_text(f"{staged}/sm_drivers/distributed.json")) == {"process_count_per_node": 4, "smp": None}
        assert json.loads(s3_text(f"{staged}/sm_drivers/sourcecode.json"))["entry_script"] == "ml_exp_entry.py"
        entry = s3_text(f"{staged}/code/ml_exp_entry.py")
        assert "from ml_exp.backends.sagemaker.container import main" in entry
        compile(entry, "ml_exp_entry.py", "exec")
        assert spec["distributed"] == {"torchrun": {"process_count_per_node": 4}}
    else:  # one process: the container command itself
        assert f"python3 -m ml_exp.backends.sagemaker.container {step}" in train_sh and "torchrun" not in train_sh
        assert spec["distributed"] is None


def test_without_optional_settings_the_job_has_none_of_them(make_ctx, recorded):
    ctx = make_ctx(MODEL_NAMES=MODEL, NUM_PROCESSES="auto")
    name = sm.run_step(ctx, "training", MODEL, poll_seconds=0.01)["job_name"]
    job, (request,) = describe(name), recorded()
    assert_submitted_as_specified(ctx.run.read_json(f"jobs/{name}.json"), job, request)
    assert job["EnableManagedSpotTraining"] is False and "MaxWaitTimeInSeconds" not in job["StoppingCondition"]
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 24 * 3600
    assert "VpcConfig" not in job and "KmsKeyId" not in job["OutputDataConfig"] and "VolumeKmsKeyId" not in job["ResourceConfig"]
    assert (job["ResourceConfig"]["InstanceType"], job["ResourceConfig"]["InstanceCount"]) == ("ml.g5.2xlarge", 1)
    assert "WANDB_API_KEY" not in request["Environment"]
    assert "WANDB_API_KEY" not in ctx.run.read_json(f"jobs/{name}.json")["environment"]
    staged = f"{ctx.run.uri}/jobs/{name}/input/sm_drivers"  # still torchrun: one process per GPU
    assert json.loads(s3_text(f"{staged}/distributed.json")) == {"process_count_per_node": None, "smp": None}


# --- dry run: the saved spec is what is submitted ----------------------------------------------


def test_dry_run_saves_the_spec_and_submits_nothing_then_the_spec_is_what_is_submitted(make_ctx, recorded, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    ctx = make_ctx(MODEL_NAMES=MODEL, **FULL)
    result = sm.run_step(ctx, "training", MODEL, dry_run=True)
    name = result["job_name"]
    assert result["status"] == "dry-run" and result["spec_uri"] == f"{ctx.run.uri}/jobs/{name}.json"
    assert ctx.run.listdir("jobs") == [f"{name}.json"]
    assert aws_client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    assert recorded() == []
    saved = ctx.run.read_json(f"jobs/{name}.json")
    assert saved == result["spec"] and SECRET not in json.dumps(saved)

    description = sm.submit(ctx, saved, poll_seconds=0.01)  # e.g. later, after reading it
    assert description["TrainingJobName"] == name
    (request,) = recorded()
    assert_submitted_as_specified(saved, describe(name), request)
    assert "WANDB_API_KEY" not in request["Environment"] and SECRET not in json.dumps(request)
    assert [j["TrainingJobName"] for j in aws_client("sagemaker").list_training_jobs()["TrainingJobSummaries"]] == [name]


def test_a_dry_run_writes_and_prints_no_planted_secret(make_ctx, monkeypatch, capsys):
    """Secrets planted in every setting that holds a URL and in recorded variables: the saved
    specs (a job's and a tuning job's) and the manifest hold none; the job still gets its image."""
    from tests.test_redact import PLANTED_ENV, S

    for key, value in PLANTED_ENV.items():
        monkeypatch.setenv(key, value)
    planted = {"IMAGE_URI": f"{IMAGE.split(':')[0]}:tag".replace("123456789012.", f"plant:{S}@123456789012."),
               "SERVING_IMAGE_URI": f"https://plant:{S}@registry.example.com/serve:1"}
    ctx = make_ctx(MODEL_NAMES=MODEL, **planted)
    ctx.run.write_manifest(new_manifest(ctx.config, ctx.run.num))
    for step in ("preparation", "training", "inference"):
        sm.run_step(ctx, step, MODEL, dry_run=True)
    texts = [ctx.run.read_text(f"jobs/{name}") for name in ctx.run.listdir("jobs")] + [ctx.run.read_text("manifest.json")]
    assert len(texts) == 4 and not [t for t in texts if S in t]
    assert S not in "".join(capsys.readouterr())


def test_a_retry_gets_a_new_job_and_spec(make_ctx):
    ctx = make_ctx(MODEL_NAMES=MODEL)
    first = sm.run_step(ctx, "inference", MODEL, dry_run=True)["job_name"]
    second = sm.run_step(ctx, "inference", MODEL, dry_run=True)["job_name"]
    assert first != second and ctx.run.listdir("jobs") == sorted([f"{first}.json", f"{second}.json"])


# --- job names ---------------------------------------------------------------------------------


def test_job_names_are_readable_and_deterministic_with_a_token():
    assert sm.job_name("EXP-80-sm", 3, "training", "tiny-bert", token="abc123") == "EXP-80-sm-r3-train-tiny-bert-abc123"
    assert sm.job_name("EXP-80-sm", 3, "preparation", None, token="abc123") == "EXP-80-sm-r3-prep-abc123"
    assert sm.job_name("EXP-80-sm", 12, "inference", "org/Model_v2.1", token="t") == "EXP-80-sm-r12-infer-org-Model-v2-1-t"
    assert sm.job_name("EXP-80-sm", 1, "training", "m", token="x") == sm.job_name("EXP-80-sm", 1, "training", "m", token="x")


def test_job_names_differ_between_retries():
    names = {sm.job_name("EXP-80-sm", 1, "training", "tiny-bert") for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"EXP-80-sm-r1-train-tiny-bert-[0-9a-f]{6}", n) for n in names)


@pytest.mark.parametrize("experiment, model", [
    ("EXP-3333-" + "very-long-experiment-name-" * 3, "allenai/longformer-large-4096-finetuned-triviaqa"),
    ("E", "org/" + "m" * 120),
    ("EXP-" + "x" * 59, None),
    ("EXP-3333-longformer", "org/Model_v2.1 (copy)..."),
])
def test_job_names_are_valid_for_sagemaker(experiment: str, model: str | None):
    for step in ("preparation", "training", "inference"):
        name = sm.job_name(experiment, 123456, step, model, token="20261128t021326")
        assert len(name) <= 63 and re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name), name
        assert f"-r123456-{TOKENS[step]}-" in name and name.endswith("-20261128t021326")


def test_long_names_stay_distinct_and_odd_characters_are_cleaned():
    experiment = "EXP-3333-" + "a-very-long-experiment-name-" * 3
    a = sm.job_name(experiment, 1, "training", "allenai/longformer-base-4096-variant-one", token="t")
    b = sm.job_name(experiment, 1, "training", "allenai/longformer-base-4096-variant-two", token="t")
    c = sm.job_name(experiment + "x", 1, "training", "allenai/longformer-base-4096-variant-one", token="t")
    assert len({a, b, c}) == 3 and all(len(n) <= 63 for n in (a, b, c))
    assert a.startswith("EXP-3333-a-very-long") and "-r1-train-allenai" in a
    assert sm.job_name("EXP-1", 1, "inference", "org/Model_v2.1", token="a_b.c") == "EXP-1-r1-infer-org-Model-v2-1-a-b-c"


# --- failures ------------------------------------------------------------------------------------


def _stubbed_client(*statuses: tuple[str, str, str | None]):
    client = boto3.client("sagemaker", region_name="eu-west-1", endpoint_url="https://sagemaker.invalid",
                          aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    for status, secondary, reason in statuses:
        response = {"TrainingJobName": "job", "TrainingJobArn": "arn:aws:sagemaker:eu-west-1:123456789012:training-job/job",
                    "TrainingJobStatus": status, "SecondaryStatus": secondary, "CreationTime": "2026-11-28T00:00:00Z",
                    "AlgorithmSpecification": {"TrainingInputMode": "File"}, "ResourceConfig": {"VolumeSizeInGB": 1},
                    "StoppingCondition": {}, "ModelArtifacts": {"S3ModelArtifacts": ""}}
        if reason:
            response["FailureReason"] = reason
        stub.add_response("describe_training_job", response)
    stub.activate()
    return client, stub


def test_a_failed_job_says_why_and_where_its_logs_are():
    reason = "AlgorithmError: ExecuteUserScriptError: CUDA out of memory"
    client, stub = _stubbed_client(("InProgress", "Starting", None), ("InProgress", "Starting", None),
                                   ("InProgress", "Training", None), ("Failed", "Failed", reason))
    seen = []
    with pytest.raises(sm.JobFailed) as failed:
        sm.wait_for_job(client, "EXP-80-sm-r1-train-m-abc", "eu-west-1", poll_seconds=0, on_status=lambda *s: seen.append(s))
    stub.assert_no_pending_responses()
    assert [s[1:] for s in seen] == [("InProgress", "Starting"), ("InProgress", "Training"), ("Failed", "Failed")]
    error = failed.value
    assert (error.job_name, error.status, error.failure_reason) == ("EXP-80-sm-r1-train-m-abc", "Failed", reason)
    assert (error.log_group, error.log_stream_prefix) == ("/aws/sagemaker/TrainingJobs", "EXP-80-sm-r1-train-m-abc")
    for text in (reason, "/aws/sagemaker/TrainingJobs", "EXP-80-sm-r1-train-m-abc", "https://eu-west-1.console.aws.amazon.com/cloudwatch/"):
        assert text in str(error)


def test_a_stopped_job_fails_the_step_too():
    client, _ = _stubbed_client(("Stopped", "MaxWaitTimeExceeded", None))
    with pytest.raises(sm.JobFailed, match="stopped \\(MaxWaitTimeExceeded\\)") as failed:
        sm.wait_for_job(client, "j", "eu-west-1", poll_seconds=0)
    assert failed.value.status == "Stopped"


def test_run_step_turns_a_failed_job_into_a_step_error(make_ctx, monkeypatch: pytest.MonkeyPatch):
    reason = "ClientError: prepared data missing under /opt/ml/input/data/prepared"
    client, _ = _stubbed_client(("InProgress", "Downloading", None), ("Failed", "Failed", reason))
    monkeypatch.setattr(sm, "sagemaker_client", lambda region: client)  # the job itself is created in moto
    ctx = make_ctx(MODEL_NAMES=MODEL)
    with pytest.raises(StepError) as failed:
        sm.run_step(ctx, "training", MODEL, poll_seconds=0)
    (job,) = aws_client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    for text in (reason, "/aws/sagemaker/TrainingJobs", job["TrainingJobName"], "us-east-1"):
        assert text in str(failed.value)


def test_settings_sagemaker_cannot_carry_are_refused_before_any_job(make_ctx, project, monkeypatch):
    ctx = make_ctx(MODEL_NAMES=MODEL, TUNING_SPACE="x" * 600)
    with pytest.raises(StepError, match="TUNING_SPACE: longer than the 512 characters"):
        sm.job_spec(ctx, "training", MODEL)
    with pytest.raises(StepError, match="does not run as a SageMaker job"):
        sm.job_spec(ctx, "reconciliation", None)
    for key in ("BACKEND", "STORAGE_URI", "TUNING_SPACE"):
        monkeypatch.delenv(key)
    config = load_config(project)
    local = Context(config=config, run=Store(config.storage_uri, config.experiment_name).claim_run(None, {}))
    with pytest.raises(StepError, match="needs STORAGE_URI = s3://"):
        sm.job_spec(local, "training", MODEL)


def test_importing_the_backend_does_not_import_the_sdk():
    code = ("import sys, ml_exp.backends.sagemaker.jobs, ml_exp.backends.sagemaker.tuner, ml_exp.backends.sagemaker.container; "
            "sys.exit(any(m.split('.')[0] in ('sagemaker', 'boto3') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_an_aws_error_creating_the_job_is_a_step_error(make_ctx, monkeypatch: pytest.MonkeyPatch):
    from botocore.exceptions import ClientError

    def refuse(spec):
        raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": "ml.g5.2xlarge quota is 0"}}, "CreateTrainingJob")

    monkeypatch.setattr(sm, "_create", refuse)
    with pytest.raises(StepError, match=r"CreateTrainingJob failed \(ResourceLimitExceeded\): ml.g5.2xlarge quota is 0"):
        sm.run_step(make_ctx(MODEL_NAMES=MODEL), "training", MODEL, poll_seconds=0)


def test_interrupting_the_wait_says_how_to_stop_the_job(make_ctx, monkeypatch: pytest.MonkeyPatch, caplog):
    client, _ = _stubbed_client(("InProgress", "Training", None))
    monkeypatch.setattr(sm, "sagemaker_client", lambda region: client)
    monkeypatch.setattr(sm, "_create", lambda spec: None)
    ctx = make_ctx(MODEL_NAMES=MODEL)
    spec = sm.job_spec(ctx, "training", MODEL)

    def interrupt(*status):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sm.submit(ctx, spec, on_status=interrupt)
    assert f"stop-training-job --training-job-name {spec['job_name']}" in caplog.text


@pytest.mark.slow
def test_exp_run_on_sagemaker_end_to_end(aws, tmp_path, monkeypatch):
    """As a user would: dry run, then `exp run` with every step as a job in moto; since moto runs
    nothing, each job's container runs here under the emulated contract, fed from the job's spec."""
    import fsspec

    from ml_exp.backends.sagemaker.container import emulate
    from ml_exp.pipeline.runner import run_pipeline

    project = bake(tmp_path, ticket="EXP-83", model_slug="sm-e2e")
    settings = {"BACKEND": "sagemaker", "STORAGE_URI": f"s3://{BUCKET}/runs", "SAGEMAKER_ROLE_ARN": ROLE, "IMAGE_URI": IMAGE,
                "WANDB_MODE": "disabled", "NUM_TRAIN_EPOCHS": "6", "TRAINING_INSTANCE_TYPE": "ml.g5.12xlarge"}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    said: list[str] = []
    planned = run_pipeline(project, dry_run=True, announce=said.append)
    sagemaker = aws_client("sagemaker")
    assert sagemaker.list_training_jobs()["TrainingJobSummaries"] == []
    specs = sorted(n for n in planned.listdir("jobs") if n.endswith(".json"))
    assert [n.split("-r1-")[1].split("-")[0] for n in specs] == ["infer", "prep", "train"]
    assert any(line.startswith("reconciliation: would run here") for line in said)

    original = sm.submit
    ran: list[str] = []

    def submit_then_run_here(ctx, spec, **kwargs):
        description = original(ctx, spec, **kwargs)  # the real request, to moto
        channels = {}
        s3 = fsspec.filesystem("s3")
        for name, uri in spec["input_data"].items():
            channels[name] = tmp_path / "channels" / spec["job_name"] / name
            s3.get(uri.rstrip("/") + "/", str(channels[name]), recursive=True)
        environment = {**os.environ, **{k: v for k, v in spec["environment"].items() if v != REDACTED}}
        result = emulate(project, tmp_path / "opt-ml" / spec["job_name"], spec["step"], spec["run"], spec["model"] or None,
                         channels, environment, job_name=spec["job_name"])
        assert result.returncode == 0, result.stderr[-3000:]
        ran.append(spec["job_name"])
        return description

    monkeypatch.setattr(sm, "submit", submit_then_run_here)
    from tests.aws_requests import Recorder

    recorder = Recorder().install(monkeypatch)  # every request of the run, against botocore's models
    run = run_pipeline(project, run_num=planned.num, announce=said.append)
    assert recorder.problems() == [] and len(recorder.of("CreateTrainingJob")) == 3
    manifest = run.read_manifest()
    assert manifest["status"] == "completed", manifest["steps"]
    assert [n.split("-r1-")[1].split("-")[0] for n in ran] == ["prep", "train", "infer"]
    jobs = {j["TrainingJobName"]: sagemaker.describe_training_job(TrainingJobName=j["TrainingJobName"]) for j in sagemaker.list_training_jobs()["TrainingJobSummaries"]}
    assert set(jobs) == set(ran)
    train = next(d for name, d in jobs.items() if "-train-" in name)
    assert train["AlgorithmSpecification"]["TrainingImage"] == IMAGE and train["RoleArn"] == ROLE
    assert train["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge"
    assert train["CheckpointConfig"]["S3Uri"] == run.path("checkpoints", "tiny-bert") + "/"
    assert manifest["steps"]["preparation"]["job_name"] in ran
    assert run.is_complete("models/tiny-bert") and run.is_complete("inference/tiny-bert")
    assert manifest["steps"]["inference"]["metrics"]["tiny-bert"]["accuracy"] > 0.25

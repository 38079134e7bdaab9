"""Every AWS request the product sends, checked against botocore's own service model, with what moto
and botocore's ParamValidator let through: string lengths and patterns, enums, list and map sizes,
numeric ranges (tests/aws_requests.py). Recorded in a dry run, each step's job, a tuning job and a
deploy on moto's server; the same recordings say that no secret is in any request and that the
IAM policies of docs/aws/ allow every action the product calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from ml_exp.backends.sagemaker import endpoints
from ml_exp.backends.sagemaker import jobs as sm
from ml_exp.backends.sagemaker import tuner as smt
from ml_exp.config.search_space import parse_space
from tests.aws_requests import Recorder, check_params, policy_allows
from tests.test_sagemaker import BUCKET, FULL, IMAGE, MODEL, ROLE, SECRET, aws, project, sagemaker_context  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
KMS = FULL["KMS_KEY_ID"]
SPACE = "learning_rate = log-uniform(1e-5, 5e-4); per_device_train_batch_size = choice(8, 16, 32); num_train_epochs = int(2, 5)"


@pytest.fixture
def recorder(aws, monkeypatch) -> Recorder:
    """Installed after the fixtures' own calls (the bucket): what it records, the product sent."""
    return Recorder().install(monkeypatch)


@pytest.fixture
def make_ctx(aws, project, monkeypatch):
    return lambda **settings: sagemaker_context(project, monkeypatch, **settings)


def assert_valid(recorder: Recorder) -> None:
    problems = recorder.problems()
    assert problems == [], "\n".join(problems)


# --- the checker itself finds what moto accepts ------------------------------------------------------


def test_the_checker_finds_what_moto_and_param_validator_let_through():
    job = {"TrainingJobName": "EXP-1-r1-train-m-abc", "RoleArn": ROLE,
           "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
           "OutputDataConfig": {"S3OutputPath": "s3://b/p/"},
           "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100},
           "StoppingCondition": {"MaxRuntimeInSeconds": 3600}}
    assert check_params("sagemaker", "CreateTrainingJob", job) == []
    bad = json.loads(json.dumps(job))
    bad["TrainingJobName"] = "EXP_1-" + "x" * 70  # too long, and '_' is no job-name character
    bad["ResourceConfig"]["InstanceType"] = "ml.g5.3xlarge"  # not in the enum
    bad["ResourceConfig"]["VolumeKmsKeyId"] = "key with spaces"
    bad["StoppingCondition"]["MaxRuntimeInSeconds"] = 0  # below the minimum 1
    bad["Environment"] = {f"V{i}": "x" for i in range(101)}  # more than 100 entries
    bad["Environment"]["1BAD"] = "x"  # a key must start with a letter or _
    bad["Tags"] = [{"Key": "k", "Value": "a#b"}]  # '#' is no tag character
    bad["Surprise"] = 1
    found = "\n".join(check_params("sagemaker", "CreateTrainingJob", bad))
    for text in ("TrainingJobName: 76 characters, more than the maximum 63", "TrainingJobName: 'EXP_1-",
                 "InstanceType: 'ml.g5.3xlarge' is not one of", "VolumeKmsKeyId: 'key with spaces' does not match",
                 "MaxRuntimeInSeconds: 0 is below the minimum 1", "Environment: 102 entries, more than the maximum 100",
                 "Environment key '1BAD'", "Tags[0].Value: 'a#b' does not match", "unknown member Surprise"):
        assert text in found, found
    assert len(check_params("sagemaker", "CreateHyperParameterTuningJob", {"HyperParameterTuningJobName": "x" * 33})) >= 3


# --- each request the product sends -------------------------------------------------------------------


def test_a_dry_run_sends_only_valid_requests(make_ctx, recorder, project):
    from ml_exp.pipeline.runner import run_pipeline

    make_ctx(WANDB_MODE="disabled", **FULL)  # the settings (the demo's own model), in the environment
    run_pipeline(project, dry_run=True, announce=lambda m: None)
    assert recorder.calls and {c.service for c in recorder.calls} == {"s3"}
    assert_valid(recorder)


@pytest.mark.parametrize("settings", [FULL, {}], ids=["every-option", "defaults"])
def test_each_steps_job_sends_valid_requests(make_ctx, recorder, monkeypatch, settings):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    ctx = make_ctx(MODEL_NAMES=MODEL, **settings)
    for step in ("preparation", "training", "inference"):
        sm.run_step(ctx, step, MODEL, poll_seconds=0.01)
    assert len(recorder.of("CreateTrainingJob")) == 3
    assert_valid(recorder)


def test_a_tuning_job_sends_valid_requests(make_ctx, recorder):
    ctx = make_ctx(MODEL_NAMES=MODEL, RUN_TUNING="true", TUNING_SPACE=SPACE, TUNING_TRIALS="4", **FULL)
    smt.create(smt.tuning_spec(ctx, MODEL, parse_space(SPACE)))
    assert len(recorder.of("CreateHyperParameterTuningJob")) == 1
    assert_valid(recorder)


def _deploy(config, name_hint: str = "tiny-bert") -> dict:
    info = {"experiment": config.experiment_name, "run": 1, "model": name_hint, "git": {"commit": "0" * 40}, "template_version": "0.9.0"}
    deployment = endpoints.spec(config, info, f"s3://{BUCKET}/runs/{config.experiment_name}/run_1/serving/{name_hint}/model.tar.gz")
    endpoints.create(boto3.client("sagemaker"), deployment)
    return deployment


def test_a_deploy_sends_valid_requests(make_ctx, recorder, monkeypatch):
    ctx = make_ctx(MODEL_NAMES=MODEL)
    _deploy(ctx.config)
    monkeypatch.setenv("ENDPOINT_SERVERLESS_MEMORY_MB", "2048")
    serving = IMAGE.replace(":tag", ":serving-cpu")
    monkeypatch.setenv("SERVING_IMAGE_URI", serving)
    _deploy(make_ctx(MODEL_NAMES=MODEL).config)
    assert [len(recorder.of(op)) for op in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint")] == [2, 2, 2]
    assert [m["PrimaryContainer"]["Image"] for m in recorder.of("CreateModel")] == [IMAGE, serving]  # serverless: the CPU image
    environments = [m["PrimaryContainer"]["Environment"]["ML_EXP_EXPERIMENT_DIR"] for m in recorder.of("CreateModel")]
    assert environments == ["/opt/ml/code", "/opt/ml/model/code"]  # the training image's code; the model's code/
    assert_valid(recorder)


# --- KMS: the volume key only where AWS takes one --------------------------------------------------


def test_kms_with_instance_storage_types_sends_no_volume_key(make_ctx, recorder):
    ctx = make_ctx(MODEL_NAMES=MODEL, KMS_KEY_ID=KMS, TRAINING_INSTANCE_TYPE="ml.g5.2xlarge", INFERENCE_INSTANCE_TYPE="ml.g5.xlarge",
                   PREPARATION_INSTANCE_TYPE="ml.m5.2xlarge", ENDPOINT_INSTANCE_TYPE="ml.g4dn.xlarge", TUNING_SPACE=SPACE)
    for step in ("preparation", "training", "inference"):
        sm.run_step(ctx, step, MODEL, poll_seconds=0.01)
    smt.create(smt.tuning_spec(ctx, MODEL, parse_space(SPACE)))
    _deploy(ctx.config)
    assert_valid(recorder)
    prep, train, infer = recorder.of("CreateTrainingJob")
    assert prep["ResourceConfig"]["VolumeKmsKeyId"] == KMS  # ml.m5: EBS, encrypted with the key
    assert "VolumeKmsKeyId" not in train["ResourceConfig"] and "VolumeKmsKeyId" not in infer["ResourceConfig"]
    assert all(job["OutputDataConfig"]["KmsKeyId"] == KMS for job in (prep, train, infer))  # the output key always
    (tuning,) = recorder.of("CreateHyperParameterTuningJob")
    assert "VolumeKmsKeyId" not in tuning["TrainingJobDefinition"]["ResourceConfig"]
    assert tuning["TrainingJobDefinition"]["OutputDataConfig"]["KmsKeyId"] == KMS
    (config,) = recorder.of("CreateEndpointConfig")
    assert "KmsKeyId" not in config and config["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.xlarge"


def test_kms_with_ebs_types_encrypts_the_volumes(make_ctx, recorder):
    ctx = make_ctx(MODEL_NAMES=MODEL, KMS_KEY_ID=KMS, TRAINING_INSTANCE_TYPE="ml.p3.2xlarge", ENDPOINT_INSTANCE_TYPE="ml.m5.xlarge", TUNING_SPACE=SPACE)
    sm.run_step(ctx, "training", MODEL, poll_seconds=0.01)
    smt.create(smt.tuning_spec(ctx, MODEL, parse_space(SPACE)))
    _deploy(ctx.config)
    assert_valid(recorder)
    assert recorder.of("CreateTrainingJob")[0]["ResourceConfig"]["VolumeKmsKeyId"] == KMS
    assert recorder.of("CreateHyperParameterTuningJob")[0]["TrainingJobDefinition"]["ResourceConfig"]["VolumeKmsKeyId"] == KMS
    assert recorder.of("CreateEndpointConfig")[0]["KmsKeyId"] == KMS


# --- the IAM policies allow what the product calls ---------------------------------------------------

# the IAM action of S3 operations whose names are not actions
S3_ACTIONS = {"HeadObject": "s3:GetObject", "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket", "HeadBucket": "s3:ListBucket",
              "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject",
              "CopyObject": "s3:PutObject", "DeleteObjects": "s3:DeleteObject", "ListBuckets": "s3:ListAllMyBuckets"}
# Called, and not granted on purpose: the SDK lists the account's buckets to find the staging
# bucket's creation date and, on AccessDenied, does without (boto3's bucket_load, then HeadBucket).
NOT_GRANTED = {"s3:ListAllMyBuckets"}


def policies() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted((ROOT / "docs" / "aws").glob("*.json"))}


def test_the_policies_are_valid_iam_json():
    found = policies()
    assert set(found) == {"execution-role-policy.json", "execution-role-trust-policy.json", "experimenter-policy.json"}
    for name, document in found.items():
        assert document["Version"] == "2012-10-17", name
        for statement in document["Statement"]:
            assert statement["Effect"] in ("Allow", "Deny") and statement.get("Action"), (name, statement)
            actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            assert all(":" in a and "*" not in a.split(":")[0] for a in actions), (name, actions)
            assert "Resource" in statement or "Principal" in statement, (name, statement)
    trust = found["execution-role-trust-policy.json"]["Statement"][0]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"


def test_the_experimenter_policy_allows_every_call_of_a_run_a_tuning_job_and_a_deploy(make_ctx, recorder, monkeypatch):
    ctx = make_ctx(MODEL_NAMES=MODEL, **FULL)
    for step in ("preparation", "training", "inference"):
        sm.run_step(ctx, step, MODEL, poll_seconds=0.01)
    smt.create(smt.tuning_spec(make_ctx(MODEL_NAMES=MODEL, TUNING_SPACE=SPACE), MODEL, parse_space(SPACE)))
    deployment = _deploy(ctx.config)
    client = boto3.client("sagemaker")
    endpoints.listing(client, ctx.config.experiment_name)
    endpoints.delete(client, deployment["endpoint_name"])
    experimenter = policies()["experimenter-policy.json"]
    actions = sorted({S3_ACTIONS.get(c.operation, c.action) if c.service == "s3" else c.action for c in recorder.calls})
    assert "sagemaker:CreateHyperParameterTuningJob" in actions and "s3:PutObject" in actions
    assert [a for a in actions if not policy_allows(experimenter, a) and a not in NOT_GRANTED] == []
    # what the SDK checks on the role (its simulated actions), the execution policy allows
    from ml_exp.backends.sagemaker.doctor import ECR_PULL, LOGS, SDK_CHECKED_ACTIONS

    execution = policies()["execution-role-policy.json"]
    needed = [*SDK_CHECKED_ACTIONS, *ECR_PULL, *LOGS, "s3:GetObject", "s3:PutObject", "s3:ListBucket", "secretsmanager:GetSecretValue"]
    assert [a for a in needed if not policy_allows(execution, a)] == []


# --- no secret in any request ----------------------------------------------------------------------


def test_no_secret_in_any_request_of_a_run_a_tuning_job_and_a_deploy(make_ctx, recorder, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    ctx = make_ctx(MODEL_NAMES=MODEL, WANDB_MODE="online", WANDB_API_KEY_SECRET="ml-exp/wandb", TUNING_SPACE=SPACE, **FULL)
    for step in ("preparation", "training", "inference"):
        sm.run_step(ctx, step, MODEL, poll_seconds=0.01)
    smt.create(smt.tuning_spec(ctx, MODEL, parse_space(SPACE)))
    _deploy(ctx.config)
    assert_valid(recorder)
    for call in recorder.calls:
        sent = json.dumps(call.params, default=lambda v: v.decode(errors="replace") if isinstance(v, bytes) else (
            v.getvalue().decode(errors="replace") if hasattr(v, "getvalue") else str(v)))
        assert SECRET not in sent, f"{call.service}.{call.operation} carries the W&B key"
    for job in recorder.of("CreateTrainingJob"):
        assert "WANDB_API_KEY" not in job["Environment"] and job["Environment"]["WANDB_API_KEY_SECRET"] == "ml-exp/wandb"
    (tuning,) = recorder.of("CreateHyperParameterTuningJob")
    assert "WANDB_API_KEY" not in tuning["TrainingJobDefinition"]["Environment"]
    (model,) = recorder.of("CreateModel")
    assert model["PrimaryContainer"]["Environment"].get("WANDB_API_KEY_SECRET") == "ml-exp/wandb"

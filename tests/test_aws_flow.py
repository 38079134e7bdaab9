"""The AWS side as a user meets it, on moto's server: the SDK refusing a least-privilege role (one
line, no traceback), what validate says and refuses, the cost lines of a dry run, each job's bill
in the manifest, `exp runs` and `exp compare`, and the container reading the W&B key's secret."""

from __future__ import annotations

import json
import os

import boto3
import pytest
from botocore.stub import Stubber

from ml_exp.backends.sagemaker import container
from ml_exp.backends.sagemaker import jobs as sm
from ml_exp.config import load_config
from ml_exp.core.errors import ProblemsFound
from ml_exp.core.errors import StepError
from ml_exp.pipeline.compare import compare_runs, comparison_table
from ml_exp.pipeline.runs import run_summaries, runs_table
from ml_exp.pipeline.validate import validate
from ml_exp.storage.store import Store
from tests import iam_simulator
from tests.test_doctor import ACCOUNT, policy
from tests.test_sagemaker import BUCKET, IMAGE, MODEL, assert_submitted_as_specified, aws, describe, project, sagemaker_context  # noqa: F401 - fixtures

ROLE_NAME = "ml-exp-least"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def make_ctx(aws, project, monkeypatch):
    return lambda **settings: sagemaker_context(project, monkeypatch, **settings)


def _role(drop: tuple[str, ...]) -> object:
    iam = boto3.client("iam")
    iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=policy("execution-role-trust-policy.json"))
    iam.put_role_policy(RoleName=ROLE_NAME, PolicyName="ml-exp", PolicyDocument=policy("execution-role-policy.json", drop=drop, BUCKET_NAME=BUCKET))
    return iam


# --- the SDK's role check ------------------------------------------------------------------------


def test_a_role_without_the_sdks_actions_fails_the_step_in_one_line(make_ctx, monkeypatch):
    """SAGEMAKER_VALIDATE_ROLE left on, as a user has it: the SDK simulates the role's actions and
    raises RoleValidationError (not a ClientError); the step fails with one line naming the role
    and what it lacks. (The simulation is answered from the role's policies in moto.)"""
    iam = _role(drop=("ec2:CreateNetworkInterface", "cloudwatch:PutMetricData"))
    monkeypatch.delenv("SAGEMAKER_VALIDATE_ROLE")
    iam_simulator.install_everywhere(monkeypatch, iam)
    ctx = make_ctx(MODEL_NAMES=MODEL, SAGEMAKER_ROLE_ARN=ROLE)
    with pytest.raises(StepError) as failed:
        sm.run_step(ctx, "training", MODEL, poll_seconds=0.01)
    message = str(failed.value)
    assert "\n" not in message and message.startswith("SageMaker job EXP-80-sm-r")
    assert f"the SageMaker SDK refused execution role {ROLE} (SAGEMAKER_ROLE_ARN)" in message
    assert "lacks cloudwatch:PutMetricData, ec2:CreateNetworkInterface" in message and "docs/aws/execution-role-policy.json" in message
    assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_the_shipped_execution_policy_passes_the_sdks_check(make_ctx, monkeypatch):
    iam = _role(drop=())
    monkeypatch.delenv("SAGEMAKER_VALIDATE_ROLE")
    iam_simulator.install_everywhere(monkeypatch, iam)
    ctx = make_ctx(MODEL_NAMES=MODEL, SAGEMAKER_ROLE_ARN=ROLE)
    name = sm.run_step(ctx, "training", MODEL, poll_seconds=0.01)["job_name"]
    # the SDK stages its scripts where the spec says: with a role allowed only the runs prefix, its
    # own check of the bucket (s3:PutObject on <bucket>/*) would move them under the output path
    assert_submitted_as_specified(ctx.run.read_json(f"jobs/{name}.json"), describe(name))


def test_any_other_sdk_error_is_one_line_naming_the_role(make_ctx, monkeypatch):
    """An error of the SDK's own (here: its configs refuse a volume size of 0, which the spec was
    made to carry) is a step failure of one line, not a traceback."""
    ctx = make_ctx(MODEL_NAMES=MODEL)
    spec = sm.job_spec(ctx, "training", MODEL)
    spec["compute"]["volume_size_in_gb"] = "many"
    monkeypatch.setattr(sm, "job_spec", lambda *args, **kwargs: spec)
    with pytest.raises(StepError) as failed:
        sm.run_step(ctx, "training", MODEL, poll_seconds=0.01)
    message = str(failed.value)
    assert "\n" not in message and "the SageMaker SDK failed with ValidationError" in message
    assert "execution role arn:aws:iam::123456789012:role/SageMakerRole" in message


def test_a_bug_of_ours_keeps_its_traceback(make_ctx, monkeypatch):
    def broken(spec):
        raise RuntimeError("a bug in ml-exp")

    monkeypatch.setattr(sm, "_create", broken)
    with pytest.raises(RuntimeError, match="a bug in ml-exp"):
        sm.run_step(make_ctx(MODEL_NAMES=MODEL), "training", MODEL, poll_seconds=0.01)


# --- validate --------------------------------------------------------------------------------------


def test_validate_says_what_it_does_with_the_kms_key(make_ctx, project):
    make_ctx(KMS_KEY_ID=KMS, TRAINING_INSTANCE_TYPE="ml.g5.2xlarge", PREPARATION_INSTANCE_TYPE="ml.m5.2xlarge",
             INFERENCE_INSTANCE_TYPE="ml.g5.xlarge", ENDPOINT_INSTANCE_TYPE="ml.g4dn.xlarge")
    report = validate(project, check_storage=False)
    assert report.ok, report.problems
    (note,) = report.notes
    assert note.startswith(f"KMS_KEY_ID {KMS} encrypts every job's output in S3 and the EBS volumes of preparation (ml.m5.2xlarge).")
    assert "Not sent for training (ml.g5.2xlarge), inference (ml.g5.xlarge), endpoint (ml.g4dn.xlarge)" in note


def test_validate_refuses_a_serverless_endpoint_on_the_training_image(make_ctx, project, monkeypatch):
    make_ctx()
    monkeypatch.setenv("ENDPOINT_SERVERLESS_MEMORY_MB", "2048")
    with pytest.raises(ProblemsFound) as refused:
        load_config(project)
    (problem,) = refused.value.problems
    assert problem.where == "SERVING_IMAGE_URI" and "would run the training image IMAGE_URI (SERVING_IMAGE_URI is empty)" in problem.message
    assert "environment/serving/Dockerfile" in problem.message
    monkeypatch.setenv("SERVING_IMAGE_URI", IMAGE)
    with pytest.raises(ProblemsFound, match=r"SERVING_IMAGE_URI is IMAGE_URI"):
        load_config(project)
    monkeypatch.setenv("SERVING_IMAGE_URI", IMAGE.replace(":tag", ":cpu"))
    assert load_config(project).serving_image_uri.endswith(":cpu")
    monkeypatch.setenv("ENDPOINT_IMAGE", "training")
    with pytest.raises(ProblemsFound, match=r"ENDPOINT_IMAGE = training"):
        load_config(project)


def test_wandb_online_on_sagemaker_needs_the_secret_setting(make_ctx, project, monkeypatch):
    make_ctx()
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_PROJECT", "p")
    with pytest.raises(ProblemsFound, match="WANDB_API_KEY_SECRET: is empty, and WANDB_MODE = online with BACKEND = sagemaker"):
        load_config(project)
    monkeypatch.setenv("WANDB_API_KEY_SECRET", "ml-exp/wandb")
    assert load_config(project).wandb_api_key_secret == "ml-exp/wandb"


# --- cost before and after --------------------------------------------------------------------------


def test_a_dry_run_shows_each_jobs_upper_bound(make_ctx, project):
    from ml_exp.pipeline.runner import run_pipeline

    make_ctx(WANDB_MODE="disabled", TRAINING_INSTANCE_COUNT="2", MAX_RUN_HOURS="3")
    said: list[str] = []
    run_pipeline(project, dry_run=True, announce=said.append)
    note = " (on-demand prices of us-east-1 as of 2026-12-04 (ml_exp/backends/sagemaker/prices.json))"
    costs = [line for line in said if line.startswith("cost: ")]
    assert costs == ["cost: preparation (every model): 1 x ml.m5.2xlarge x 3 h max (MAX_RUN_HOURS) at $0.461/h = at most $1.38" + note,
                     "cost: training tiny-bert: 2 x ml.g5.2xlarge x 3 h max (MAX_RUN_HOURS) at $1.515/h = at most $9.09" + note,
                     "cost: inference tiny-bert: 1 x ml.g5.xlarge x 3 h max (MAX_RUN_HOURS) at $1.4084/h = at most $4.23" + note]


def _billing_client(name: str, seconds: int) -> object:
    client = boto3.client("sagemaker", region_name="us-east-1", endpoint_url="https://sagemaker.invalid",
                          aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    stub.add_response("describe_training_job", {
        "TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
        "TrainingJobStatus": "Completed", "SecondaryStatus": "Completed", "CreationTime": "2026-12-04T00:00:00Z",
        "AlgorithmSpecification": {"TrainingInputMode": "File"}, "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100},
        "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m.tar.gz"}, "BillableTimeInSeconds": seconds})
    stub.activate()
    return client


def test_each_jobs_bill_is_in_the_manifest_runs_and_compare(make_ctx, monkeypatch):
    ctx = make_ctx(MODEL_NAMES=MODEL, TRAINING_INSTANCE_COUNT="2")
    spec = sm.job_spec(ctx, "training", MODEL, name="EXP-80-sm-r1-train-bill")
    monkeypatch.setattr(sm, "job_spec", lambda *args, **kwargs: spec)
    monkeypatch.setattr(sm, "sagemaker_client", lambda region: _billing_client(spec["job_name"], 1800))
    done = sm.run_step(ctx, "training", MODEL, poll_seconds=0.01)
    assert (done["billable_seconds"], done["cost_usd"]) == (1800, pytest.approx(1.515))  # 2 instances x 0.5 h x $1.515
    job = ctx.run.read_manifest()["sagemaker_jobs"][spec["job_name"]]
    assert job == {"step": "training", "model": MODEL, "billable_seconds": 1800, "instance_type": "ml.g5.2xlarge",
                   "instance_count": 2, "cost_usd": pytest.approx(1.515), "price_table": "us-east-1 2026-12-04"}

    store = Store(ctx.config.storage_uri, ctx.config.experiment_name)
    (summary,) = [s for s in run_summaries(store, "f1_macro") if s["run"] == ctx.run.num]
    assert summary["aws"] == {"jobs": 1, "billable_seconds": 1800, "cost_usd": pytest.approx(1.515), "complete": True}
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(runs_table(ctx.config.experiment_name, [summary]))
    assert "$1.51 (1 jobs, 0.5 h)" in console.export_text()
    comparison = compare_runs(store, "f1_macro", [ctx.run.num])
    assert comparison["runs"][0]["aws"]["cost_usd"] == pytest.approx(1.515)
    console.print(comparison_table(ctx.config.experiment_name, comparison))
    assert "$1.51 (1 jobs, 0.5 h)" in console.export_text()  # in the run's status cell


# --- the container reads the secret ------------------------------------------------------------------


def test_the_container_reads_the_wandb_key_from_secrets_manager_before_anything(aws, monkeypatch, capsys):
    boto3.client("secretsmanager").create_secret(Name="ml-exp/wandb", SecretString="key-from-secrets-manager")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_API_KEY_SECRET", "ml-exp/wandb")
    assert container.secrets_loaded() and os.environ["WANDB_API_KEY"] == "key-from-secrets-manager"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_API_KEY_SECRET", "ml-exp/absent")
    assert container.main(["training"]) == 1  # before the settings, the data, wandb: nothing started
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ml_exp.backends.sagemaker.container: WANDB_API_KEY_SECRET: cannot read secret ml-exp/absent")
    assert json.dumps(dict(os.environ)).count("key-from-secrets-manager") == 0

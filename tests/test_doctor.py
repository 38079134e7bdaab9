"""`exp doctor` against moto's server on loopback: an account made ready (all ok), then each problem named.

moto (5.2.5) serves STS, S3 (conditional writes included), IAM roles and policies, ECR and Secrets
Manager; it answers iam:SimulatePrincipalPolicy with HTTP 500 and knows no SageMaker quotas
(ListServiceQuotas: HTTP 500). Those two are answered by ``tests/iam_simulator.py`` through
botocore's before-call hook, from the policies moto holds; and with moto's own answers the doctor
says it cannot check them (a warning, exit status 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import requests

from ml_exp.backends.sagemaker import doctor
from ml_exp.config import load_config
from tests import iam_simulator
from tests.aws_requests import Recorder
from tests.bake import bake

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "123456789012"
BUCKET = "mlexp-doctor"
ROLE_NAME = "ml-exp-execution"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
REPOSITORY = "ml-exp/exp-90"
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{REPOSITORY}:v1"
SECRET_NAME = "ml-exp/wandb"
KMS = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
FILL = {"ACCOUNT_ID": ACCOUNT, "REGION": "us-east-1", "BUCKET_NAME": BUCKET, "PREFIX": "runs", "SECRET_NAME": SECRET_NAME,
        "KMS_KEY_ID": "1234abcd-12ab-34cd-56ef-1234567890ab", "ROLE_NAME": ROLE_NAME}


def policy(name: str, drop: tuple[str, ...] = (), **fill: str) -> str:
    """A policy of docs/aws/ with its placeholders filled in (``drop``: actions left out)."""
    text = (ROOT / "docs" / "aws" / name).read_text()
    for key, value in {**FILL, **fill}.items():
        text = text.replace(key, value)
    document = json.loads(text)
    for statement in document["Statement"]:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        statement["Action"] = [a for a in actions if a not in drop]
    document["Statement"] = [s for s in document["Statement"] if s["Action"]]
    return json.dumps(document)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    return bake(tmp_path_factory.mktemp("doctor"), ticket="EXP-90", model_slug="doctor")


@pytest.fixture
def account(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path):
    """A ready account in moto: the bucket, the role (trust + execution policy), the image, the secret."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    for var, value in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(var, value)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    iam = boto3.client("iam")
    iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=policy("execution-role-trust-policy.json"))
    iam.put_role_policy(RoleName=ROLE_NAME, PolicyName="ml-exp", PolicyDocument=policy("execution-role-policy.json"))
    ecr = boto3.client("ecr")
    ecr.create_repository(repositoryName=REPOSITORY)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023, "digest": "sha256:" + "a" * 64},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654, "digest": "sha256:" + "b" * 64}]}
    ecr.put_image(repositoryName=REPOSITORY, imageManifest=json.dumps(manifest), imageTag="v1")
    boto3.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString="not-a-real-key")
    return iam


QUOTAS = [iam_simulator.quota("ml.g5.2xlarge", "training job", 2, "L-G52X"),
          iam_simulator.quota("ml.m5.2xlarge", "training job", 4, "L-M52X"),
          iam_simulator.quota("ml.g5.xlarge", "training job", 1, "L-G5X"),
          iam_simulator.quota("ml.g4dn.xlarge", "endpoint", 1, "L-G4DNE")]


def settings(project, monkeypatch, **overrides: str):
    base = {"BACKEND": "sagemaker", "STORAGE_URI": f"s3://{BUCKET}/runs", "SAGEMAKER_ROLE_ARN": ROLE, "IMAGE_URI": IMAGE,
            "KMS_KEY_ID": KMS, "WANDB_API_KEY_SECRET": SECRET_NAME}
    for key, value in {**base, **overrides}.items():
        monkeypatch.setenv(key, value)
    return load_config(project)


def run(config, iam_reader=None, quotas=QUOTAS, recorder: Recorder | None = None) -> list[doctor.Check]:
    session = boto3.Session(region_name=config.aws_region)
    if iam_reader is not None:
        iam_simulator.install(session, iam_reader, quotas)
    return doctor.run_checks(config, clients=doctor.clients_of(session))


def lines(checks) -> str:
    return "\n".join(str(c) for c in checks)


def test_a_ready_account_is_all_ok_and_every_request_is_valid(account, project, monkeypatch):
    recorder = Recorder().install(monkeypatch)
    checks = run(settings(project, monkeypatch), account)
    assert [c.status for c in checks] == ["ok"] * len(checks), lines(checks)
    assert [c.name for c in checks] == ["credentials", "region", "bucket", "role", "role permissions", "image", "secret",
                                        "quota", "quota", "quota", "quota"]
    assert not doctor.failed(checks)
    assert recorder.problems() == []
    assert "s3.PutObject" in recorder.operations() and "s3.DeleteObject" in recorder.operations()
    assert boto3.client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0  # the probe is gone


def test_what_moto_cannot_answer_is_a_warning(account, project, monkeypatch):
    checks = run(settings(project, monkeypatch))  # moto's own answers: HTTP 500 for both
    by_name = {c.name: c for c in checks}
    assert by_name["role permissions"].status == "warn" and "iam:SimulatePrincipalPolicy" in by_name["role permissions"].message
    assert by_name["quotas"].status == "warn" and "servicequotas:ListServiceQuotas" in by_name["quotas"].message
    assert not doctor.failed(checks), lines(checks)


def test_each_problem_is_named_with_its_fix(account, project, monkeypatch):
    iam = account
    # a role without the SDK's network-interface actions, and without the secret
    iam.put_role_policy(RoleName=ROLE_NAME, PolicyName="ml-exp",
                        PolicyDocument=policy("execution-role-policy.json", drop=("ec2:CreateNetworkInterface", "secretsmanager:GetSecretValue")))
    quotas = [q for q in QUOTAS if q["QuotaCode"] != "L-G5X"] + [iam_simulator.quota("ml.g5.xlarge", "training job", 0, "L-G5X")]
    config = settings(project, monkeypatch, WANDB_API_KEY_SECRET="ml-exp/missing",
                      SERVING_IMAGE_URI=f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{REPOSITORY}:not-pushed",
                      TRAINING_INSTANCE_COUNT="3")
    checks = run(config, iam, quotas)
    failures = {c.name: c.message for c in checks if c.status == "FAIL"}
    assert doctor.failed(checks)
    assert "lacks ec2:CreateNetworkInterface, secretsmanager:GetSecretValue" in failures["role permissions"]
    assert "docs/aws/execution-role-policy.json" in failures["role permissions"]
    assert "not-pushed is not in ECR" in failures["serving image"] and "build_and_push.sh" in failures["serving image"]
    assert "ml-exp/missing does not exist" in failures["secret"] and "create-secret" in failures["secret"]
    quota_failures = [c.message for c in checks if c.name == "quota" and c.status == "FAIL"]
    assert any("ml.g5.2xlarge for training job usage is 2, TRAINING_INSTANCE_TYPE x TRAINING_INSTANCE_COUNT needs 3" in m
               and "--quota-code L-G52X --desired-value 3" in m for m in quota_failures), quota_failures
    assert any("ml.g5.xlarge for training job usage is 0" in m for m in quota_failures), quota_failures


def test_role_trust_bucket_and_image_problems(account, project, monkeypatch):
    iam = account
    iam.update_assume_role_policy(RoleName=ROLE_NAME, PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
    checks = run(settings(project, monkeypatch, STORAGE_URI="s3://no-such-bucket-here/runs",
                          IMAGE_URI=f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/not/a-repo:v1"), iam)
    failures = {c.name: c.message for c in checks if c.status == "FAIL"}
    assert "does not trust sagemaker.amazonaws.com" in failures["role"] and "execution-role-trust-policy.json" in failures["role"]
    assert "NoSuchBucket" in failures["bucket"] and "aws s3 mb s3://no-such-bucket-here" in failures["bucket"]
    assert "repository not/a-repo does not exist" in failures["image"]

    iam.delete_role_policy(RoleName=ROLE_NAME, PolicyName="ml-exp")
    iam.delete_role(RoleName=ROLE_NAME)
    failures = {c.name: c.message for c in run(settings(project, monkeypatch, IMAGE_URI="docker.io/library/python:3.11"), iam) if c.status == "FAIL"}
    assert f"SAGEMAKER_ROLE_ARN {ROLE} does not exist" in failures["role"]
    assert "is not an ECR image URI" in failures["image"]


def test_no_credentials_fails_first_and_skips_the_rest(account, project, monkeypatch):
    config = settings(project, monkeypatch)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    checks = run(config)
    assert checks[0].name == "credentials" and checks[0].status == "FAIL" and "aws configure" in checks[0].message
    assert {c.status for c in checks[1:]} == {"skip"}


def test_a_bucket_in_another_region(account, project, monkeypatch):
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="mlexp-doctor-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    failures = {c.name: c.message for c in run(settings(project, monkeypatch, STORAGE_URI="s3://mlexp-doctor-eu/runs"), account)
                if c.status == "FAIL"}
    assert "is in eu-west-1, the jobs in us-east-1" in failures["bucket"]


def test_exp_doctor_prints_a_line_per_check_and_exits_1_on_a_failure(account, project, monkeypatch):
    """The command itself (a process: moto's answers, so the simulation and quotas are warnings)."""
    settings(project, monkeypatch)
    exp = str(Path(sys.executable).with_name("exp"))
    done = subprocess.run([exp, "doctor"], cwd=project, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].startswith("ok    credentials: arn:aws:sts::123456789012:user/moto")
    assert "warn  role permissions: could not simulate" in done.stdout and "ready for SageMaker" in done.stdout
    monkeypatch.setenv("IMAGE_URI", f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{REPOSITORY}:v2")
    done = subprocess.run([exp, "doctor"], cwd=project, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "FAIL  image:" in done.stdout and "1 check(s) failed" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr

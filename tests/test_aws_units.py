"""The pieces of the AWS side that need no job: instance storage and the volume key, the price
table and cost lines, the SDK's errors as one line, secrets from Secrets Manager (moto)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest
import requests

from ml_exp.backends.sagemaker import instances, sdk_errors, secret_store

ROOT = Path(__file__).resolve().parents[1]
ROLE = "arn:aws:iam::123456789012:role/ml-exp-execution"
KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


# --- instance storage and the volume key ---------------------------------------------------------


@pytest.mark.parametrize("itype", ["ml.g5.2xlarge", "ml.g5.xlarge", "ml.g4dn.xlarge", "ml.g6.12xlarge", "ml.p4d.24xlarge",
                                   "ml.p3dn.24xlarge", "ml.p5.48xlarge", "ml.m5d.large", "ml.c5d.xlarge", "ml.r5d.2xlarge", "ml.trn1.32xlarge"])
def test_types_with_instance_storage_get_no_volume_key(itype: str):
    assert instances.has_instance_storage(itype) and instances.volume_kms_key(itype, KMS) is None


@pytest.mark.parametrize("itype", ["ml.m5.2xlarge", "ml.c5.xlarge", "ml.p3.2xlarge", "ml.p3.16xlarge", "ml.r5.large", "ml.t3.medium", "ml.inf2.xlarge"])
def test_ebs_only_types_get_the_volume_key(itype: str):
    assert not instances.has_instance_storage(itype) and instances.volume_kms_key(itype, KMS) == KMS
    assert instances.volume_kms_key(itype, "") is None


def test_validate_says_what_happens_with_the_key():
    text = instances.kms_plan(KMS, {"preparation": "ml.m5.2xlarge", "training": "ml.g5.2xlarge", "endpoint": "ml.g4dn.xlarge"})
    assert text.startswith(f"KMS_KEY_ID {KMS} encrypts every job's output in S3 and the EBS volumes of preparation (ml.m5.2xlarge).")
    assert "Not sent for training (ml.g5.2xlarge), endpoint (ml.g4dn.xlarge): these instance types have local NVMe storage" in text


# --- prices -----------------------------------------------------------------------------------------


def test_the_price_table_says_its_date_region_and_source_and_covers_the_families():
    table = json.loads((ROOT / "runtime/ml_exp/backends/sagemaker/prices.json").read_text())
    assert table["region"] == "us-east-1" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", table["date"]) and table["currency"] == "USD"
    assert "aws.amazon.com/sagemaker/pricing" in table["source"]
    prices = table["prices"]
    for family in ("g4dn", "g5", "g6", "p3", "p4d", "m5", "c5"):
        assert sum(1 for t in prices if instances.family(t) == family) >= 1, family
    for itype in ("ml.g4dn.xlarge", "ml.g5.xlarge", "ml.g5.2xlarge", "ml.g5.12xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.c5.2xlarge"):
        assert prices[itype] > 0, itype
    assert all(0 < p < 200 for p in prices.values())
    # bigger sizes of a family cost more (a typo check)
    def size(itype: str) -> float:
        name = itype.split(".")[2]
        return {"medium": 0.25, "large": 0.5, "xlarge": 1}.get(name) or float(name[:-len("xlarge")])

    for family in ("g4dn", "m5", "c5", "p3", "t3", "r5"):
        by_size = [p for _, p in sorted((size(t), p) for t, p in prices.items() if instances.family(t) == family)]
        assert by_size == sorted(by_size), family


def test_every_instance_type_the_defaults_and_the_docs_name_has_a_price():
    texts = [(ROOT / "README.md").read_text(), *(p.read_text() for p in (ROOT / "runtime/ml_exp").rglob("*.py"))]
    named = set(re.findall(r"\bml\.[a-z0-9]+\.[0-9]*x?large\b", "\n".join(texts)))
    assert named and [t for t in sorted(named) if instances.hourly_price(t) is None and not t.startswith(("ml.inf", "ml.trn", "ml.m5d", "ml.c5d", "ml.r5d"))] == []


def test_cost_lines_are_upper_bounds_with_their_arithmetic():
    line = instances.job_cost_line("training tiny-bert", "ml.g5.2xlarge", 2, 24)
    assert line == "training tiny-bert: 2 x ml.g5.2xlarge x 24 h max (MAX_RUN_HOURS) at $1.515/h = at most $72.72"
    tuning = instances.job_cost_line("tuning tiny-bert", "ml.g5.2xlarge", 1, 2, jobs=10)
    assert "10 jobs x 1 x ml.g5.2xlarge x 2 h max" in tuning and tuning.endswith("at most $30.30")
    assert "no price for ml.x9.huge" in instances.job_cost_line("training m", "ml.x9.huge", 1, 1)
    endpoint = instances.endpoint_cost_line("endpoint", "ml.g4dn.xlarge", 2, None)
    assert "2 x ml.g4dn.xlarge at $0.7364/h = $1.47 per hour, $1,075.14 per month (730 h)" in endpoint
    assert "serverless, 2048 MB: billed per second" in instances.endpoint_cost_line("endpoint", None, 1, 2048)


def test_billed_seconds_and_cost_of_a_finished_job():
    facts = instances.billed({"BillableTimeInSeconds": 1800, "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2}})
    assert facts["billable_seconds"] == 1800 and facts["cost_usd"] == pytest.approx(1.515) and facts["instance_count"] == 2
    assert "cost_usd" not in instances.billed({"ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1}})


def test_a_tuning_jobs_trials_are_added_up_or_unknown():
    jobs = {"t-001": {"BillableTimeInSeconds": 600, "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1}},
            "t-002": {"BillableTimeInSeconds": 1200, "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1}}}
    total = instances.billed_jobs(jobs.__getitem__, ["t-001", "t-002"])
    assert total == {"trials": 2, "billable_seconds": 1800, "cost_usd": pytest.approx(0.7575)}
    assert instances.billed_jobs(jobs.__getitem__, ["t-001", "gone"]) == {"trials": 2, "billable_seconds": None, "cost_usd": None}


# --- the SDK's errors as one line -------------------------------------------------------------------


def test_a_role_validation_error_is_one_line_naming_the_role_and_what_it_lacks():
    from sagemaker.core.helper.iam_role_resolver import RoleValidationError, _build_validation_error_message

    missing = ["ec2:CreateNetworkInterface", "cloudwatch:PutMetricData"]
    error = RoleValidationError(_build_validation_error_message(ROLE, "training", missing_actions=missing))
    assert "\n" in str(error)  # the SDK's own message: a dozen lines
    line = sdk_errors.explain(error, "SageMaker job J", ROLE, "us-east-1")
    assert "\n" not in line and ROLE in line and "SAGEMAKER_ROLE_ARN" in line
    assert "lacks cloudwatch:PutMetricData, ec2:CreateNetworkInterface" in line and "docs/aws/execution-role-policy.json" in line

    trust = RoleValidationError(_build_validation_error_message(ROLE, "training", trust_failed=True))
    line = sdk_errors.explain(trust, "SageMaker job J", ROLE, "us-east-1")
    assert "does not let sagemaker.amazonaws.com assume it" in line and "execution-role-trust-policy.json" in line and "\n" not in line


def test_other_errors_are_one_line_too():
    from botocore.exceptions import ClientError, NoCredentialsError

    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "User: x is not authorized\nto perform"}}, "CreateTrainingJob")
    line = sdk_errors.explain(denied, "SageMaker job J", ROLE, "us-east-1")
    assert line.startswith("SageMaker job J: CreateTrainingJob failed (AccessDeniedException): User: x is not authorized")
    assert "experimenter-policy.json" in line and "\n" not in line
    assert "cannot reach AWS in eu-west-1" in sdk_errors.explain(NoCredentialsError(), "SageMaker job J", ROLE, "eu-west-1")
    from sagemaker.core.helper.iam_role_resolver import resolve_and_validate_role

    with pytest.raises(ValueError) as raised:  # a plain ValueError, raised by the SDK
        resolve_and_validate_role(ROLE, role_type="bogus")
    other = sdk_errors.explain(raised.value, "SageMaker job J", ROLE, "us-east-1")
    assert other.startswith("SageMaker job J: the SageMaker SDK failed with ValueError: Invalid role_type 'bogus'")
    assert other.endswith(f"(execution role {ROLE}). `exp doctor` checks the role, the image and the bucket")
    try:  # ours (a bug) is no SDK error: it keeps its traceback
        raise ValueError("ours")
    except ValueError as exc:
        assert sdk_errors.explain(exc, "x", ROLE, "us-east-1") is None
    assert sdk_errors.explain(raised.value, "x", ROLE, "us-east-1", sdk=False) is None


# --- secrets -------------------------------------------------------------------------------------


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    for var, value in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(var, value)
    return moto_server


def test_the_container_reads_the_key_from_secrets_manager(aws):
    client = boto3.client("secretsmanager")
    client.create_secret(Name="ml-exp/wandb", SecretString="key-0123456789")
    client.create_secret(Name="ml-exp/wandb-json", SecretString=json.dumps({"WANDB_API_KEY": "key-from-json"}))
    env = {"WANDB_API_KEY_SECRET": "ml-exp/wandb", "AWS_REGION": "us-east-1"}
    assert secret_store.load_secrets(env) == ["WANDB_API_KEY"] and env["WANDB_API_KEY"] == "key-0123456789"
    env = {"WANDB_API_KEY_SECRET": "ml-exp/wandb-json"}
    secret_store.load_secrets(env)
    assert env["WANDB_API_KEY"] == "key-from-json"
    env = {"WANDB_API_KEY_SECRET": "ml-exp/wandb", "WANDB_API_KEY": "already-here"}
    assert secret_store.load_secrets(env) == [] and env["WANDB_API_KEY"] == "already-here"
    assert secret_store.load_secrets({}) == []


def test_a_missing_secret_names_the_setting_and_the_fix(aws):
    with pytest.raises(secret_store.SecretError) as failed:
        secret_store.load_secrets({"WANDB_API_KEY_SECRET": "ml-exp/nothing"})
    message = str(failed.value)
    assert message.startswith("WANDB_API_KEY_SECRET: cannot read secret ml-exp/nothing (ResourceNotFoundException")
    assert "aws secretsmanager create-secret --name ml-exp/nothing" in message
    boto3.client("secretsmanager").create_secret(Name="ml-exp/other", SecretString=json.dumps({"token": "x"}))
    with pytest.raises(secret_store.SecretError, match="JSON without a WANDB_API_KEY member"):
        secret_store.load_secrets({"WANDB_API_KEY_SECRET": "ml-exp/other"})

"""`exp deploy`, `exp endpoints`, `exp undeploy` against moto's server on loopback (SageMaker and
S3), from a run trained for real and copied to moto's S3: the resources SageMaker gets, their
names, tags, image, model data and environment, and the trace in the run's manifest."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest
import requests
from botocore.stub import Stubber

from ml_exp.backends.sagemaker import endpoints
from ml_exp.core.errors import UserError
from ml_exp.deploy.deployments import deploy, list_endpoints, undeploy
from ml_exp.storage.store import Store

EXP = str(Path(sys.executable).with_name("exp"))
BUCKET = "mlexp-deploy"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml-exp/exp-120:v1"
SERVING_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml-exp/exp-120-serving:v1"
KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET = "wandb-secret-0123456789"
EXPERIMENT = "EXP-120-serving"


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    for var, value in {
        "AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "WANDB_API_KEY": SECRET,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "STORAGE_URI": f"s3://{BUCKET}/runs", "SAGEMAKER_ROLE_ARN": ROLE, "IMAGE_URI": IMAGE, "WANDB_MODE": "disabled",
    }.items():
        monkeypatch.setenv(var, value)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return moto_server


@pytest.fixture
def s3_run(aws, trained_run):
    """The trained run, copied to moto's S3 as run_1 of the experiment (what a SageMaker run leaves)."""
    store = Store(f"s3://{BUCKET}/runs", EXPERIMENT)
    manifest = json.loads((trained_run.run_dir / "manifest.json").read_text())
    run = store.claim_run(1, {k: v for k, v in manifest.items() if k not in ("run", "claimed_at", "claim_token")})
    for folder in ("data/reconciled", "data/prepared", "models/tiny-bert"):
        run.put_dir(str(trained_run.run_dir / folder), folder)
    run.write_bytes("comparison.json", (trained_run.run_dir / "comparison.json").read_bytes())
    return run


def sm():
    return boto3.client("sagemaker")


@pytest.mark.slow  # a run trained for real
def test_deploy_creates_a_tagged_endpoint_of_the_run_and_records_it(s3_run, trained_run, monkeypatch):
    from tests.aws_requests import Recorder

    recorder = Recorder().install(monkeypatch)  # every request of the deploy, against botocore's models
    done = deploy(trained_run.project, 1, None, poll_seconds=0.01, announce=lambda m: None)
    assert recorder.problems() == [] and len(recorder.of("CreateEndpointConfig")) == 1
    name = done["endpoint_name"]
    assert done["status"] == "InService" and done["model"] == "tiny-bert"
    assert name.startswith(f"{EXPERIMENT}-r1-tiny-bert-") and len(name) <= 63

    model = sm().describe_model(ModelName=name)
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE and model["ExecutionRoleArn"] == ROLE
    assert container["ModelDataUrl"] == f"{s3_run.uri}/serving/tiny-bert/model.tar.gz"
    assert container["Environment"] == {"ML_EXP_EXPERIMENT_DIR": "/opt/ml/code", "SERVE_TIMEOUT_S": "50"}  # no secret
    assert "VpcConfig" not in model or not model["VpcConfig"]
    config = sm().describe_endpoint_config(EndpointConfigName=name)
    (variant,) = config["ProductionVariants"]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (name, "ml.g4dn.xlarge", 1)
    assert not config.get("KmsKeyId")
    endpoint = sm().describe_endpoint(EndpointName=name)
    assert endpoint["EndpointConfigName"] == name and endpoint["EndpointStatus"] == "InService"

    manifest = json.loads((trained_run.run_dir / "manifest.json").read_text())
    want = {"ml-exp:experiment": EXPERIMENT, "ml-exp:run": "1", "ml-exp:model": "tiny-bert",
            "ml-exp:git-commit": (manifest.get("git") or {}).get("commit") or "none",
            "ml-exp:template-version": (manifest.get("template") or {}).get("version") or "none"}
    for arn in (model["ModelArn"], config["EndpointConfigArn"], endpoint["EndpointArn"]):
        assert {t["Key"]: t["Value"] for t in sm().list_tags(ResourceArn=arn)["Tags"]} == want

    # the model data: the run's model, its processor and serving.json, and no secret anywhere
    data = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"runs/{EXPERIMENT}/run_1/serving/tiny-bert/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = set(tar.getnames())
        info = json.loads(tar.extractfile("serving.json").read())
    assert {"model.safetensors", "config.json", "labels.json", "serving.json", "processor/tokenizer.json"} <= names
    # the experiment's code, for the CPU serving image (which has none): settings.ini and its modules only
    code = {n for n in names if n.startswith("code/")}
    assert {"code/settings.ini", "code/experiment.py", "code/demo_documents.py"} <= code  # and what it imports
    assert not [n for n in code if n.startswith(("code/tests", "code/.exp-store"))]
    assert (info["experiment"], info["run"], info["model"], info["fields"]) == (EXPERIMENT, 1, "tiny-bert", {"text": "string", "title": "string"})
    for secret in (SECRET, "testing-secret-key"):
        assert secret.encode() not in data
        assert secret not in json.dumps(model, default=str) and secret not in s3_run.read_text(f"deployments/{name}.json")

    recorded = s3_run.read_manifest()["deployments"]
    assert [(d["endpoint"], d["model"], d["status"]) for d in recorded] == [(name, "tiny-bert", "InService")]
    assert recorded[0]["deployed_at"] and recorded[0]["by"]["user"] and recorded[0]["model_data"] == container["ModelDataUrl"]
    assert recorded[0]["spec_uri"] == f"{s3_run.uri}/deployments/{name}.json"


@pytest.mark.slow  # a run trained for real
def test_kms_vpc_and_serverless_when_set(s3_run, trained_run, monkeypatch):
    monkeypatch.setenv("KMS_KEY_ID", KMS)
    monkeypatch.setenv("SUBNETS", "subnet-0abc,subnet-0def")
    monkeypatch.setenv("SECURITY_GROUP_IDS", "sg-0123")
    monkeypatch.setenv("ENDPOINT_INSTANCE_TYPE", "ml.m5.xlarge")
    monkeypatch.setenv("ENDPOINT_INSTANCE_COUNT", "2")
    name = deploy(trained_run.project, 1, "tiny-bert", poll_seconds=0.01, announce=lambda m: None)["endpoint_name"]
    assert sm().describe_model(ModelName=name)["VpcConfig"] == {"Subnets": ["subnet-0abc", "subnet-0def"], "SecurityGroupIds": ["sg-0123"]}
    config = sm().describe_endpoint_config(EndpointConfigName=name)
    assert config["KmsKeyId"] == KMS
    assert (config["ProductionVariants"][0]["InstanceType"], config["ProductionVariants"][0]["InitialInstanceCount"]) == ("ml.m5.xlarge", 2)

    monkeypatch.setenv("SERVING_IMAGE_URI", SERVING_IMAGE)  # serverless: the CPU serving image
    with pytest.raises(UserError, match="serverless endpoint cannot run in a VPC"):
        monkeypatch.setenv("ENDPOINT_SERVERLESS_MEMORY_MB", "2048")
        deploy(trained_run.project, 1, None, announce=lambda m: None)
    monkeypatch.delenv("SUBNETS")
    monkeypatch.delenv("SECURITY_GROUP_IDS")
    serverless = deploy(trained_run.project, 1, None, poll_seconds=0.01, announce=lambda m: None)["endpoint_name"]
    assert serverless != name
    assert sm().describe_model(ModelName=serverless)["PrimaryContainer"]["Image"] == SERVING_IMAGE
    assert not sm().describe_endpoint_config(EndpointConfigName=serverless).get("KmsKeyId")  # no volume to encrypt
    (variant,) = sm().describe_endpoint_config(EndpointConfigName=serverless)["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5} and "InstanceType" not in variant
    # the serving image reads the experiment's code from the model's code/ folder
    assert sm().describe_model(ModelName=serverless)["PrimaryContainer"]["Environment"] == {"ML_EXP_EXPERIMENT_DIR": "/opt/ml/model/code",
                                                                                                   "SERVE_TIMEOUT_S": "50"}
    assert len(s3_run.read_manifest()["deployments"]) == 2


@pytest.mark.slow  # a run trained for real
def test_dry_run_saves_the_requests_and_sends_nothing(s3_run, trained_run):
    done = subprocess.run([EXP, "deploy", "--run", "1", "--dry-run"], cwd=trained_run.project, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)
    name = printed["create_endpoint"]["EndpointName"]
    assert "dry run, nothing sent" in done.stderr and name in done.stderr
    assert "cost: 1 x ml.g4dn.xlarge at $0.7364/h = $0.74 per hour, $537.57 per month (730 h) until `exp undeploy`" in done.stderr
    assert s3_run.read_json(f"deployments/{name}.json")["requests"] == printed
    assert printed["create_model"]["PrimaryContainer"]["Image"] == IMAGE and SECRET not in done.stdout + done.stderr
    assert sm().list_models()["Models"] == [] and sm().list_endpoint_configs()["EndpointConfigs"] == []
    assert sm().list_endpoints()["Endpoints"] == []
    assert not s3_run.exists("serving/tiny-bert/model.tar.gz") and "deployments" not in s3_run.read_manifest()


@pytest.mark.slow  # a run trained for real
def test_endpoints_lists_this_experiments_and_undeploy_removes_all_three(s3_run, trained_run):
    first = deploy(trained_run.project, 1, None, poll_seconds=0.01, announce=lambda m: None)["endpoint_name"]
    second = deploy(trained_run.project, 1, None, poll_seconds=0.01, announce=lambda m: None)["endpoint_name"]
    # someone else's endpoint, with a similar name, is not listed
    other = f"{EXPERIMENT}-r1-other"
    sm().create_model(ModelName=other, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    sm().create_endpoint_config(EndpointConfigName=other, ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": other, "InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 1}])
    sm().create_endpoint(EndpointName=other, EndpointConfigName=other, Tags=[{"Key": "ml-exp:experiment", "Value": "EXP-1-else"}])

    listed = subprocess.run([EXP, "endpoints", "--json"], cwd=trained_run.project, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(r["endpoint"] for r in rows) == sorted([first, second])
    assert {(r["status"], r["run"], r["model"]) for r in rows} == {("InService", 1, "tiny-bert")}
    assert list_endpoints(trained_run.project) == rows

    refused = subprocess.run([EXP, "undeploy", other], cwd=trained_run.project, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "serves experiment EXP-1-else" in refused.stderr
    gone = subprocess.run([EXP, "undeploy", first], cwd=trained_run.project, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert gone.returncode == 0, gone.stderr
    assert f"endpoint {first}, endpoint config {first}, model {first}" in gone.stdout
    assert [e["EndpointName"] for e in sm().list_endpoints()["Endpoints"] if e["EndpointName"] != other] == [second]
    assert first not in [m["ModelName"] for m in sm().list_models()["Models"]]
    assert first not in [c["EndpointConfigName"] for c in sm().list_endpoint_configs()["EndpointConfigs"]]
    records = {d["endpoint"]: d for d in s3_run.read_manifest()["deployments"]}
    assert records[first]["status"] == "Deleted" and records[first]["undeployed_at"] and records[second]["status"] == "InService"

    missing = subprocess.run([EXP, "undeploy", "no-such-endpoint"], cwd=trained_run.project, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no-such-endpoint" in missing.stderr and "Traceback" not in missing.stderr
    assert undeploy(trained_run.project, second) == [f"endpoint {second}", f"endpoint config {second}", f"model {second}"]


@pytest.mark.slow  # a run trained for real
def test_a_run_on_local_storage_is_pointed_to_exp_serve(trained_run):
    done = subprocess.run([EXP, "deploy", "--run", "1"], cwd=trained_run.project, env=trained_run.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "exp serve --run 1" in done.stderr and "Traceback" not in done.stderr


def test_a_failed_endpoint_shows_the_reason_and_its_log_group():
    client = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(client) as stub:
        stub.add_response("describe_endpoint", {"EndpointName": "e", "EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/e",
                                                "EndpointConfigName": "e", "EndpointStatus": "Creating",
                                                "CreationTime": "2026-01-01", "LastModifiedTime": "2026-01-01"})
        stub.add_response("describe_endpoint", {"EndpointName": "e", "EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/e",
                                                "EndpointConfigName": "e", "EndpointStatus": "Failed",
                                                "FailureReason": "The primary container for production variant AllTraffic did not pass the ping health check.",
                                                "CreationTime": "2026-01-01", "LastModifiedTime": "2026-01-01"})
        seen = []
        with pytest.raises(endpoints.EndpointFailed) as failed:
            endpoints.wait(client, "e", "us-east-1", poll_seconds=0, on_status=lambda n, s: seen.append(s))
    assert seen == ["Creating", "Failed"]
    message = str(failed.value)
    assert "did not pass the ping health check" in message and "/aws/sagemaker/Endpoints/e" in message


def test_the_endpoint_gets_serve_timeout_as_deployed_and_one_past_sagemakers_is_refused(tmp_path):
    from ml_exp.config import load_config
    from tests.test_config import GOOD, write_settings

    settings = {**GOOD, "SAGEMAKER_ROLE_ARN": ROLE, "IMAGE_URI": IMAGE}
    config = load_config(write_settings(tmp_path, settings), environ={"SERVE_TIMEOUT_S": "12.5"})
    assert endpoints.environment(config) == {"ML_EXP_EXPERIMENT_DIR": "/opt/ml/code", "SERVE_TIMEOUT_S": "12.5"}
    assert endpoints.check(config) == []
    late = load_config(write_settings(tmp_path, settings), environ={"SERVE_TIMEOUT_S": "90"})
    (problem,) = endpoints.check(late)
    assert problem.startswith("SERVE_TIMEOUT_S = 90:") and "below 60" in problem


def test_endpoint_names_carry_experiment_and_run_and_stay_valid():
    assert endpoints.endpoint_name("EXP-3333-longformer", 4, "allenai/longformer-base-4096", token="abc123") == \
        "EXP-3333-longformer-r4-allenai-longformer-base-4096-abc123"
    long = endpoints.endpoint_name("EXP-3333-" + "x" * 60, 12, "org/" + "m" * 80)
    assert len(long) <= 63 and long.startswith("EXP-3333-xxxx") and "-r12-" in long
    assert long.startswith(endpoints.name_prefix("EXP-3333-" + "x" * 60))
    assert len({endpoints.endpoint_name("EXP-1-a", 1, "m") for _ in range(20)}) == 20


@pytest.mark.slow  # a run trained for real
def test_the_packed_model_serves_with_only_its_own_code_as_the_serving_image_does(s3_run, trained_run, tmp_path):
    """The CPU serving image holds no experiment: SageMaker unpacks model.tar.gz in /opt/ml/model and
    the image's ML_EXP_EXPERIMENT_DIR is /opt/ml/model/code. Here: the archive exp deploy packed,
    unpacked under an emulated /opt/ml, served from a folder that is not the experiment's."""
    from ml_exp.serving.bundle import unpack
    from tests.test_serving import free_port, stop, wait_until_up

    deploy(trained_run.project, 1, None, poll_seconds=0.01, announce=lambda m: None)
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(boto3.client("s3").get_object(Bucket=BUCKET, Key=f"runs/{EXPERIMENT}/run_1/serving/tiny-bert/model.tar.gz")["Body"].read())
    root = tmp_path / "opt-ml"
    unpack(archive, root / "model")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "ML_EXP_EXPERIMENT_DIR"}
    env.update({"ML_EXP_SAGEMAKER_ROOT": str(root), "ML_EXP_EXPERIMENT_DIR": str(root / "model" / "code"),
                "SAGEMAKER_BIND_TO_PORT": str(port), "ML_EXP_SERVE_HOST": "127.0.0.1"})
    process = subprocess.Popen([sys.executable, "-m", "ml_exp.backends.sagemaker.container", "serve"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process)
        record = {"id": "d1", "title": "Master services agreement", "text": "This agreement between the parties sets the terms."}
        (prediction,) = requests.post(f"http://127.0.0.1:{port}/invocations", json=[record], timeout=60).json()
        assert prediction["id"] == "d1" and prediction["prediction"] in prediction["scores"]
    finally:
        stop(process)


@pytest.mark.slow  # a run trained for real
def test_a_deploy_dry_run_writes_and_prints_no_planted_secret(s3_run, trained_run):
    """Credentials in the image URIs and secrets in recorded variables, and an older manifest that
    holds a credential unredacted: the printed requests and the saved deploy spec hold none."""
    from tests.test_redact import PLANTED_ENV, S

    image = IMAGE.replace("123456789012.", f"plant:{S}@123456789012.", 1)
    env = {**os.environ, **PLANTED_ENV, "IMAGE_URI": image, "SERVING_IMAGE_URI": f"https://plant:{S}@registry.example.com/s:1"}
    manifest = s3_run.read_manifest()
    manifest["settings"]["IMAGE_URI"] = image
    s3_run.write_manifest(manifest)
    done = subprocess.run([EXP, "deploy", "--run", "1", "--dry-run"], cwd=trained_run.project, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    name = json.loads(done.stdout)["create_endpoint"]["EndpointName"]
    assert S not in done.stdout + done.stderr and S not in s3_run.read_text(f"deployments/{name}.json")

"""exp register / approve / reject / deploy --registry with BACKEND = sagemaker, against moto's server
on loopback: a model package group, a model package with the image, the model data and the
run's metrics, pending approval; every request checked against botocore's models (what AWS
would refuse that moto accepts). The run is the session's trained run, copied to moto's S3."""

from __future__ import annotations

import json

import boto3
import pytest
from ml_exp.core.errors import UserError
from ml_exp.deploy.registry import deploy_version, register, set_status, versions

from tests.test_deploy import EXPERIMENT, IMAGE, aws, s3_run  # noqa: F401 - the fixtures

pytestmark = pytest.mark.slow  # a run trained for real


def test_register_creates_a_model_package_and_approval_changes_it(s3_run, trained_run, monkeypatch):  # noqa: F811
    from tests.aws_requests import Recorder

    monkeypatch.setenv("BACKEND", "sagemaker")
    recorder = Recorder().install(monkeypatch)
    done = register(trained_run.project, 1, None)
    sm = boto3.client("sagemaker")
    arn = done["sagemaker"]["model_package_arn"]
    package = sm.describe_model_package(ModelPackageName=arn)
    assert package["ModelPackageGroupName"] == "EXP" and package["ModelApprovalStatus"] == "PendingManualApproval"
    (container,) = package["InferenceSpecification"]["Containers"]
    assert container["Image"] == IMAGE and container["ModelDataUrl"] == f"{s3_run.uri}/serving/tiny-bert/model.tar.gz"
    metrics_uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    assert json.loads(s3_run.read_text("registry/model_quality.json"))["metrics"] == done["metrics"]
    assert metrics_uri == s3_run.path("registry/model_quality.json")
    assert done["version"] == package["ModelPackageVersion"] == 1 and done["model_data"] == container["ModelDataUrl"]
    assert s3_run.read_manifest()["registry"] == [{"group": "EXP", "version": 1, "uri": done["uri"]}]

    with pytest.raises(UserError, match="PendingManualApproval"):
        deploy_version(trained_run.project, 1, poll_seconds=0.01, announce=lambda m: None)
    set_status(trained_run.project, 1, "Approved", "beats v0")
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"
    second = register(trained_run.project, 1, "tiny-bert")
    assert second["version"] == 2
    set_status(trained_run.project, 2, "Rejected")
    listed = sm.list_model_packages(ModelPackageGroupName="EXP")["ModelPackageSummaryList"]
    statuses = {p["ModelPackageVersion"]: p["ModelApprovalStatus"] for p in listed}
    assert statuses == {1: "Approved", 2: "Rejected"}

    deployed = deploy_version(trained_run.project, 1, poll_seconds=0.01, announce=lambda m: None)
    assert deployed["status"] == "InService" and deployed["endpoint_name"].startswith(f"{EXPERIMENT}-r1-tiny-bert-")
    (first, _) = versions(trained_run.project)
    assert [d["endpoint"] for d in first["deployments"]] == [deployed["endpoint_name"]]
    assert recorder.problems() == [] and recorder.of("CreateModelPackage") and recorder.of("UpdateModelPackage")

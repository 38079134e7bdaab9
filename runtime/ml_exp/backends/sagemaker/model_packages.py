"""The SageMaker Model Registry side of ``exp register`` / ``exp approve`` / ``exp reject``: a model
package group per use case (MODEL_PACKAGE_GROUP) and a model package per registered run's model,
with its image and model data, the run's test metrics (a ModelQuality statistics document in
the run) and approval status ``PendingManualApproval``. Plain boto3 calls."""

from __future__ import annotations

from typing import Any

from ml_exp.backends.sagemaker.endpoints import tags

CONTENT_TYPES = ["application/json", "application/jsonlines"]


def ensure_group(sm: Any, group: str, description: str) -> str:
    """The group's ARN, creating the group when it does not exist yet."""
    try:
        return sm.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupArn"]
    except sm.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("ValidationException", "ResourceNotFound"):
            raise
    return sm.create_model_package_group(ModelPackageGroupName=group, ModelPackageGroupDescription=description[:1024])[
        "ModelPackageGroupArn"
    ]


def create_package(
    sm: Any, group: str, image: str, model_data: str, metrics_uri: str, info: dict[str, Any], description: str
) -> dict[str, Any]:
    """A model package in ``group`` pending approval; returns its ARN and version."""
    arn = sm.create_model_package(
        ModelPackageGroupName=group,
        ModelPackageDescription=description[:1024],
        InferenceSpecification={
            "Containers": [{"Image": image, "ModelDataUrl": model_data}],
            "SupportedContentTypes": CONTENT_TYPES,
            "SupportedResponseMIMETypes": CONTENT_TYPES,
        },
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri}}},
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties={k[len("ml-exp:") :]: v for k, v in ((t["Key"], t["Value"]) for t in tags(info))},
        Tags=tags(info),
    )["ModelPackageArn"]
    described = sm.describe_model_package(ModelPackageName=arn)
    return {"model_package_arn": arn, "version": int(described.get("ModelPackageVersion") or arn.rsplit("/", 1)[-1])}


def set_status(sm: Any, arn: str, status: str, note: str) -> None:
    params = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    if note:
        params["ApprovalDescription"] = note[:1024]
    sm.update_model_package(**params)

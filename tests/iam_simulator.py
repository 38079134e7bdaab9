"""What moto's server lacks, answered through botocore's ``before-call`` hook (as botocore's Stubber
does), computed from what moto holds:

- ``iam:SimulatePrincipalPolicy`` (moto answers HTTP 500): the role's inline and attached policies,
  read back from moto, evaluated for each action and resource (Allow/Deny statements, ``*`` and
  ``?`` wildcards; conditions are not evaluated);
- ``service-quotas:ListServiceQuotas`` for SageMaker (moto knows only VPC quotas): the quotas a test
  gives, in AWS's shape ("ml.g5.2xlarge for training job usage").

The answers go through botocore's response parsing of the real client, and the requests through
:func:`tests.aws_requests.check_request` like every other.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import regex
from botocore.awsrequest import AWSResponse


def _list(value: Any) -> list:
    return [value] if isinstance(value, str) else list(value or [])


def _matches(patterns: list[str], value: str, case: bool) -> bool:
    for pattern in patterns:
        expression = regex.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
        if regex.fullmatch(expression, value, flags=0 if case else regex.I):
            return True
    return False


def evaluate(documents: list[dict], action: str, resource: str) -> str:
    """IAM's decision for one action on one resource: explicitDeny, allowed or implicitDeny."""
    decision = "implicitDeny"
    for document in documents:
        for statement in _list(document.get("Statement")) if not isinstance(document.get("Statement"), dict) else [document["Statement"]]:
            if not _matches(_list(statement.get("Action")), action, case=False):
                continue
            if not _matches(_list(statement.get("Resource", "*")), resource, case=True):
                continue
            if statement.get("Effect") == "Deny":
                return "explicitDeny"
            decision = "allowed"
    return decision


def role_policies(iam: Any, role_name: str) -> list[dict]:
    documents = []
    for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        documents.append(json.loads(unquote(document)) if isinstance(document, str) else document)
    for attached in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]:
        policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
        version = iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=policy["DefaultVersionId"])["PolicyVersion"]
        document = version["Document"]
        documents.append(json.loads(unquote(document)) if isinstance(document, str) else document)
    return documents


def _answer(parsed: dict) -> tuple[AWSResponse, dict]:
    return AWSResponse(None, 200, {}, None), parsed


def install(session: Any, iam_reader: Any, quotas: list[dict] | None = None) -> None:
    """Answer SimulatePrincipalPolicy (from ``iam_reader``, a moto IAM client) and, when ``quotas``
    is given, ListServiceQuotas, for every client ``session`` (a boto3.Session) makes."""

    def keep(params: dict, context: dict, **_: Any) -> None:  # before-call sees the serialised request; keep the parameters
        context["ml_exp_params"] = params

    def simulate(context: dict, **_: Any) -> tuple[AWSResponse, dict]:
        params = context["ml_exp_params"]
        role = params["PolicySourceArn"].split(":role/")[-1].split("/")[-1]
        documents = role_policies(iam_reader, role)
        results = []
        for action in params["ActionNames"]:
            for resource in params.get("ResourceArns") or ["*"]:
                results.append({"EvalActionName": action, "EvalResourceName": resource,
                                "EvalDecision": evaluate(documents, action, resource)})
        return _answer({"EvaluationResults": results, "IsTruncated": False})

    session.events.register("before-parameter-build.iam.SimulatePrincipalPolicy", keep)
    session.events.register("before-call.iam.SimulatePrincipalPolicy", simulate)
    if quotas is not None:
        def list_quotas(context: dict, **_: Any) -> tuple[AWSResponse, dict]:
            params = context["ml_exp_params"]
            return _answer({"Quotas": [q for q in quotas if q.get("ServiceCode", "sagemaker") == params["ServiceCode"]]})

        session.events.register("before-parameter-build.service-quotas.ListServiceQuotas", keep)
        session.events.register("before-call.service-quotas.ListServiceQuotas", list_quotas)


def quota(instance_type: str, usage: str, value: float, code: str) -> dict:
    return {"ServiceCode": "sagemaker", "ServiceName": "Amazon SageMaker", "QuotaCode": code,
            "QuotaArn": f"arn:aws:servicequotas:us-east-1:123456789012:sagemaker/{code}",
            "QuotaName": f"{instance_type} for {usage} usage", "Value": value, "Unit": "None", "Adjustable": True, "GlobalQuota": False}


def install_everywhere(monkeypatch: Any, iam_reader: Any, quotas: list[dict] | None = None) -> None:
    """:func:`install` on every botocore session created from now on (the SageMaker SDK's own too)."""
    import boto3
    import botocore.session

    original = botocore.session.Session.__init__

    def init(session: Any, *args: Any, **kwargs: Any) -> None:
        original(session, *args, **kwargs)
        install(_Events(session), iam_reader, quotas)

    monkeypatch.setattr(botocore.session.Session, "__init__", init)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


class _Events:
    """A botocore session seen as a boto3 one (``.events``), for :func:`install`."""

    def __init__(self, session: Any) -> None:
        self.events = session.get_component("event_emitter")

"""The errors of AWS and of the SageMaker SDK, as one line that names what to fix.

- a ``ClientError`` (AWS refused a call): the operation, AWS's code and message; AccessDenied
  also names the policy to grant (``docs/aws/``);
- the SDK's ``RoleValidationError`` (not a ClientError): before it creates a job the SDK
  simulates, as the caller, the actions a training job's role needs (``iam:SimulatePrincipalPolicy``)
  and reads the role's trust policy, unless ``SAGEMAKER_VALIDATE_ROLE=false``; the line names the
  role, the permissions it lacks (or the missing trust), and the policy that grants them;
- credentials, region and connection errors of botocore;
- any other error the SDK raises (its own validation, a role that does not exist...): its type
  and first line, with the role.

Nothing here imports the SDK: errors are recognised by their class names.
"""

from __future__ import annotations

import re

EXECUTION_POLICY = "docs/aws/execution-role-policy.json"
TRUST_POLICY = "docs/aws/execution-role-trust-policy.json"
EXPERIMENTER_POLICY = "docs/aws/experimenter-policy.json"
CONNECTION_ERRORS = (
    "NoCredentialsError",
    "PartialCredentialsError",
    "NoRegionError",
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "TokenRetrievalError",
    "SSOTokenLoadError",
    "UnauthorizedSSOTokenError",
    "CredentialRetrievalError",
    "ProfileNotFound",
)
ACCESS_DENIED = (
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _classes(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def missing_permissions(message: str) -> list[str]:
    """The actions a RoleValidationError's message lists as missing (or required)."""
    match = re.search(r"^(?:Missing|Required) permissions: (.+)$", message, re.MULTILINE)
    return [a.strip() for a in match.group(1).split(",") if a.strip()] if match else []


SDK_MODULES = ("sagemaker", "botocore", "boto3", "s3transfer", "pydantic", "pydantic_core")


def from_sdk(exc: BaseException) -> bool:
    """Whether the SDK (or boto/pydantic under it) raised ``exc``: its class is theirs, or it was
    raised in their code (the SDK raises plain ValueErrors too). Anything else is a bug of ours,
    and keeps its traceback."""
    if type(exc).__module__.split(".")[0] in SDK_MODULES:
        return True
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and str(last.tb_frame.f_globals.get("__name__", "")).split(".")[0] in SDK_MODULES


def explain(exc: BaseException, what: str, role: str | None, region: str | None, sdk: bool = True) -> str | None:
    """One line for ``exc``, raised while ``what`` (e.g. "SageMaker job X") was being done with
    execution role ``role``; None when it is no AWS or SDK error (``sdk``: the SDK was called, so
    an exception it raised (:func:`from_sdk`) is explained too)."""
    classes = _classes(exc)
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        error, operation = response["Error"], getattr(exc, "operation_name", None) or "an AWS call"
        line = f"{what}: {operation} failed ({error.get('Code')}): {_first_line(error.get('Message') or '')}"
        if error.get("Code") in ACCESS_DENIED:
            line += (
                f". Your AWS identity needs the permissions of {EXPERIMENTER_POLICY} (and the role those of "
                f"{EXECUTION_POLICY}); `exp doctor` checks them"
            )
        return line
    if "RoleValidationError" in classes:
        message = str(exc)
        missing = missing_permissions(message)
        if "trust policy does not allow" in message:
            problem = "its trust policy does not let sagemaker.amazonaws.com assume it"
            fix = f"give it the trust policy of {TRUST_POLICY}"
        else:
            problem = f"it lacks {', '.join(missing) if missing else 'permissions a training job needs'}"
            fix = f"attach {EXECUTION_POLICY} to it"
        return (
            f"{what}: the SageMaker SDK refused execution role {role or '(none given)'} (SAGEMAKER_ROLE_ARN): "
            f"{problem}. "
            f"Fix: {fix}, then run `exp doctor`. (The SDK simulates these permissions before every job; "
            "SAGEMAKER_VALIDATE_ROLE=false skips its check.)"
        )
    if classes & set(CONNECTION_ERRORS):
        where, reason = region or "your region", _first_line(str(exc))
        return f"{what}: cannot reach AWS in {where}: {reason}. `exp doctor` checks credentials and region"
    if not sdk or not from_sdk(exc):
        return None
    return (
        f"{what}: the SageMaker SDK failed with {type(exc).__name__}: {_first_line(str(exc)) or 'no message'} "
        f"(execution role {role or '(none given)'}). `exp doctor` checks the role, the image and the bucket"
    )

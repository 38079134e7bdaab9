"""Every AWS request the product sends, recorded and checked against botocore's own service model.

:class:`Recorder` hooks botocore's ``before-parameter-build`` event of every session created
while it is installed (boto3's, the SageMaker SDK's, and aiobotocore's under s3fs), so it sees
each operation's parameters as the caller gave them, before they are serialised.

:func:`check_request` walks the operation's input shape and reports what AWS would refuse and
what neither moto nor botocore's ``ParamValidator`` checks: string lengths (``min``/``max``),
``pattern`` regexes (AWS's Java regexes, matched whole, with ``\\p{...}`` classes: the ``regex``
module), enums, list and map sizes, numeric ranges; and what ``ParamValidator`` checks too
(required members, unknown members, types), so that one walk says all of it.
"""

from __future__ import annotations

import datetime
import io
import json
from dataclasses import dataclass, field
from typing import Any

import regex


@dataclass
class Call:
    service: str  # botocore's service name: "sagemaker", "s3", "iam"...
    operation: str  # "CreateTrainingJob"
    params: dict[str, Any]
    operation_model: Any = field(repr=False, compare=False, default=None)

    @property
    def action(self) -> str:
        """The IAM action of the call as written in a policy (``sagemaker:CreateTrainingJob``)."""
        return f"{IAM_PREFIX.get(self.service, self.service)}:{self.operation}"


# botocore service name -> IAM action prefix, where they differ
IAM_PREFIX = {"service-quotas": "servicequotas", "secretsmanager": "secretsmanager", "sts": "sts"}


def _copy(value: Any) -> Any:
    """A copy of the parameters as they are now (later handlers may change the originals);
    streams and other objects are kept as they are."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


class Recorder:
    """Records every AWS call of every botocore session created while installed."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def handler(self, params: dict, model: Any, **_: Any) -> None:
        self.calls.append(Call(model.service_model.service_name, model.name, _copy(params), model))

    def install(self, monkeypatch: Any) -> "Recorder":
        import boto3
        import botocore.session

        original = botocore.session.Session.__init__
        recorder = self

        def init(session: Any, *args: Any, **kwargs: Any) -> None:
            original(session, *args, **kwargs)
            session.register("before-parameter-build", recorder.handler)

        monkeypatch.setattr(botocore.session.Session, "__init__", init)
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # sessions made before: none of them is used again
        try:
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()
        except ImportError:  # pragma: no cover
            pass
        return self

    def operations(self) -> list[str]:
        return [f"{c.service}.{c.operation}" for c in self.calls]

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [c.params for c in self.calls if c.operation == operation]

    def problems(self) -> list[str]:
        """Every problem of every recorded call, as ``service.Operation: path: problem``."""
        return [f"{c.service}.{c.operation}: {p}" for c in self.calls for p in check_request(c.operation_model, c.params)]


def check_request(operation_model: Any, params: dict[str, Any]) -> list[str]:
    """What AWS would refuse in ``params`` for ``operation_model`` (empty: nothing)."""
    problems: list[str] = []
    shape = operation_model.input_shape
    if shape is None:
        if params:
            problems.append(f"takes no parameters, got {sorted(params)}")
        return problems
    _check(shape, params, operation_model.name, problems)
    return problems


def check_params(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """:func:`check_request` by names: ``check_params("sagemaker", "CreateTrainingJob", {...})``."""
    import botocore.session

    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    return check_request(model, params)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(shape: Any, value: Any, path: str, problems: list[str]) -> None:
    kind, meta = shape.type_name, shape.metadata
    low, high = meta.get("min"), meta.get("max")
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append(f"{path}: a structure ({shape.name}) expected, got {type(value).__name__}")
            return
        for name in shape.required_members:
            if name not in value:
                problems.append(f"{path}: required member {name} missing")
        for name, member_value in value.items():
            if name not in shape.members:
                problems.append(f"{path}: unknown member {name} (the model has: {', '.join(sorted(shape.members))})")
                continue
            _check(shape.members[name], member_value, f"{path}.{name}", problems)
        return
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path}: a list expected, got {type(value).__name__}")
            return
        _size(path, len(value), low, high, "items", problems)
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}[{i}]", problems)
        return
    if kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{path}: a map expected, got {type(value).__name__}")
            return
        _size(path, len(value), low, high, "entries", problems)
        for key, item in value.items():
            _check(shape.key, key, f"{path} key {key!r}", problems)
            _check(shape.value, item, f"{path}[{key!r}]", problems)
        return
    if kind == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: a string expected, got {type(value).__name__} {value!r}")
            return
        _size(path, len(value), low, high, "characters", problems)
        enum = getattr(shape, "enum", None) or []
        if enum and value not in enum:
            problems.append(f"{path}: {value!r} is not one of {', '.join(enum)}")
        pattern = meta.get("pattern")
        if pattern and regex.fullmatch(pattern, value) is None:
            problems.append(f"{path}: {_show(value)} does not match the pattern {pattern}")
        return
    if kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{path}: an integer expected, got {type(value).__name__} {value!r}")
            return
        _range(path, value, low, high, problems)
        return
    if kind in ("float", "double"):
        if not _number(value):
            problems.append(f"{path}: a number expected, got {type(value).__name__} {value!r}")
            return
        _range(path, value, low, high, problems)
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{path}: true/false expected, got {type(value).__name__} {value!r}")
        return
    if kind == "timestamp":
        if not isinstance(value, (datetime.datetime, datetime.date, str)) and not _number(value):
            problems.append(f"{path}: a timestamp expected, got {type(value).__name__}")
        return
    if kind == "blob":
        if isinstance(value, (bytes, bytearray, str)):
            _size(path, len(value), low, high, "bytes", problems)
        elif not (isinstance(value, io.IOBase) or hasattr(value, "read")):
            problems.append(f"{path}: bytes or a file expected, got {type(value).__name__}")
        return
    # document and other free-form shapes: anything JSON can hold
    try:
        json.dumps(value, default=str)
    except (TypeError, ValueError) as exc:  # pragma: no cover
        problems.append(f"{path}: {exc}")


def _show(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _size(path: str, size: int, low: Any, high: Any, unit: str, problems: list[str]) -> None:
    if low is not None and size < low:
        problems.append(f"{path}: {size} {unit}, fewer than the minimum {low}")
    if high is not None and size > high:
        problems.append(f"{path}: {size} {unit}, more than the maximum {high}")


def _range(path: str, value: float, low: Any, high: Any, problems: list[str]) -> None:
    if low is not None and value < low:
        problems.append(f"{path}: {value} is below the minimum {low}")
    if high is not None and value > high:
        problems.append(f"{path}: {value} is above the maximum {high}")


# --- IAM: does a policy allow an action -----------------------------------------------------------


def _as_list(value: Any) -> list:
    return [value] if isinstance(value, str) else list(value or [])


def policy_allows(policy: dict[str, Any], action: str) -> bool:
    """Whether an Allow statement of ``policy`` names ``action`` (wildcards as IAM reads them,
    case-insensitive); resources and conditions are not evaluated."""
    allowed = False
    for statement in _as_list(policy.get("Statement")):
        names = _as_list(statement.get("Action"))
        if any(regex.fullmatch(regex.escape(n).replace(r"\*", ".*").replace(r"\?", "."), action, flags=regex.I) for n in names):
            if statement.get("Effect") == "Deny":
                return False
            allowed = True
    return allowed


def aws_client(service: str):
    """A client from a fresh session: it reads this test's AWS environment (moto, us-east-1), not
    boto3's process-wide default session, which another test may have left in any state."""
    import os

    import boto3

    return boto3.session.Session(region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1").client(service)

"""Storage failures as messages a user can act on: what went wrong, where, and how to fix it.

botocore and fsspec errors (credentials, buckets, endpoints, permissions) become one
:class:`StoreError` whose message names STORAGE_URI and the fix, without their tracebacks.
"""

from __future__ import annotations

import errno as errnos
import os
import re
import shutil
from collections.abc import Iterator

from ml_exp.core.errors import UserError

UNREACHABLE = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionError",
    "ClientConnectorError",
    "ConnectionRefusedError",
    "TimeoutError",
    "FSTimeoutError",
}


class StoreError(UserError):
    """A storage problem the user can fix; the message says what and how."""


class RunExistsError(StoreError):
    """An explicitly requested run number is already taken."""


class StepAlreadyCompleted(StoreError):
    """Refusing to re-run (and overwrite the outputs of) a completed step."""


class DamagedRun(StoreError):
    """A run's record (its manifest) or a complete folder of it cannot be read as written."""


class MissingInput(StoreError):
    """A step's input (an earlier step's complete folder) is missing, incomplete or damaged."""


class LeaseHeld(StoreError):
    """Another live process is running this run (it holds the run's lease)."""


class OutputExistsError(StoreError, FileExistsError):
    """Refusing to overwrite an existing file or folder."""


class Conflict(Exception):
    """A conditional manifest update lost a race (retried by the store)."""


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def s3_code(exc: BaseException) -> tuple[str | None, int | None]:
    """(error code, HTTP status) of the first botocore ClientError in the chain."""
    for e in chain(exc):
        resp = getattr(e, "response", None)
        if isinstance(resp, dict) and "Error" in resp:
            return resp["Error"].get("Code"), resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None, None


def io_problem(exc: BaseException, near: str | None = None) -> str | None:
    """One line for an I/O failure anywhere in the chain (read-only, disk full...): the path and
    the errno, e.g. "I/O error on /data/x: No space left on device (ENOSPC)"; None otherwise.
    Rust-backed writers (safetensors, tokenizers) say only "(os error 28)" and no path: then
    ``near`` (the folder being written) stands for it."""
    for e in chain(exc):
        number, path = getattr(e, "errno", None), getattr(e, "filename", None)
        if not isinstance(e, OSError) or isinstance(e, FileNotFoundError):
            found = re.search(r"\(os error (\d+)\)", str(e))
            number, path = (int(found.group(1)), None) if found else (None, None)
        if number in errnos.errorcode and number != errnos.ENOENT:
            where = f"on {path}" if path else f"under {near}" if near else "on storage"
            return f"I/O error {where}: {os.strerror(number)} ({errnos.errorcode[number]})"
    return None


def credential_source(storage_options: dict) -> str:
    o, env = storage_options, os.environ
    if o.get("key") or o.get("secret"):
        return "storage_options (key/secret)"
    if o.get("profile") or env.get("AWS_PROFILE") and not env.get("AWS_ACCESS_KEY_ID"):
        return f"AWS profile {o.get('profile') or env['AWS_PROFILE']!r}"
    if env.get("AWS_ACCESS_KEY_ID"):
        return "the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
    return "the default AWS credential chain (~/.aws/credentials, SSO, instance or task role)"


def endpoint(storage_options: dict) -> str:
    o, env = storage_options, os.environ
    if o.get("endpoint_url") or o.get("client_kwargs", {}).get("endpoint_url"):
        return f"{o.get('endpoint_url') or o['client_kwargs']['endpoint_url']} (storage_options)"
    var = next((v for v in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") if env.get(v)), None)
    return f"{env[var]} (from {var})" if var else "the AWS S3 endpoint of your region"


def explain(exc: BaseException, action: str, url: str, storage_uri: str, storage_options: dict) -> StoreError:
    """The StoreError for ``exc``, raised while ``action`` ``url`` under ``storage_uri``."""
    is_s3 = storage_uri.startswith("s3://")
    bucket = storage_uri[len("s3://") :].split("/", 1)[0] if is_s3 else ""
    code, status = s3_code(exc)
    names, creds = {type(e).__name__ for e in chain(exc)}, f"the credentials from {credential_source(storage_options)}"
    if code == "NoSuchBucket":
        msg = (
            f"S3 bucket {bucket!r} does not exist at {endpoint(storage_options)}. Create it "
            f"(aws s3 mb s3://{bucket}) or fix the bucket name in STORAGE_URI."
        )
    elif code == "InvalidAccessKeyId":
        msg = (
            f"the AWS access key ID of {creds} is unknown to {endpoint(storage_options)}. "
            "Fix AWS_ACCESS_KEY_ID (or AWS_PROFILE)."
        )
    elif code == "SignatureDoesNotMatch":
        msg = (
            f"the AWS secret access key of {creds} does not match its key ID. "
            "Fix AWS_SECRET_ACCESS_KEY (or the profile)."
        )
    elif code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
        msg = f"{creds} are expired or invalid; refresh them (e.g. aws sso login)."
    elif code in ("AccessDenied", "403", "Forbidden") or status == 403:
        msg = (
            f"access denied for {creds}. They need s3:ListBucket, s3:GetObject, s3:PutObject and "
            f"s3:DeleteObject on s3://{bucket}; check the credentials and the bucket policy."
        )
    elif names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        msg = (
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
            "or run where an IAM role is available."
        )
    elif is_s3 and names & UNREACHABLE:
        msg = (
            f"cannot reach the S3 endpoint {endpoint(storage_options)}: check the network/VPN and the endpoint "
            "(AWS_ENDPOINT_URL or storage_options endpoint_url)."
        )
    elif code:
        msg = f"S3 error {code} (HTTP {status})."
    elif isinstance(exc, FileNotFoundError):
        msg = f"{exc.filename or 'it'} does not exist."
    elif isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        msg = "; ".join(str(e[-1]) for e in exc.args[0][:3])  # copytree's (src, dst, why) list
    elif isinstance(exc, PermissionError):
        msg = "permission denied: check the folder's owner and permissions, or choose another STORAGE_URI."
    else:
        errno_name = errnos.errorcode.get(getattr(exc, "errno", None) or 0)
        msg = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) + (
            f" ({errno_name})" if errno_name else ""
        )
    err = StoreError(f"Storage error while {action} {url} (STORAGE_URI={storage_uri}): {msg}")
    err.original = exc  # type: ignore[attr-defined]  # for debug logs; not chained into tracebacks
    return err

"""The pieces every check of ``exp doctor`` shares: a check's line, AWS errors in words, clients."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"
ECR_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[^:@]+)(?::(?P<tag>[\w.-]+)|@(?P<digest>sha256:[0-9a-f]{64}))$"
)


@dataclass(frozen=True)
class Check:
    """One line of ``exp doctor``: ``status`` is OK, FAIL, WARN (the check could not run) or SKIP."""

    name: str
    status: str
    message: str

    def __str__(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.message}"


Clients = Callable[[str], Any]


def error_code(exc: BaseException) -> str:
    return ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code") or type(exc).__name__


def why(exc: BaseException) -> str:
    error = (getattr(exc, "response", None) or {}).get("Error") or {}
    message = (error.get("Message") or str(exc)).splitlines()
    return f"{error_code(exc)}: {message[0] if message else ''}".rstrip(": ")


def denied(exc: BaseException) -> bool:
    return error_code(exc) in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403")


def clients_of(session: Any) -> Clients:
    """Clients of ``session`` that give up fast (a doctor must not hang on one check)."""
    from botocore.config import Config as BotoConfig

    settings = BotoConfig(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    made: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in made:
            made[service] = session.client(service, config=settings)
        return made[service]

    return client


def failed(checks: Iterable[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


def bucket_and_prefix(storage_uri: str) -> tuple[str, str]:
    bucket, _, prefix = storage_uri[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")

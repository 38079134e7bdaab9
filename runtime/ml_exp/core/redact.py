"""The one redaction: every value that leaves the process (the manifest, job and deploy specs,
dry-run output, wandb's config, a model bundle's serving.json, reports) goes through it.

Hidden: the value of any setting or variable whose name says it is a secret (token, key, secret,
password, header, cookie, credential...), and inside any text the credentials of a URL, with a
scheme (``https://user:pass@host``) or without (``user:pass@host``), a query string's secret
parameters (``?api_key=...&token=...``) and an ``Authorization`` scheme's value (``Bearer ...``).
Pure standard library, so that every layer can use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***redacted***"
# Names that look like a secret. AWS_ACCESS_KEY_ID matches too (KEY), as it should.
SECRET_NAME = re.compile(
    r"KEY|TOKEN|PASSWORD|PASSWD|PWD|SECRET|CREDENTIAL|AUTH|SESSION|HEADER|COOKIE|SIGNATURE", re.IGNORECASE
)
# Settings whose names say key/secret but whose values name one, and are needed as they are:
# KMS_KEY_ID (the id or ARN of a KMS key, sent to SageMaker), WANDB_API_KEY_SECRET (the *name* of
# the Secrets Manager secret holding the W&B key). Their values still go through redact_text.
NAMES_NOT_SECRETS = frozenset({"KMS_KEY_ID", "WANDB_API_KEY_SECRET"})

# user[:password]@ after a scheme (https://user:token@host/...): the credentials, not the URL
URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
# user:password@host without a scheme, at the start of a word; not an image's name:tag@sha256:digest
BARE_CREDENTIALS = re.compile(r"(?<![\w/.:@%+~-])[\w.%+~-]+:[^\s/@]+@(?!sha256:)(?=[\w\[])")
# a query string's (or form's) secret parameter: ?api_key=..., &token=..., &X-Amz-Signature=...
QUERY_SECRET = re.compile(
    r"(?P<name>(?:^|[?&;\s])[\w.-]*(?:key|token|secret|passw(?:or)?d|pwd|auth|signature|credential|session)"
    r"[\w.-]*=)(?P<value>[^&#\s\"']+)",
    re.IGNORECASE,
)
# an HTTP Authorization scheme's credentials, wherever they appear (a header's value in JSON...)
AUTH_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic|Token)(?P<space>\s+)[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """A variable's or setting's name (``HF_TOKEN``, upper case) that says it holds a secret. Not
    an API's or a spec's field (``KmsKeyId``, a tag's ``Key``, ``key_prefix``): those hold names."""
    if name != name.upper():
        return False
    return bool(SECRET_NAME.search(name)) and name.upper() not in NAMES_NOT_SECRETS


def redact_text(text: Any) -> Any:
    """``text`` with every credential in it replaced (anything not a string is returned as is)."""
    if not isinstance(text, str):
        return text
    text = URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = BARE_CREDENTIALS.sub(f"{REDACTED}@", text)
    text = QUERY_SECRET.sub(lambda m: f"{m['name']}{REDACTED}", text)
    return AUTH_SCHEME.sub(lambda m: f"{m['scheme']}{m['space']}{REDACTED}", text)


def redact_value(name: str, value: Any) -> Any:
    """A setting's or variable's value as it may leave the process."""
    if is_secret_name(str(name)) and value not in (None, ""):
        return REDACTED
    return redact(value)


def redact(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings...) as it may leave the process: each dict entry by
    its name (:func:`redact_value`), each string by its text (:func:`redact_text`)."""
    if isinstance(value, Mapping):
        return {key: redact_value(str(key), item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    return redact_text(value)

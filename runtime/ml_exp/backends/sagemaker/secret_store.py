"""Secrets for jobs and endpoints, through AWS Secrets Manager: never in a request.

A job's ``Environment``, hyper-parameters and tags can be read by anyone allowed to describe
it (``sagemaker:DescribeTrainingJob``), and the run saves its specification. So a secret
travels by name: the setting ``WANDB_API_KEY_SECRET`` names a Secrets Manager secret (its name
or ARN), the job's environment carries that name, and the container reads the value at start,
before wandb starts (:func:`load_secrets`), with the job's execution role
(``secretsmanager:GetSecretValue`` on that secret; ``docs/aws/execution-role-policy.json``).

The secret's value is the key itself, or JSON with a ``WANDB_API_KEY`` member (what the console's
"key/value" secrets store).
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from typing import Any

from ml_exp.core.errors import UserError

# setting -> the environment variable its secret's value becomes in the container
SECRET_SETTINGS = {"WANDB_API_KEY_SECRET": "WANDB_API_KEY"}


class SecretError(UserError):
    """The secret cannot be read; the message names the setting, the secret and the fix."""


def secret_value(secret_id: str, region: str | None, key: str, setting: str, client: Any = None) -> str:
    """The value of secret ``secret_id`` (the ``key`` member when it holds JSON)."""
    if client is None:
        import boto3

        client = boto3.Session(region_name=region).client("secretsmanager")
    try:
        response = client.get_secret_value(SecretId=secret_id)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line naming the fix
        error = (getattr(exc, "response", None) or {}).get("Error", {})
        code = error.get("Code") or type(exc).__name__
        hint = {
            "ResourceNotFoundException": f"create it: aws secretsmanager create-secret --name {secret_id} "
            "--secret-string <key>",
            "AccessDeniedException": "grant the execution role secretsmanager:GetSecretValue on it "
            "(docs/aws/execution-role-policy.json)",
        }.get(code, "check the secret's name and region")
        raise SecretError(
            f"{setting}: cannot read secret {secret_id} ({code}: {error.get('Message') or exc}); {hint}"
        ) from None
    text = response.get("SecretString")
    if text is None:
        raise SecretError(f"{setting}: secret {secret_id} holds binary data; store the key as a string")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        if key not in parsed:
            raise SecretError(
                f"{setting}: secret {secret_id} is JSON without a {key} member; add one, or store the key alone"
            )
        text = str(parsed[key])
    if not text.strip():
        raise SecretError(f"{setting}: secret {secret_id} is empty; put the key in it")
    return text.strip()


def load_secrets(environ: MutableMapping[str, str] | None = None, client: Any = None) -> list[str]:
    """In a job's or an endpoint's container, at start: for each secret setting in the
    environment, its secret's value into the variable it stands for (unless that is set).
    Returns the variables set. SecretError when a named secret cannot be read."""
    env = os.environ if environ is None else environ
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    done = []
    for setting, variable in SECRET_SETTINGS.items():
        secret_id = env.get(setting, "").strip()
        if secret_id and not env.get(variable):
            env[variable] = secret_value(secret_id, region, variable, setting, client)
            done.append(variable)
    return done

"""The one redaction (ml_exp.core.redact): what it hides, what it leaves, and a run with secrets
planted in every setting that can hold one and in environment variables of every recorded kind,
whose every written byte is scanned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml_exp.core.redact import REDACTED, redact, redact_text
from tests.bake import bake

EXP = str(Path(sys.executable).with_name("exp"))
S = "PLANTED0xdeadbeef"


@pytest.mark.parametrize(
    "text, hidden",
    [
        (f"https://user:{S}@registry.example.com/repo:tag", f"https://{REDACTED}@registry.example.com/repo:tag"),
        (f"user:{S}@registry.example.com/repo:tag", f"{REDACTED}@registry.example.com/repo:tag"),
        (f"pull from user:{S}@host.example then", f"pull from {REDACTED}@host.example then"),
        (f"s3://bucket/p?api_key={S}&x=1", f"s3://bucket/p?api_key={REDACTED}&x=1"),
        (f"https://h.example/x?a=1&token={S}", f"https://h.example/x?a=1&token={REDACTED}"),
        (f"https://h.example/x?X-Amz-Signature={S}", f"https://h.example/x?X-Amz-Signature={REDACTED}"),
        (f'{{"Authorization": "Bearer {S}"}}', f'{{"Authorization": "Bearer {REDACTED}"}}'),
    ],
)
def test_credentials_in_text_are_hidden(text, hidden):
    assert redact_text(text) == hidden and S not in redact_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:tag",
        "registry.example.com/repo:1.0@sha256:" + "a" * 64,
        "repo:1.0@sha256:" + "b" * 64,
        "git@github.com:org/repo.git",
        "arn:aws:iam::123456789012:role/SageMakerRole",
        "s3://bucket/prefix?versionId=3",
        "file:///tmp/store",
    ],
)
def test_what_holds_no_credential_is_left_as_it_is(text):
    assert redact_text(text) == text


def test_names_that_say_secret_are_hidden_but_not_an_apis_fields():
    tree = {
        "environment": {"HF_TOKEN": S, "WANDB__EXTRA_HTTP_HEADERS": S, "ML_EXP_DB_PASSWORD": S},
        "settings": {"KMS_KEY_ID": "arn:aws:kms:us-east-1:1:key/k", "WANDB_API_KEY_SECRET": "ml-exp/wandb"},
        "Tags": [{"Key": "ml-exp:run", "Value": "1"}],
        "KmsKeyId": "arn:aws:kms:us-east-1:1:key/k",
        "staging": {"key_prefix": "runs/EXP-1/run_1/jobs"},
        "Image": f"u:{S}@registry.example.com/r:t",
    }
    out = redact(tree)
    assert S not in json.dumps(out)
    assert set(out["environment"].values()) == {REDACTED}
    assert out["settings"] == tree["settings"] and out["Tags"] == tree["Tags"] and out["KmsKeyId"] == tree["KmsKeyId"]
    assert out["staging"] == tree["staging"]


# Settings that can hold a URL (and so a credential), and variables of every prefix the manifest
# records, with a secret in each way a user puts one.
PLANTED_SETTINGS = {
    "IMAGE_URI": f"https://plantuser:{S}1@registry.example.com/repo:tag",
    "SERVING_IMAGE_URI": f"plantuser:{S}2@registry.example.com/serve:1",
    "WANDB_API_KEY_SECRET": f"plantuser:{S}3@secrets.example",
}
PLANTED_ENV = {
    "WANDB_API_KEY": f"{S}4",
    "WANDB__EXTRA_HTTP_HEADERS": json.dumps({"X-Api-Key": f"{S}5", "Authorization": f"Bearer {S}6"}),
    "HF_TOKEN": f"{S}7",
    "AWS_SECRET_ACCESS_KEY": f"{S}8",
    "AWS_SESSION_TOKEN": f"{S}9",
    "ML_EXP_DB_PASSWORD": f"{S}10",
    "ML_EXP_MIRROR": f"http://mirroruser:{S}11@mirror.example/simple",
    "SM_FEED": f"https://feed.example/x?api_key={S}12&token={S}13",
    "TRANSFORMERS_PLANTED": f"mirroruser:{S}14@host.example",
    "ACCELERATE_PLANTED_SECRET": f"{S}15",
}


def scan(folder: Path) -> list[str]:
    """Files under ``folder`` holding the planted secret (any part of it)."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and S.encode() in p.read_bytes()]


def test_a_run_writes_no_planted_secret_and_resumes_with_them(tmp_path):
    project = bake(tmp_path, ticket="EXP-230", model_slug="planted")
    env = {**os.environ, **PLANTED_SETTINGS, **PLANTED_ENV, "WANDB_MODE": "offline"}
    done = subprocess.run(
        [EXP, "run", "--steps", "reconciliation"], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert S not in done.stdout + done.stderr and scan(project) == []
    manifest = json.loads((project / ".exp-store" / "EXP-230-planted" / "run_1" / "manifest.json").read_text())
    assert manifest["settings"]["IMAGE_URI"] == f"https://{REDACTED}@registry.example.com/repo:tag"
    assert manifest["environment"]["WANDB__EXTRA_HTTP_HEADERS"] == REDACTED

    # continuing the run with the same secrets is no change of settings; the run goes on with them
    from ml_exp.config import load_config
    from ml_exp.pipeline.runner import resumed_config
    from ml_exp.storage.store import Store

    current = load_config(project, environ={**PLANTED_SETTINGS})
    config, _, changed = resumed_config(Store.for_config(current).open_run(1), current, smoke=False, accept=False)
    assert changed == {} and config.raw["IMAGE_URI"] == PLANTED_SETTINGS["IMAGE_URI"]


@pytest.mark.slow  # every step for real (a smoke run), wandb offline writing its files
def test_a_whole_run_with_wandb_and_a_model_bundle_write_no_planted_secret(tmp_path):
    from ml_exp.config import load_config
    from ml_exp.serving.bundle import archive, from_run
    from ml_exp.storage.store import Store

    project = bake(tmp_path, ticket="EXP-231", model_slug="planted")
    env = {**os.environ, **PLANTED_SETTINGS, **PLANTED_ENV, "WANDB_MODE": "offline", "TQDM_DISABLE": "1"}
    done = subprocess.run([EXP, "run", "--smoke", "-q"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WANDB offline" not in done.stdout + done.stderr  # -q: not even transformers' offline notice
    assert list(project.glob("wandb/*/files"))  # wandb wrote its offline run, scanned below
    # a model bundle (model.tar.gz, its serving.json and code/settings.ini with a credential in a URL)
    with open(project / "settings.ini", "a") as f:
        f.write(f"\n# mirror: https://mirroruser:{S}16@mirror.example/simple\n")
    config = load_config(project, environ=PLANTED_SETTINGS)
    run = Store.for_config(config).open_run(1)
    bundle = from_run(run, None, tmp_path / "scratch")
    archive(run, bundle, project)
    (project / "settings.ini").write_text((project / "settings.ini").read_text().replace(S, "x"))
    import tarfile

    packed = next(project.glob(".exp-store/*/run_1/serving/*/model.tar.gz"))
    with tarfile.open(packed) as tar:
        inside = [m.name for m in tar.getmembers() if m.isfile() and S.encode() in tar.extractfile(m).read()]
    assert inside == [] and S not in done.stdout + done.stderr and scan(project) == []

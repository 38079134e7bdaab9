"""Run storage for ml-exp: ``<STORAGE_URI>/<EXPERIMENT_NAME>/run_<N>/`` on file:// or s3:// (fsspec).

What a run folder holds is :mod:`ml_exp.storage.layout`'s business; how it is written is this module's.
Nothing is ever overwritten unless asked for, and readers never see half-written data:

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
fix it, without botocore tracebacks (:mod:`ml_exp.storage.errors`). fsspec/s3fs are imported
lazily (cheap import).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from typing import Any, Callable, Iterator

from ml_exp.storage.layout import MANIFEST, RUN_DIR_RE, run_dir
from ml_exp.storage.run import Run, now
from ml_exp.storage.errors import Conflict, OutputExistsError, RunExistsError, StepAlreadyCompleted, StoreError, explain, s3_code

__all__ = ["Conflict", "OutputExistsError", "Run", "RunExistsError", "StepAlreadyCompleted", "Store", "StoreError", "now"]

# botocore config: normal use (3 tries, not botocore's legacy 5) and check_access (fail in seconds)
_DEFAULT_S3 = {"retries": {"max_attempts": 3, "mode": "standard"}}
_QUICK_S3 = {"connect_timeout": 3, "read_timeout": 5, "retries": {"max_attempts": 2, "mode": "standard"}}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
        with self.errors("connecting to", self.root):
            fs = fsspec.filesystem("s3", **opts)
        if quick:
            fs.retries = 2
        return fs

    def local_path(self, url: str) -> str:
        return url[len("file://"):]

    @contextlib.contextmanager
    def errors(self, action: str, url: str) -> Iterator[None]:
        try:
            yield
        except (StoreError, Conflict):
            raise
        except Exception as e:  # noqa: BLE001 - becomes a user-facing message
            raise explain(e, action, url, self.storage_uri, self.storage_options) from None

    def put(self, url: str, data: bytes, overwrite: bool, fs: Any = None, if_match: str | None = None) -> None:
        """Atomic put; OutputExistsError if ``url`` exists and not ``overwrite``; Conflict if If-Match fails."""
        exists = OutputExistsError(f"{url} already exists; refusing to overwrite it (run outputs are never "
                                   "overwritten). Start a new run, or pass overwrite=True.")
        if self.is_s3:
            bucket, _, key = url[len("s3://"):].partition("/")
            cond = {"IfMatch": if_match} if if_match else {} if overwrite else {"IfNoneMatch": "*"}
            try:
                (fs or self.fs).call_s3("put_object", Bucket=bucket, Key=key, Body=data, **cond)
            except Exception as e:
                if cond and (s3_code(e)[0] == "PreconditionFailed" or s3_code(e)[1] == 412):
                    raise (Conflict() if if_match else exists) from None
                raise
            return
        path = self.local_path(url)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        for attempt in range(3):  # a concurrent check_access may remove an empty parent it created
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                f = open(tmp, "wb")
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        try:
            with f:
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
        # file://: the folders the probe needed go again, so a check (or `exp run --run 999`) leaves nothing
        created, folder = [], os.path.dirname(self.local_path(url)) if not self.is_s3 else ""
        while folder and not os.path.exists(folder):
            created.append(folder)
            folder = os.path.dirname(folder)
        try:
            with self.errors("writing a probe object under", self.root):
                self.put(url, data, overwrite=True, fs=fs)
            with self.errors("reading back the probe object", url):
                back = fs.cat_file(url)
            with self.errors("deleting the probe object", url):
                fs.rm_file(url)
        finally:
            for folder in created:  # deepest first; one a concurrent run has filled stays
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        if back != data:
            raise StoreError(f"Storage error: the probe object {url} read back differently from what was written.")

    def run_numbers(self) -> list[int]:
        """Sorted numbers of the claimed runs (those whose manifest exists)."""
        with self.errors("listing runs in", self.root):
            try:
                names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
            except FileNotFoundError as e:
                if s3_code(e)[0] == "NoSuchBucket":
                    raise
                return []
            nums = sorted(int(m.group(1)) for m in map(RUN_DIR_RE.match, names) if m)
            if not nums:
                return []
            found = self.fs.cat([f"{self.root}/{run_dir(n)}/{MANIFEST}" for n in nums], on_error="return")
            for v in found.values():
                if isinstance(v, Exception) and not isinstance(v, FileNotFoundError):
                    raise v
        present = {k.rstrip("/").split("/")[-2] for k, v in found.items() if not isinstance(v, Exception)}
        return [n for n in nums if run_dir(n) in present]

    def run_exists(self, run_num: int) -> bool:
        with self.errors("checking", f"{self.root}/{run_dir(run_num)}"):
            return bool(self.fs.exists(f"{self.root}/{run_dir(run_num)}/{MANIFEST}"))

    def claim_run(self, run_num: int | None, manifest: dict | Callable[[int], dict]) -> Run:
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

    def _claim(self, n: int, manifest: dict | Callable[[int], dict]) -> Run:
        run, token = Run(self, n), uuid.uuid4().hex
        body = {"experiment": self.experiment_name, **(manifest(n) if callable(manifest) else manifest),
                "run": n, "claimed_at": now(), "claim_token": token}
        try:
            run.write_json(MANIFEST, body)
        except OutputExistsError:
            if self.is_s3 and run.read_manifest().get("claim_token") == token:
                return run  # our put succeeded, its response was lost and the retry got 412
            raise
        return run

    def open_run(self, run_num: int) -> Run:
        if not self.run_exists(run_num):
            raise StoreError(f"run_{run_num} does not exist in {self.root} (existing runs: {self.run_numbers()}).")
        return Run(self, run_num)

    def runs(self) -> list[Run]:
        return [Run(self, n) for n in self.run_numbers()]

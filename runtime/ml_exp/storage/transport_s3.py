"""s3://: the :class:`~ml_exp.storage.transport.Transport` contract on S3 (or an S3-compatible
endpoint) through fsspec/s3fs, imported on first use so that importing this module stays cheap."""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable
from typing import IO, Any

from ml_exp.storage.errors import Conflict, StoreError, s3_code
from ml_exp.storage.layout import COMPLETE
from ml_exp.storage.transport import Transport, document_bytes, exists_error

# botocore config: normal use (3 tries, not botocore's legacy 5) and check_access (fail in seconds)
_DEFAULT_S3 = {"retries": {"max_attempts": 3, "mode": "standard"}}
_QUICK_S3 = {"connect_timeout": 3, "read_timeout": 5, "retries": {"max_attempts": 2, "mode": "standard"}}


class S3Transport(Transport):
    """s3://: S3 (or an S3-compatible endpoint) through s3fs, without instance or listing caches."""

    scheme, is_remote = "s3", True

    def __init__(self, storage_uri: str, storage_options: dict | None = None):
        super().__init__(storage_uri, storage_options)
        self.bucket = storage_uri[len("s3://") :].split("/", 1)[0]
        self._fs: Any = None

    def _filesystem(self, quick: bool = False) -> Any:
        """The s3fs filesystem (made on first use); ``quick``: a new one with short timeouts."""
        if self._fs is not None and not quick:
            return self._fs
        import fsspec

        opts = {"skip_instance_cache": True, "use_listings_cache": False, **self.storage_options}
        opts["config_kwargs"] = {**(_QUICK_S3 if quick else _DEFAULT_S3), **opts.get("config_kwargs", {})}
        with self.errors("connecting to", self.storage_uri):
            fs = fsspec.filesystem("s3", **opts)
        if quick:
            fs.retries = 2
        else:
            self._fs = fs
        return fs

    @staticmethod
    def _key_path(url: str) -> str:
        """``bucket/key``: how s3fs names an object in what it returns (computed here, as fsspec's
        own ``_strip_protocol`` is private)."""
        return url[len("s3://") :].rstrip("/")

    def put(self, url: str, data: bytes, overwrite: bool = False) -> None:
        with self.errors("writing", url):
            self._put(url, data, overwrite)

    def _put(self, url: str, data: bytes, overwrite: bool, fs: Any = None, if_match: str | None = None) -> None:
        bucket, _, key = url[len("s3://") :].partition("/")
        cond = {"IfMatch": if_match} if if_match else {} if overwrite else {"IfNoneMatch": "*"}
        try:
            (fs or self._filesystem()).call_s3("put_object", Bucket=bucket, Key=key, Body=data, **cond)
        except Exception as e:
            if cond and (s3_code(e)[0] == "PreconditionFailed" or s3_code(e)[1] == 412):
                raise (Conflict() if if_match else exists_error(url)) from None
            raise

    def update_json(self, url: str, fn: Callable[[Any], Any], parse: Callable[[bytes], Any] = json.loads) -> Any:
        fs = self._filesystem()
        for attempt in range(50):
            with self.errors("reading", url):
                etag = fs.info(url)["ETag"]  # read after the ETag: a newer body just fails If-Match
                doc = parse(fs.cat_file(url))
            doc = doc if (new := fn(doc)) is None else new
            try:
                with self.errors("updating", url):
                    self._put(url, document_bytes(doc), True, if_match=etag)
                return doc
            except Conflict:
                time.sleep(random.uniform(0.01, 0.02 * (attempt + 1)))
        raise StoreError(f"could not update {url}: too many concurrent updates.")

    def put_dir(self, local_dir: str, url: str, marker: bytes, move: bool = False) -> None:  # noqa: ARG002 - always uploads
        files = [
            (os.path.join(d, f), os.path.relpath(os.path.join(d, f), local_dir).replace(os.sep, "/"))
            for d, _, names in os.walk(local_dir)
            for f in names
        ]
        files = [(lp, rp) for lp, rp in files if rp != COMPLETE]
        with self.errors("uploading a folder to", url):
            fs = self._filesystem()
            if fs.exists(url):  # clear leftovers of an interrupted upload (or overwrite), marker first
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(f"{url}/{COMPLETE}")
                fs.rm(url, recursive=True)
            if files:
                fs.put([lp for lp, _ in files], [f"{url}/{rp}" for _, rp in files])
            self.put(f"{url}/{COMPLETE}", marker, overwrite=True)

    def get_dir(self, url: str, local_dir: str) -> None:
        remote = [rp for rp in self.files(url) if rp != COMPLETE]
        local = [os.path.join(local_dir, *rp.split("/")) for rp in remote]
        with self.errors("downloading", url):
            for lp in local:
                os.makedirs(os.path.dirname(lp), exist_ok=True)
            if remote:
                self._filesystem().get([f"{url}/{rp}" for rp in remote], local)

    def read(self, url: str) -> bytes:
        with self.errors("reading", url):
            return self._filesystem().cat_file(url)

    def open(self, url: str) -> IO[bytes]:
        with self.errors("reading", url):
            return self._filesystem().open(url, "rb")

    def exists(self, url: str) -> bool:
        with self.errors("checking", url):
            return bool(self._filesystem().exists(url))

    def existing(self, urls: list[str]) -> set[str]:
        if not urls:
            return set()
        with self.errors("checking", urls[0].rsplit("/", 1)[0]):
            found = self._filesystem().cat(urls, on_error="return")  # one batch of requests
            for v in found.values():
                if isinstance(v, Exception) and not isinstance(v, FileNotFoundError):
                    raise v
        present = {k.rstrip("/") for k, v in found.items() if not isinstance(v, Exception)}
        return {url for url in urls if self._key_path(url) in present}

    def listdir(self, url: str) -> list[str]:
        with self.errors("listing", url):
            try:
                entries = self._filesystem().ls(url, detail=False)
            except FileNotFoundError as e:
                if s3_code(e)[0] == "NoSuchBucket":
                    raise
                return []
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries} - {""})

    def files(self, url: str) -> list[str]:
        base = self._key_path(url) + "/"
        with self.errors("listing", url):
            found = self._filesystem().find(url)
        # "key/" objects are folder markers some tools write, not files
        return sorted(k[len(base) :] for k in found if k.startswith(base) and not k.endswith("/"))

    def delete(self, url: str) -> None:
        with self.errors("deleting", url):
            self._filesystem().rm_file(url)

    def check_access(self, folder: str) -> None:
        fs, (url, data) = self._filesystem(quick=True), self._probe(folder)
        with self.errors("writing a probe object under", folder):
            self._put(url, data, overwrite=True, fs=fs)
        with self.errors("reading back the probe object", url):
            back = fs.cat_file(url)
        with self.errors("deleting the probe object", url):
            fs.rm_file(url)
        self._check_probe(url, data, back)

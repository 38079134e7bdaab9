"""file://: the :class:`~ml_exp.storage.transport.Transport` contract on the local file system."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable
from typing import IO, Any

from ml_exp.storage.layout import COMPLETE
from ml_exp.storage.transport import Transport, document_bytes, exists_error


class FileTransport(Transport):
    """file://: the local file system, through the standard library."""

    scheme, is_remote = "file", False

    def local_path(self, url: str) -> str:
        return url[len("file://") :]

    def put(self, url: str, data: bytes, overwrite: bool = False) -> None:
        with self.errors("writing", url):
            self._put(url, data, overwrite)

    def _put(self, url: str, data: bytes, overwrite: bool) -> None:
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
                    raise exists_error(url) from None
                except OSError:  # a filesystem without hard links: best effort
                    if os.path.lexists(path):
                        raise exists_error(url) from None
                    os.rename(tmp, path)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def update_json(self, url: str, fn: Callable[[Any], Any], parse: Callable[[bytes], Any] = json.loads) -> Any:
        import fcntl

        path = self.local_path(url)
        # the lock is a sibling file (manifest.json -> .manifest.lock): the document itself is replaced
        lock_path = os.path.join(os.path.dirname(path), f".{os.path.splitext(os.path.basename(path))[0]}.lock")
        with self.errors("locking", url):
            lock = open(lock_path, "a")
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = parse(self.read(url))
            doc = doc if (new := fn(doc)) is None else new
            self.put(url, document_bytes(doc), overwrite=True)
            return doc

    def put_dir(self, local_dir: str, url: str, marker: bytes, move: bool = False) -> None:
        dest = self.local_path(url)
        parent, base, tag = os.path.dirname(dest), os.path.basename(dest), uuid.uuid4().hex
        tmp, old = os.path.join(parent, f".{base}.tmp-{tag}"), os.path.join(parent, f".{base}.old-{tag}")
        with self.errors("uploading a folder to", url):
            os.makedirs(parent, exist_ok=True)
            try:
                if not (move and _renamed(local_dir, tmp)):
                    shutil.copytree(local_dir, tmp, ignore=shutil.ignore_patterns(COMPLETE))
                with open(os.path.join(tmp, COMPLETE), "wb") as f:
                    f.write(marker)
                if os.path.lexists(dest):
                    os.rename(dest, old)
                os.rename(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.rmtree(old, ignore_errors=True)

    def get_dir(self, url: str, local_dir: str) -> None:
        with self.errors("downloading", url):
            ignore = shutil.ignore_patterns(COMPLETE)
            shutil.copytree(self.local_path(url), local_dir, dirs_exist_ok=True, ignore=ignore)

    def read(self, url: str) -> bytes:
        with self.errors("reading", url), open(self.local_path(url), "rb") as f:
            return f.read()

    def open(self, url: str) -> IO[bytes]:
        with self.errors("reading", url):
            return open(self.local_path(url), "rb")

    def exists(self, url: str) -> bool:
        return os.path.exists(self.local_path(url))

    def existing(self, urls: list[str]) -> set[str]:
        return {url for url in urls if self.exists(url)}

    def listdir(self, url: str) -> list[str]:
        with self.errors("listing", url):
            try:
                return sorted(os.listdir(self.local_path(url)))
            except FileNotFoundError:
                return []

    def files(self, url: str) -> list[str]:
        base = self.local_path(url)
        with self.errors("listing", url):
            return sorted(
                os.path.relpath(os.path.join(d, f), base).replace(os.sep, "/")
                for d, _, names in os.walk(base)
                for f in names
            )

    def delete(self, url: str) -> None:
        with self.errors("deleting", url):
            os.remove(self.local_path(url))

    def check_access(self, folder: str) -> None:
        url, data = self._probe(folder)
        # the folders the probe needed go again, so a check (or `exp run --run 999`) leaves nothing
        created, parent = [], os.path.dirname(self.local_path(url))
        while parent and not os.path.exists(parent):
            created.append(parent)
            parent = os.path.dirname(parent)
        try:
            with self.errors("writing a probe object under", folder):
                self._put(url, data, overwrite=True)
            with self.errors("reading back the probe object", url), open(self.local_path(url), "rb") as f:
                back = f.read()
            with self.errors("deleting the probe object", url):
                os.remove(self.local_path(url))
        finally:
            for parent in created:  # deepest first; one a concurrent run has filled stays
                with contextlib.suppress(OSError):
                    os.rmdir(parent)
        self._check_probe(url, data, back)


def _renamed(local_dir: str, tmp: str) -> bool:
    """``local_dir`` renamed to ``tmp`` (and made again, empty, for its owner to remove); False
    when they are on different file systems (the caller copies instead)."""
    try:
        os.rename(local_dir, tmp)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return False
        raise
    os.makedirs(local_dir, exist_ok=True)
    return True

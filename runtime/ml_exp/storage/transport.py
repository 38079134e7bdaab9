"""How bytes reach the storage of runs, written once: the :class:`Transport` contract. Its two
implementations are :mod:`ml_exp.storage.transport_file` (file://) and
:mod:`ml_exp.storage.transport_s3` (s3://); :func:`ml_exp.storage.store.transport_for` picks one from
STORAGE_URI. A run and the store of runs work through the contract only, never knowing which.
"""

from __future__ import annotations

import abc
import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any

from ml_exp.storage.errors import Conflict, OutputExistsError, StoreError, explain


def document_bytes(doc: Any) -> bytes:
    """How a JSON document is stored (the manifest, any ``write_json``): indented, one trailing newline."""
    return (json.dumps(doc, indent=2, default=str) + "\n").encode()


def exists_error(url: str) -> OutputExistsError:
    """What an exclusive put (or folder) that finds ``url`` taken raises."""
    return OutputExistsError(
        f"{url} already exists; refusing to overwrite it (run outputs are never "
        "overwritten). Start a new run, or pass overwrite=True."
    )


class Transport(abc.ABC):
    """The files of one storage, ``storage_uri`` (``file:///abs/folder`` or ``s3://bucket/prefix``).

    Every URL a method takes is absolute and under :attr:`storage_uri`. What each method guarantees,
    on either storage:

    * :meth:`put` writes a file **atomically**: a reader sees the old content or the new one, never
      part of either. Unless ``overwrite``, the put is an **exclusive create**: of two concurrent
      puts of one URL exactly one wins, the other gets OutputExistsError (file://: a complete
      temporary sibling published with ``os.link``, EEXIST if taken; s3://: ``PutObject`` with
      ``If-None-Match: *``, which AWS S3 honours since 2024 and SeaweedFS 4.48 too: 16 concurrent
      puts of one key, 5 times, gave one winner each). ``overwrite`` replaces atomically
      (file://: ``os.replace``; s3://: a PUT is atomic).
    * :meth:`update_json` is a **compare-and-swap** of a JSON document: ``fn`` edits the document
      as read, and the result is written only if nobody wrote in between; otherwise it is read
      again and ``fn`` runs again. Concurrent updaters lose nothing (s3://: PUT ``If-Match: <ETag
      read>``, retried on 412; file://: the read-modify-write under ``flock``).
    * :meth:`put_dir` writes a **complete folder**: it counts once its ``_COMPLETE`` marker (the
      ``marker`` bytes) exists, and the marker is written last (file://: a copy into a temporary
      sibling, marker included, renamed into place, or with ``move`` the folder itself renamed
      there; s3://: leftovers removed marker first, the objects uploaded, then the marker).
      :meth:`get_dir` downloads a folder's files, marker excepted.
    * :meth:`read`, :meth:`open` (a binary reader), :meth:`exists`, :meth:`existing` (which of many
      URLs exist, in one batch), :meth:`listdir` (entry names, [] for a missing folder), :meth:`files`
      (every file under a folder, relative to it), :meth:`delete` (one file).
    * :meth:`local_path`: the path of a URL on this machine when the storage has one (file://),
      else None; :attr:`is_remote` says which.
    * :meth:`check_access` writes, reads back and deletes a probe, failing in seconds, leaving nothing.
    * **Every failure** a user can cause becomes a :class:`~ml_exp.storage.errors.StoreError` whose
      message says what and how to fix it (:meth:`errors`), without botocore tracebacks.
    """

    scheme: str
    is_remote: bool

    def __init__(self, storage_uri: str, storage_options: dict | None = None):
        self.storage_uri, self.storage_options = storage_uri, dict(storage_options or {})
        self.bucket = ""  # the S3 bucket; "" on file://

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.storage_uri!r})"

    @contextlib.contextmanager
    def errors(self, action: str, url: str) -> Iterator[None]:
        """Turn any failure inside into the StoreError for ``action`` ``url`` (e.g. "reading", a URL)."""
        try:
            yield
        except (StoreError, Conflict):
            raise
        except Exception as e:  # noqa: BLE001 - becomes a user-facing message
            raise explain(e, action, url, self.storage_uri, self.storage_options) from None

    def local_path(self, url: str) -> str | None:
        return None

    @abc.abstractmethod
    def put(self, url: str, data: bytes, overwrite: bool = False) -> None: ...

    @abc.abstractmethod
    def update_json(self, url: str, fn: Callable[[Any], Any], parse: Callable[[bytes], Any] = json.loads) -> Any:
        """``fn`` edits the document in place or returns a new one; returns the document written.
        ``parse`` reads the stored bytes (and may refuse them)."""

    @abc.abstractmethod
    def put_dir(self, local_dir: str, url: str, marker: bytes, move: bool = False) -> None:
        """``move``: the caller gives ``local_dir``'s files up (it is left empty, or as it was):
        a local storage on the same file system then renames them into place instead of copying."""

    @abc.abstractmethod
    def get_dir(self, url: str, local_dir: str) -> None: ...

    @abc.abstractmethod
    def read(self, url: str) -> bytes: ...

    @abc.abstractmethod
    def open(self, url: str) -> IO[bytes]: ...

    @abc.abstractmethod
    def exists(self, url: str) -> bool: ...

    @abc.abstractmethod
    def existing(self, urls: list[str]) -> set[str]: ...

    @abc.abstractmethod
    def listdir(self, url: str) -> list[str]: ...

    @abc.abstractmethod
    def files(self, url: str) -> list[str]: ...

    @abc.abstractmethod
    def delete(self, url: str) -> None: ...

    @abc.abstractmethod
    def check_access(self, folder: str) -> None: ...

    @staticmethod
    def _probe(folder: str) -> tuple[str, bytes]:
        return f"{folder}/.ml-exp-access-probe-{uuid.uuid4().hex}", b"ml-exp access probe\n"

    @staticmethod
    def _check_probe(url: str, data: bytes, back: bytes) -> None:
        if back != data:
            raise StoreError(f"Storage error: the probe object {url} read back differently from what was written.")

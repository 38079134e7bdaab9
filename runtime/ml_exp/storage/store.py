"""The store of runs of one experiment: ``<STORAGE_URI>/<EXPERIMENT_NAME>/run_<N>/``, on file:// or
s3:// (:func:`transport_for` picks the :class:`~ml_exp.storage.transport.Transport`, which says how
each file and folder is written safely). What a run folder holds is :mod:`ml_exp.storage.layout`'s
business; a run's files and manifest are :class:`~ml_exp.storage.run.Run`'s.

**Run claim.** The claim object *is* ``run_<N>/manifest.json``, created exclusively (the
transport's exclusive put), so a run exists iff its manifest does and the manifest is complete
when it appears. A loser tries N+1; listing only picks where to start, so no list-and-compare
scheme is needed. The manifest's random ``claim_token`` recognises our own put when its response
was lost and a retry found the manifest taken.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from ml_exp.storage.errors import Conflict, OutputExistsError, RunExistsError, StepAlreadyCompleted, StoreError
from ml_exp.storage.layout import MANIFEST, RUN_DIR_RE, run_dir
from ml_exp.storage.run import Run, now
from ml_exp.storage.transport import Transport
from ml_exp.storage.transport_file import FileTransport
from ml_exp.storage.transport_s3 import S3Transport

if TYPE_CHECKING:
    from ml_exp.config import Config

__all__ = [
    "Conflict",
    "OutputExistsError",
    "Run",
    "RunExistsError",
    "StepAlreadyCompleted",
    "Store",
    "StoreError",
    "now",
    "transport_for",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Store:
    """All runs of one experiment: ``<storage_uri>/<experiment_name>/run_<N>/``."""

    def __init__(self, storage_uri: str, experiment_name: str, storage_options: dict | None = None):
        self.transport: Transport = transport_for(storage_uri, storage_options)
        if not _NAME_RE.match(experiment_name or ""):
            raise StoreError(
                f"EXPERIMENT_NAME={experiment_name!r} is not usable as a folder name: "
                "use letters, digits, '.', '_' and '-' (e.g. EXP-3333-longformer)."
            )
        self.storage_uri, self.experiment_name = self.transport.storage_uri, experiment_name
        self.root = f"{self.storage_uri.rstrip('/')}/{experiment_name}"

    @classmethod
    def for_config(cls, config: Config) -> Store:
        """The store of the experiment ``config`` describes (its STORAGE_URI and EXPERIMENT_NAME)."""
        return cls(config.storage_uri, config.experiment_name)

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    def check_access(self) -> None:
        """Write, read back and delete a probe object under :attr:`root` (short timeouts)."""
        self.transport.check_access(self.root)

    def run_numbers(self) -> list[int]:
        """Sorted numbers of the claimed runs (those whose manifest exists)."""
        names = self.transport.listdir(self.root)
        nums = sorted(int(m.group(1)) for m in map(RUN_DIR_RE.match, names) if m)
        present = self.transport.existing([self._manifest(n) for n in nums])
        return [n for n in nums if self._manifest(n) in present]

    def _manifest(self, num: int) -> str:
        return f"{self.root}/{run_dir(num)}/{MANIFEST}"

    def run_exists(self, run_num: int) -> bool:
        return self.transport.exists(self._manifest(run_num))

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
                    f"or a number not used yet (existing: {self.run_numbers()})."
                ) from None
        n = max(self.run_numbers(), default=0) + 1
        while True:
            try:
                return self._claim(n, manifest)
            except OutputExistsError:
                n += 1

    def _claim(self, n: int, manifest: dict | Callable[[int], dict]) -> Run:
        run, token = Run(self.transport, self.root, n), uuid.uuid4().hex
        body = {
            "experiment": self.experiment_name,
            **(manifest(n) if callable(manifest) else manifest),
            "run": n,
            "claimed_at": now(),
            "claim_token": token,
        }
        try:
            run.write_json(MANIFEST, body)
        except OutputExistsError:
            # s3://: our put may have succeeded, its response lost, and a retry found the key taken
            with contextlib.suppress(StoreError):  # a damaged manifest is someone else's run
                if run.read_manifest().get("claim_token") == token:
                    return run
            raise
        return run

    def open_run(self, run_num: int) -> Run:
        if not self.run_exists(run_num):
            raise StoreError(f"run_{run_num} does not exist in {self.root} (existing runs: {self.run_numbers()}).")
        return Run(self.transport, self.root, run_num)

    def runs(self) -> list[Run]:
        return [Run(self.transport, self.root, n) for n in self.run_numbers()]


def transport_for(storage_uri: str, storage_options: dict | None = None) -> Transport:
    """The transport of STORAGE_URI (a plain path counts as file://); StoreError if it is unusable."""
    uri = (storage_uri or "").strip()
    if not uri:
        raise StoreError("STORAGE_URI is empty: set it to file:///some/folder or s3://bucket/prefix.")
    scheme, sep, rest = uri.partition("://")
    if not sep:  # a plain path
        scheme, rest = "file", uri
    scheme, rest = scheme.lower(), rest.rstrip("/")
    if scheme == "file":
        return FileTransport("file://" + os.path.abspath(os.path.expanduser(rest or "/")), storage_options)
    if scheme == "s3":
        if not rest.split("/", 1)[0]:
            raise StoreError(f"STORAGE_URI={storage_uri!r} names no bucket: use s3://<bucket>/<prefix>.")
        return S3Transport(f"s3://{rest}", storage_options)
    raise StoreError(f"STORAGE_URI={storage_uri!r}: only file:// and s3:// are supported.")

"""The model registry in the storage: ``<STORAGE_URI>/registry/<group>/v<N>.json``, one JSON per
version, beside the experiments (so the embedded default has one too).

A version names a run's model (experiment, run, model, the run's URI), its test metrics, the
fingerprints of its data, its model data and image, and an approval status with its history
(who, when). A version is claimed by an exclusive put (two registrations never share a number,
as run numbers), and changed by compare-and-swap; on SageMaker the number is the model
package's version, and the record keeps its ARN.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
from collections.abc import Callable
from typing import Any

from ml_exp.storage.errors import OutputExistsError, StoreError
from ml_exp.storage.layout import REGISTRY
from ml_exp.storage.run import now
from ml_exp.storage.store import transport_for
from ml_exp.storage.transport import document_bytes

PENDING, APPROVED, REJECTED = "PendingManualApproval", "Approved", "Rejected"
STATUSES = (PENDING, APPROVED, REJECTED)
VERSION_RE = re.compile(r"^v(\d+)\.json$")


def who() -> dict[str, str]:
    return {"user": getpass.getuser(), "host": socket.gethostname()}


class Registry:
    """The versions of one group (the use case) in ``storage_uri``."""

    def __init__(self, storage_uri: str, group: str):
        self.transport = transport_for(storage_uri)
        self.group = group
        self.root = f"{self.transport.storage_uri.rstrip('/')}/{REGISTRY}/{group}"

    def url(self, version: int) -> str:
        return f"{self.root}/v{version}.json"

    def versions(self) -> list[int]:
        return sorted(int(m.group(1)) for m in map(VERSION_RE.match, self.transport.listdir(self.root)) if m)

    def read(self, version: int) -> dict[str, Any]:
        if not self.transport.exists(self.url(version)):
            known = ", ".join(map(str, self.versions())) or "none yet"
            raise StoreError(f"version {version} is not in the registry {self.root} (versions: {known}).")
        return json.loads(self.transport.read(self.url(version)))

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(self.transport.read(self.url(v))) for v in self.versions()]

    def add(self, record: dict[str, Any], version: int | None = None) -> dict[str, Any]:
        """Write ``record`` as ``version`` (None: the next free one); returns it with its version."""
        n = version if version is not None else max(self.versions(), default=0) + 1
        while True:
            body = {**record, "group": self.group, "version": n, "uri": self.url(n)}
            try:
                self.transport.put(self.url(n), document_bytes(body), overwrite=False)
                return body
            except OutputExistsError:
                if version is not None:
                    raise StoreError(f"version {version} is already in the registry {self.root}.") from None
                n += 1

    def update(self, version: int, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        self.read(version)  # says which versions exist when this one does not
        return self.transport.update_json(self.url(version), fn)

    def set_status(self, version: int, status: str, note: str = "") -> dict[str, Any]:
        """Approve or reject ``version``, recording who and when."""
        if status not in STATUSES:
            raise StoreError(f"status {status!r}: one of {', '.join(STATUSES)}.")

        def change(record: dict[str, Any]) -> None:
            record["status"] = status
            record.setdefault("history", []).append({"status": status, "at": now(), "by": who(), "note": note})

        return self.update(version, change)

    def production(self) -> dict[str, Any] | None:
        """The approved version registered last (what ``--against production`` means)."""
        approved = [r for r in self.records() if r.get("status") == APPROVED]
        return max(approved, key=lambda r: r["version"]) if approved else None

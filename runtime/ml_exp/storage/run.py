"""One run folder, ``<STORAGE_URI>/<EXPERIMENT_NAME>/run_<N>/``: its files, its complete folders,
its manifest and the status of its steps, written through a
:class:`~ml_exp.storage.transport.Transport` (which says how each is written safely)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any

from ml_exp.storage.errors import DamagedRun, MissingInput, OutputExistsError, StepAlreadyCompleted, StoreError
from ml_exp.storage.layout import COMPLETE, MANIFEST, SCRATCH, run_dir
from ml_exp.storage.manifest_schema import json_type, manifest_problems

if TYPE_CHECKING:
    from pathlib import Path

    from ml_exp.storage.transport import Transport


def now() -> str:
    """The time now, UTC, ISO 8601 to the millisecond: every timestamp in a run's records."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Run:
    """One run folder, ``<experiment_uri>/run_<N>``, on ``transport``."""

    def __init__(self, transport: Transport, experiment_uri: str, num: int):
        self.transport, self.num, self.uri = transport, num, f"{experiment_uri}/{run_dir(num)}"
        self.experiment_name = experiment_uri.rstrip("/").rsplit("/", 1)[-1]

    def __repr__(self) -> str:
        return f"Run({self.uri!r})"

    @property
    def is_remote(self) -> bool:
        """True when the run's files are not on this machine (s3://): libraries get local copies."""
        return self.transport.is_remote

    def path(self, *parts: str) -> str:
        """URL of ``parts`` under the run folder."""
        segs = [s for p in parts for s in str(p).strip("/").split("/") if s]
        if any(s in (".", "..") for s in segs):
            raise StoreError(f"invalid path under a run: {'/'.join(map(str, parts))!r}")
        return "/".join([self.uri, *segs])

    def local_dir(self, relpath: str) -> Path | None:
        """The folder (or file) ``relpath`` on this machine when the storage is local, else None."""
        local = self.transport.local_path(self.path(relpath))
        if local is None:
            return None
        from pathlib import Path  # here: importing the storage stays cheap

        return Path(local)

    def local_path_or_url(self, *parts: str) -> str:
        """A local path with file:// storage (for libraries that want paths), else the URL."""
        url = self.path(*parts)
        return self.transport.local_path(url) or url

    # -- files -------------------------------------------------------------------------
    def write_bytes(self, relpath: str, data: bytes, *, overwrite: bool = False) -> str:
        """Write atomically; OutputExistsError if it exists and not ``overwrite``. Returns the URL."""
        url = self.path(relpath)
        self.transport.put(url, bytes(data), overwrite)
        return url

    def write_text(self, relpath: str, text: str, *, overwrite: bool = False) -> str:
        return self.write_bytes(relpath, text.encode("utf-8"), overwrite=overwrite)

    def write_json(self, relpath: str, obj: Any, *, overwrite: bool = False) -> str:
        return self.write_text(relpath, json.dumps(obj, indent=2, default=str) + "\n", overwrite=overwrite)

    def read_bytes(self, relpath: str) -> bytes:
        return self.transport.read(self.path(relpath))

    def read_text(self, relpath: str) -> str:
        return self.read_bytes(relpath).decode("utf-8")

    def read_json(self, relpath: str) -> Any:
        return json.loads(self.read_bytes(relpath))

    def open(self, relpath: str, mode: str = "rb") -> IO[bytes]:
        """A binary reader of ``relpath`` (for libraries that read part of a file, e.g. a parquet
        footer). Reading only: writes go through write_bytes/put_dir, which are atomic."""
        if mode != "rb":
            raise ValueError(f"Run.open reads only (mode 'rb'), not {mode!r}: write with write_bytes or put_dir")
        return self.transport.open(self.path(relpath))

    def exists(self, relpath: str) -> bool:
        return self.transport.exists(self.path(relpath))

    def listdir(self, relpath: str = "") -> list[str]:
        """Sorted entry names under ``relpath`` ([] if missing); hidden temporaries skipped."""
        return [n for n in self.transport.listdir(self.path(relpath)) if not n.startswith(".")]

    # -- folders -----------------------------------------------------------------------
    def is_complete(self, relpath: str) -> bool:
        """True once the folder's ``_COMPLETE`` marker exists (written last)."""
        return self.exists(f"{relpath}/{COMPLETE}")

    def mark_complete(self, relpath: str, **info: Any) -> str:
        """Mark a folder written by other means (e.g. a trainer) complete."""
        return self.write_json(f"{relpath}/{COMPLETE}", {"completed_at": now(), **info}, overwrite=True)

    def put_dir(self, local_dir: str, relpath: str, *, overwrite: bool = False, move: bool = False) -> str:
        """Upload a local folder; readers see it only once complete (:meth:`is_complete`).
        ``move``: the caller is done with ``local_dir`` (scratch): on local storage its files are
        renamed into the run instead of copied, and it is left empty."""
        src, url = os.path.abspath(local_dir), self.path(relpath)
        if not os.path.isdir(src):
            raise StoreError(f"cannot upload {local_dir!r}: not a folder.")
        if not overwrite and self.is_complete(relpath):
            raise OutputExistsError(
                f"{url} already exists; refusing to overwrite it. Start a new run, or pass overwrite=True."
            )
        paths = sorted(
            os.path.relpath(os.path.join(d, f), src).replace(os.sep, "/") for d, _, names in os.walk(src) for f in names
        )
        paths = [p for p in paths if p != COMPLETE]
        # the names too: a file deleted later is then named (missing_files), not a library's traceback
        marker = json.dumps({"completed_at": now(), "files": len(paths), "paths": paths}).encode()
        self.transport.put_dir(src, url, marker, move=move)
        return url

    def missing_files(self, relpath: str) -> list[str]:
        """Files the complete folder ``relpath`` was written with that are gone now (its marker
        lists them; [] for a folder marked by other means)."""
        try:
            written = json.loads(self.read_bytes(f"{relpath}/{COMPLETE}")).get("paths") or []
        except (ValueError, AttributeError):
            return []
        present = set(self.transport.files(self.path(relpath)))
        return [p for p in written if p not in present]

    def scratch_area(self) -> str:
        """A local folder for this run's temporary files (downloads, encodings, checkpoints on
        S3): inside the run on local storage, else under the system temp folder. Whoever
        holds the run's lease clears it when it starts (:meth:`clear_scratch`), so a killed
        step leaves nothing behind for long."""
        area = self.transport.local_path(self.path(SCRATCH))
        if area is None:
            tag = hashlib.sha256(self.uri.encode()).hexdigest()[:10]
            name = f"{self.experiment_name}-{run_dir(self.num)}-{tag}"
            area = os.path.join(tempfile.gettempdir(), "ml-exp-scratch", name)
        with self.transport.errors("creating", area):
            os.makedirs(area, exist_ok=True)
        return area

    def clear_scratch(self) -> None:
        shutil.rmtree(self.scratch_area(), ignore_errors=True)

    def get_dir(self, relpath: str, local_dir: str) -> None:
        """Download a complete folder into ``local_dir`` (created; the marker is not copied)."""
        if not self.is_complete(relpath):
            raise StoreError(
                f"{self.path(relpath)} is missing or incomplete (no {COMPLETE} marker): the step that "
                "writes it has not finished."
            )
        self.download(relpath, local_dir)

    def local_input(self, relpath: str, scratch_dir: str | Path) -> Path:
        """A local folder holding the complete output ``relpath`` of an earlier step: the folder
        itself where the storage is local (no copy), else downloaded under ``scratch_dir``."""
        if not self.is_complete(relpath):
            raise MissingInput(
                f"{self.path(relpath)} is missing or incomplete: run the step that writes it first "
                f"(exp run --run {self.num} --steps <step>)."
            )
        missing = self.missing_files(relpath)
        if missing:  # deleted after it was written: a library would fail on it with a traceback
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise MissingInput(
                f"{self.path(relpath)} is damaged: {shown} {'is' if len(missing) == 1 else 'are'} missing. "
                "A completed step is never redone in the same run: restore the file(s), or rebuild everything "
                "in a new run with `exp run`."
            )
        local = self.local_dir(relpath)
        if local is not None:
            return local
        from pathlib import Path

        destination = Path(scratch_dir) / relpath
        self.get_dir(relpath, str(destination))
        return destination

    def download(self, relpath: str, local_dir: str) -> None:
        """Download the files under ``relpath`` as they are, e.g. a part of a complete folder (the
        caller checked the folder it belongs to)."""
        self.transport.get_dir(self.path(relpath), local_dir)

    # -- manifest and steps ------------------------------------------------------------
    def read_manifest(self) -> dict:
        """The manifest; DamagedRun (saying what is wrong and what to do) when it is not one."""
        return self._manifest_from(self.read_bytes(MANIFEST))

    def _manifest_from(self, data: bytes) -> dict:
        where = f"run_{self.num}'s {MANIFEST} ({self.path(MANIFEST)}) is damaged"
        try:
            manifest = json.loads(data)
        except ValueError as exc:  # truncated or garbled JSON, bad UTF-8
            raise DamagedRun(
                f"{where}: not valid JSON ({exc}). Nothing was changed; restore the file (from a backup "
                "or the storage's version history) to continue this run, or start a new run with "
                "`exp run`."
            ) from None
        if not isinstance(manifest, dict):
            raise DamagedRun(
                f"{where}: a JSON {json_type(manifest)}, not an object. Restore the file to continue "
                "this run, or start a new run with `exp run`."
            )
        wrong = manifest_problems(manifest)
        if wrong:
            more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
            raise DamagedRun(
                f"{where}: {'; '.join(wrong[:3])}{more}. Nothing was changed; restore the file to continue this "
                "run, or start a new run with `exp run`."
            )
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        """Replace the manifest atomically."""
        self.write_json(MANIFEST, manifest, overwrite=True)

    def update_manifest(self, fn: Callable[[dict], dict | None]) -> dict:
        """Read-modify-write the manifest (``fn`` edits in place or returns a new dict); safe
        against concurrent updaters (the transport's compare-and-swap). Returns the manifest written."""
        return self.transport.update_json(self.path(MANIFEST), fn, parse=self._manifest_from)

    def step(self, step: str) -> dict:
        """The status record of ``step`` ({} if it never started)."""
        return dict(self.read_manifest().get("steps", {}).get(step, {}))

    def _refuse_completed(self, step: str, cur: dict) -> None:
        if cur.get("status") == "completed":
            raise StepAlreadyCompleted(
                f"step {step!r} of run_{self.num} ({self.uri}) already completed at {cur.get('ended_at')}; "
                "its outputs are never overwritten. Start a new run (RUN_NUM = auto) to redo it."
            )

    def begin_step(self, step: str, **info: Any) -> dict:
        """Mark ``step`` running (with ``info``); StepAlreadyCompleted if it already completed."""

        def fn(m: dict) -> None:
            cur = m.setdefault("steps", {}).get(step) or {}
            self._refuse_completed(step, cur)
            m["steps"][step] = {"status": "running", "started_at": now(), "attempt": cur.get("attempt", 0) + 1, **info}

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
            ended, start = now(), cur.get("started_at")
            dur = (datetime.fromisoformat(ended) - datetime.fromisoformat(start)).total_seconds() if start else None
            cur.update(info)
            cur.update(status=status, ended_at=ended, duration_s=dur)

        return self.update_manifest(fn)["steps"][step]

"""One run folder, ``<STORAGE_URI>/<EXPERIMENT_NAME>/run_<N>/``: its files, its complete folders,
its manifest and the status of its steps (how each is written safely: :mod:`ml_exp.storage.store`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from ml_exp.storage.layout import COMPLETE, MANIFEST, SCRATCH, run_dir
from ml_exp.storage.errors import Conflict, DamagedRun, OutputExistsError, StepAlreadyCompleted, StoreError

if TYPE_CHECKING:
    from ml_exp.storage.store import Store


def now() -> str:
    """The time now, UTC, ISO 8601 to the millisecond: every timestamp in a run's records."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Run:
    """One run folder, ``<root>/run_<N>``."""

    def __init__(self, store: Store, num: int):
        self.store, self.num, self.uri = store, num, f"{store.root}/{run_dir(num)}"

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
        return url if self.store.is_s3 else self.store.local_path(url)

    # -- files -------------------------------------------------------------------------
    def write_bytes(self, relpath: str, data: bytes, *, overwrite: bool = False) -> str:
        """Write atomically; OutputExistsError if it exists and not ``overwrite``. Returns the URL."""
        url = self.path(relpath)
        with self.store.errors("writing", url):
            self.store.put(url, bytes(data), overwrite)
        return url

    def write_text(self, relpath: str, text: str, *, overwrite: bool = False) -> str:
        return self.write_bytes(relpath, text.encode("utf-8"), overwrite=overwrite)

    def write_json(self, relpath: str, obj: Any, *, overwrite: bool = False) -> str:
        return self.write_text(relpath, json.dumps(obj, indent=2, default=str) + "\n", overwrite=overwrite)

    def read_bytes(self, relpath: str) -> bytes:
        url = self.path(relpath)
        with self.store.errors("reading", url):
            return self.store.fs.cat_file(url)

    def read_text(self, relpath: str) -> str:
        return self.read_bytes(relpath).decode("utf-8")

    def read_json(self, relpath: str) -> Any:
        return json.loads(self.read_bytes(relpath))

    def exists(self, relpath: str) -> bool:
        url = self.path(relpath)
        with self.store.errors("checking", url):
            return bool(self.store.fs.exists(url))

    def listdir(self, relpath: str = "") -> list[str]:
        """Sorted entry names under ``relpath`` ([] if missing); hidden temporaries skipped."""
        url = self.path(relpath)
        with self.store.errors("listing", url):
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
        return self.write_json(f"{relpath}/{COMPLETE}", {"completed_at": now(), **info}, overwrite=True)

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
        # the names too: a file deleted later is then named (missing_files), not a library's traceback
        marker = json.dumps({"completed_at": now(), "files": len(files), "paths": sorted(rp for _, rp in files)}).encode()
        with st.errors("uploading a folder to", url):
            if st.is_s3:  # clear leftovers of an interrupted upload (or overwrite), marker first
                if st.fs.exists(url):
                    with contextlib.suppress(FileNotFoundError):
                        st.fs.rm_file(f"{url}/{COMPLETE}")
                    st.fs.rm(url, recursive=True)
                if files:
                    st.fs.put([lp for lp, _ in files], [f"{url}/{rp}" for _, rp in files])
                st.put(f"{url}/{COMPLETE}", marker, overwrite=True)
                return url
            dest = st.local_path(url)
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

    def missing_files(self, relpath: str) -> list[str]:
        """Files the complete folder ``relpath`` was written with that are gone now (its marker
        lists them; [] for a folder marked by other means)."""
        try:
            written = json.loads(self.read_bytes(f"{relpath}/{COMPLETE}")).get("paths") or []
        except (ValueError, AttributeError):
            return []
        url, st = self.path(relpath), self.store
        with st.errors("listing", url):
            base = st.fs._strip_protocol(url).rstrip("/") + "/"
            present = {p[len(base):] for p in st.fs.find(url) if p.startswith(base)}
        return [p for p in written if p not in present]

    def scratch_area(self) -> str:
        """A local folder for this run's temporary files (downloads, encodings, checkpoints on
        S3): inside the run on file:// storage, else under the system temp folder. Whoever
        holds the run's lease clears it when it starts (:meth:`clear_scratch`), so a killed
        step leaves nothing behind for long."""
        if self.store.is_s3:
            tag = hashlib.sha256(self.uri.encode()).hexdigest()[:10]
            area = os.path.join(tempfile.gettempdir(), "ml-exp-scratch", f"{self.store.experiment_name}-{run_dir(self.num)}-{tag}")
        else:
            area = self.store.local_path(self.path(SCRATCH))
        with self.store.errors("creating", area):
            os.makedirs(area, exist_ok=True)
        return area

    def clear_scratch(self) -> None:
        shutil.rmtree(self.scratch_area(), ignore_errors=True)

    def get_dir(self, relpath: str, local_dir: str) -> None:
        """Download a complete folder into ``local_dir`` (created; the marker is not copied)."""
        url, st = self.path(relpath), self.store
        if not self.is_complete(relpath):
            raise StoreError(f"{url} is missing or incomplete (no {COMPLETE} marker): the step that writes it "
                             "has not finished.")
        with st.errors("downloading", url):
            if not st.is_s3:
                shutil.copytree(st.local_path(url), local_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(COMPLETE))
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
        """The manifest; DamagedRun (saying what is wrong and what to do) when it is not one."""
        try:
            manifest = self.read_json(MANIFEST)
        except ValueError as exc:  # truncated or garbled JSON, bad UTF-8
            raise DamagedRun(f"run_{self.num}'s {MANIFEST} ({self.path(MANIFEST)}) is damaged: not valid JSON ({exc}). "
                             f"Nothing was changed; restore the file (from a backup or the storage's version history) "
                             "to continue this run, or start a new run with `exp run`.") from None
        if not isinstance(manifest, dict):
            raise DamagedRun(f"run_{self.num}'s {MANIFEST} ({self.path(MANIFEST)}) is damaged: a JSON {type(manifest).__name__}, "
                             "not an object. Restore the file to continue this run, or start a new run with `exp run`.")
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        """Replace the manifest atomically."""
        self.write_json(MANIFEST, manifest, overwrite=True)

    def update_manifest(self, fn: Callable[[dict], dict | None]) -> dict:
        """Read-modify-write the manifest (``fn`` edits in place or returns a new dict); safe
        against concurrent updaters. Returns the manifest written."""
        st, url = self.store, self.path(MANIFEST)
        if not st.is_s3:
            import fcntl

            with st.errors("locking", url):
                lock = open(st.local_path(self.path(".manifest.lock")), "a")
            with lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                m = self.read_manifest()
                m = m if (r := fn(m)) is None else r
                self.write_manifest(m)
                return m
        for attempt in range(50):
            with st.errors("reading", url):
                etag = st.fs.info(url)["ETag"]  # read after the ETag: a newer body just fails If-Match
                m = json.loads(st.fs.cat_file(url))
            m = m if (r := fn(m)) is None else r
            try:
                with st.errors("updating", url):
                    st.put(url, (json.dumps(m, indent=2, default=str) + "\n").encode(), True, if_match=etag)
                return m
            except Conflict:
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

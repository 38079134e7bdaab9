"""One writer per run: a lease in the run's manifest.

``exp run`` takes the lease of its run before it changes anything in it, renews it from a
background thread while it works and releases it at the end; a second ``exp run --run N`` while
the lease is live is refused at once, naming the holder. The lease is taken and renewed with the
transport's compare-and-swap on the manifest (:meth:`ml_exp.storage.run.Run.update_manifest`), so two
takers never both win. A lease whose holder is gone is taken over, and the takeover recorded
(``manifest["lease_takeovers"]``): gone means the same host and its pid no longer runs (a kill
-9, a crash), or no renewal for :data:`STALE_AFTER_S` seconds (another machine that died).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime
from typing import Any

from ml_exp.storage.errors import LeaseHeld, StoreError
from ml_exp.storage.run import Run, now

log = logging.getLogger("ml_exp")

RENEW_EVERY_S = 15.0
# Eight missed renewals: long enough for a slow storage write or a suspended laptop lid to not
# look like death, short enough that a dead machine's run can be continued in minutes.
STALE_AFTER_S = 120.0


class Lease:
    """The lease held by this process on ``run``; a context manager that releases it."""

    def __init__(self, run: Run, record: dict[str, Any], renew_every_s: float = RENEW_EVERY_S):
        self.run, self.record, self.token = run, record, record["token"]
        self.lost: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_loop, args=(renew_every_s,), name=f"ml-exp-lease-run_{run.num}", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _renew_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.renew()
            except StoreError as exc:  # storage unreachable for a moment: try again next time
                log.warning("could not renew the lease of run_%d: %s", self.run.num, exc)

    def renew(self) -> None:
        def fn(manifest: dict) -> None:
            held = manifest.get("lease") or {}
            if held.get("token") != self.token:
                self.lost = held
                return
            held["renewed_at"] = now()

        self.run.update_manifest(fn)
        if self.lost is not None:
            self._stop.set()
            log.warning(
                "run_%d's lease was taken over by %s; this process no longer writes to the run",
                self.run.num,
                describe(self.lost),
            )

    def check(self) -> None:
        """LeaseHeld when another process has taken the lease over (this one looked dead)."""
        if self.lost is not None:
            raise LeaseHeld(
                f"run_{self.run.num} was taken over by {describe(self.lost)} while this process worked on it; "
                "stopped here. Check the manifest's lease_takeovers."
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

        def fn(manifest: dict) -> None:
            if (manifest.get("lease") or {}).get("token") == self.token:
                manifest.pop("lease")

        try:
            self.run.update_manifest(fn)
        except StoreError as exc:  # read-only or gone storage: the lease goes stale on its own
            log.warning(
                "could not release the lease of run_%d (%s); it counts as stale after %d s",
                self.run.num,
                exc,
                STALE_AFTER_S,
            )


def take_lease(run: Run, renew_every_s: float = RENEW_EVERY_S, stale_after_s: float = STALE_AFTER_S) -> Lease:
    """Take ``run``'s lease (taking over a stale one) or raise LeaseHeld naming its holder."""
    record = {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "since": now()}
    record["renewed_at"] = record["since"]

    def fn(manifest: dict) -> None:
        held = manifest.get("lease")
        if held:
            why = gone(held, stale_after_s)
            if why is None:
                raise LeaseHeld(
                    f"run_{run.num} is being run by {describe(held)}; only one `exp run` may write to a run. "
                    f"Wait for it to finish, or stop it; a holder that died is taken over automatically "
                    f"(at once on the same host, after {stale_after_s:.0f} s without renewal elsewhere)."
                )
            takeover = {
                "at": record["since"],
                "from": held,
                "reason": why,
                "by": {"host": record["host"], "pid": record["pid"]},
            }
            manifest.setdefault("lease_takeovers", []).append(takeover)
            log.warning("run_%d: taking over the lease of %s (%s)", run.num, describe(held), why)
        manifest["lease"] = record

    run.update_manifest(fn)
    return Lease(run, record, renew_every_s)


def gone(held: dict[str, Any], stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the holder of ``held`` counts as gone, or None while it is live."""
    if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int) and not _alive(held["pid"]):
        return f"pid {held['pid']} no longer runs on {held['host']}"
    try:
        age = (
            datetime.fromisoformat(now()) - datetime.fromisoformat(held.get("renewed_at") or held.get("since") or "")
        ).total_seconds()
    except (TypeError, ValueError):
        return "the lease record is unreadable"
    if age > stale_after_s:
        return f"not renewed for {age:.0f} s (stale after {stale_after_s:.0f} s)"
    return None


def describe(held: dict[str, Any]) -> str:
    since, renewed = held.get("since"), held.get("renewed_at")
    return f"pid {held.get('pid')} on host {held.get('host')} (since {since}, last renewed {renewed})"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:  # killed but not yet reaped by its parent: a zombie runs nothing
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True

"""The server's queue: one thread runs the predictor on batches of requests (see server.py), the
small ones first, a large one alone; a request whose client went away or whose deadline
(SERVE_TIMEOUT_S) passed is dropped unscored; the queue is bounded (:class:`Busy`: 503)."""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future, InvalidStateError

from ml_exp.serving.predictor import Predictor

# A body over this is a large request: scored alone, after the small ones waiting (a long document
# must not hold up every short one); at most MAX_LARGE_WAITING wait, and MAX_SMALL_RECORDS records
# of small ones: more get 503 with Retry-After (bounded memory and bounded waits).
LARGE_BYTES = 64 * 1024
MAX_LARGE_WAITING = 2
MAX_SMALL_RECORDS = 4000  # 4 requests of the most records one may have


class Busy(Exception):
    """The queue is full (503 with Retry-After)."""


class Expired(Exception):
    """A request's deadline (SERVE_TIMEOUT_S) passed before the model reached it."""


class Batcher:
    """One thread runs the predictor; requests queue up and are scored in batches of at most
    ``max_records`` records (what is waiting when the thread is free: no added delay).

    Small requests go first and together; a large one (a body over LARGE_BYTES) is scored alone,
    one at a time, when no small one waits. Work whose request was cancelled (its client went
    away) or whose deadline passed is dropped unscored. The queues are bounded: :class:`Busy`."""

    def __init__(self, predictor: Predictor, max_records: int = 16, timeout_s: float = 50.0):
        self.predictor, self.max_records, self.timeout_s = predictor, max_records, timeout_s
        self.small: collections.deque[Job] = collections.deque()
        self.large: collections.deque[Job] = collections.deque()
        self.ready = threading.Condition()
        self.busy_since: float | None = None  # when the thread started its current batch
        self.thread = threading.Thread(target=self._work, name="ml-exp-predictor", daemon=True)
        self.thread.start()

    def submit(self, records: list, deadline: float | None = None, large: bool = False) -> Job:
        job = Job(records, deadline if deadline is not None else time.monotonic() + self.timeout_s, large)
        with self.ready:
            if large and len(self.large) >= MAX_LARGE_WAITING:
                raise Busy(f"{len(self.large)} large requests are waiting already")
            if not large and sum(len(j.records) for j in self.small) + len(records) > MAX_SMALL_RECORDS:
                raise Busy(f"{MAX_SMALL_RECORDS:,} records are waiting already")
            (self.large if large else self.small).append(job)
            self.ready.notify()
        return job

    def stalled(self) -> str | None:
        """Why the model cannot keep up (None: it can): a batch or a waiting request older than the timeout."""
        now = time.monotonic()
        with self.ready:
            busy = self.busy_since
            oldest = min((j.arrived for j in (*self.small, *self.large)), default=None)
        if not self.thread.is_alive():
            return "the predictor's thread has stopped"
        if busy is not None and now - busy > self.timeout_s:
            return f"one batch has been running for {now - busy:.0f} s (SERVE_TIMEOUT_S = {self.timeout_s:g})"
        if oldest is not None and now - oldest > self.timeout_s:
            return f"a request has waited {now - oldest:.0f} s (SERVE_TIMEOUT_S = {self.timeout_s:g})"
        return None

    def _take(self) -> list[tuple[Job, list]]:
        """The next batch: every small request waiting (up to max_records records), else the next
        max_records records of the oldest large one (small ones that come meanwhile go between)."""
        with self.ready:
            while True:
                jobs: list[tuple[Job, list]] = []
                size = 0
                while self.small and size < self.max_records:
                    job = self.small.popleft()
                    if job.live():
                        jobs.append((job, job.records))
                        size += len(job.records)
                while not jobs and self.large:
                    job = self.large[0]
                    if not job.live():
                        self.large.popleft()
                        continue
                    part = job.records[job.next : job.next + self.max_records]
                    job.next += len(part)
                    if job.next >= len(job.records):
                        self.large.popleft()
                    jobs.append((job, part))
                if jobs:
                    self.busy_since = time.monotonic()
                    return jobs
                self.busy_since = None
                self.ready.wait()

    def _work(self) -> None:
        while True:
            self._run(self._take())

    def _run(self, jobs: list[tuple[Job, list]]) -> None:
        if len(jobs) > 1:
            try:
                predictions = self.predictor.predict([r for _, records in jobs for r in records], checked=True)
            except Exception:  # noqa: BLE001 - one bad request must not fail the others: retry each alone
                predictions = None
            if predictions is not None:
                start = 0
                for job, records in jobs:
                    job.add(predictions[start : start + len(records)])
                    start += len(records)
                return
        for job, records in jobs:
            try:
                job.add(self.predictor.predict(records, checked=True))
            except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
                job.fail(exc)


class Job:
    """A request's records, its answer (``future``) and its deadline; :meth:`cancel` drops it."""

    def __init__(self, records: list, deadline: float, large: bool):
        self.records, self.deadline, self.large = records, deadline, large
        self.future: Future = Future()
        self.arrived = time.monotonic()
        self.next = 0  # records handed to the model so far (a large request goes in parts)
        self.done: list = []
        self.dropped = False

    def cancel(self) -> None:
        self.dropped = True
        self.future.cancel()

    def live(self) -> bool:
        """False when the request is gone (cancelled, failed, or past its deadline): skip it."""
        if self.dropped or self.future.done():
            return False
        if time.monotonic() > self.deadline:
            self.fail(Expired())
            return False
        return True

    def add(self, predictions: list) -> None:
        self.done += predictions
        if len(self.done) >= len(self.records):
            self._settle(self.future.set_result, self.done)

    def fail(self, exc: BaseException) -> None:
        self._settle(self.future.set_exception, exc)

    @staticmethod
    def _settle(how, value) -> None:  # noqa: ANN001
        try:
            how(value)
        except InvalidStateError:  # cancelled meanwhile: nobody waits for it
            pass

"""The server's queue: one thread runs the predictor on batches of requests (see server.py), the
small ones first; a large one goes a few windows at a time, small ones between its turns; a request
whose client went away or whose deadline (SERVE_TIMEOUT_S) passed is dropped unscored, and a large
one that cannot be scored by its deadline at the measured speed is refused before it is scored;
the queue is bounded (:class:`Busy`: 503)."""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future, InvalidStateError

from ml_exp.serving.predictor import Predictor, RequestError, Work

# A body over this is a large request: scored after the small ones waiting, a turn of max_records
# windows at a time (a long document must not hold up every short one); at most MAX_LARGE_WAITING
# wait, and MAX_SMALL_RECORDS records of small ones: more get 503 with Retry-After (bounded memory
# and bounded waits).
LARGE_BYTES = 64 * 1024
MAX_LARGE_WAITING = 2
MAX_SMALL_RECORDS = 4000  # 4 requests of the most records one may have
# The measured speed (windows/s) follows the last turns; a large request is refused only when even
# this much faster would not make its deadline (turns of short windows flatter the speed).
SPEED_WEIGHT = 0.2
SPEED_MARGIN = 1.25


class Busy(Exception):
    """The queue is full (503 with Retry-After)."""


class Expired(Exception):
    """A request's deadline (SERVE_TIMEOUT_S) passed before the model reached it, or would pass
    before the model finished it."""


class Batcher:
    """One thread runs the predictor; requests queue up and are scored in batches of at most
    ``max_records`` records (what is waiting when the thread is free: no added delay).

    Small requests go first and together. A large one (a body over LARGE_BYTES) is encoded
    ``max_records`` records at a time and scored ``max_records`` windows a turn, one large request
    at a time, small ones going between its turns: a document of thousands of windows delays a
    short one by one turn, not by the whole document. Work whose request was cancelled (its client
    went away) or whose deadline passed is dropped between turns; a large request's records that
    would take longer than SERVE_TIMEOUT_S at the measured speed are refused with 413 when they are
    encoded (:class:`RequestError`), before any is scored. The queues are bounded: :class:`Busy`."""

    def __init__(self, predictor: Predictor, max_records: int = 16, timeout_s: float = 50.0):
        self.predictor, self.max_records, self.timeout_s = predictor, max_records, timeout_s
        self.small: collections.deque[Job] = collections.deque()
        self.large: collections.deque[Job] = collections.deque()
        self.ready = threading.Condition()
        self.busy_since: float | None = None  # when the thread started its current turn
        self.speed: float | None = None  # windows scored per second, over the last turns
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
        """Why the model cannot keep up (None: it can): a turn or a waiting request older than the timeout."""
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

    def _take(self) -> list[Job]:
        """The next turn: every small request waiting (up to max_records records), else the oldest
        live large one (small ones that come meanwhile go between its turns)."""
        with self.ready:
            while True:
                jobs: list[Job] = []
                size = 0
                while self.small and size < self.max_records:
                    job = self.small.popleft()
                    if job.live():
                        jobs.append(job)
                        size += len(job.records)
                while not jobs and self.large:
                    job = self.large[0]
                    if job.live():
                        jobs.append(job)
                    else:
                        self.large.popleft()
                if jobs:
                    self.busy_since = time.monotonic()
                    return jobs
                self.busy_since = None
                self.ready.wait()

    def _work(self) -> None:
        while True:
            jobs = self._take()
            if jobs[0].large:
                self._turn(jobs[0])
            else:
                self._batch(jobs)

    def _batch(self, jobs: list[Job]) -> None:
        """Small requests scored together; when that fails, each alone (one bad request must not fail the others)."""
        if len(jobs) > 1:
            try:
                predictions = self._score_all(
                    self.predictor.begin([r for job in jobs for r in job.records], checked=True)
                )
            except Exception:  # noqa: BLE001 - retried one by one below
                predictions = None
            if predictions is not None:
                start = 0
                for job in jobs:
                    job.add(predictions[start : start + len(job.records)])
                    start += len(job.records)
                return
        for job in jobs:
            try:
                job.add(self._score_all(self.predictor.begin(job.records, checked=True)))
            except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
                job.fail(exc)

    def _score_all(self, work: Work) -> list:
        while not work.done():
            self._advance(work, work.total)
        return self.predictor.end(work)

    def _turn(self, job: Job) -> None:
        """One turn of a large request: encode its next records, or score its next windows."""
        try:
            if job.work is None:
                part = job.records[job.next : job.next + self.max_records]
                job.work = self.predictor.begin(part, checked=True)
                job.next += len(part)
                self._admit(job)
            else:
                self._advance(job.work, self.max_records)
            if job.work.done():
                job.add(self.predictor.end(job.work))
                job.work = None
        except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
            job.fail(exc)
        if job.future.done():
            with self.ready:
                if self.large and self.large[0] is job:
                    self.large.popleft()

    def _advance(self, work: Work, windows: int) -> None:
        before, start = work.scored, time.monotonic()
        self.predictor.advance(work, windows)
        seconds = time.monotonic() - start
        if seconds > 0.005:  # too short a turn says nothing of the speed
            speed = (work.scored - before) / seconds
            self.speed = speed if self.speed is None else (1 - SPEED_WEIGHT) * self.speed + SPEED_WEIGHT * speed

    def _admit(self, job: Job) -> None:
        """Refuse a large request whose windows cannot be scored by its deadline at the measured speed:
        413 when they would take longer than SERVE_TIMEOUT_S even alone, 503 when only the wait is to blame."""
        if self.speed is None:
            return
        left = job.work.total + len(job.records) - job.next  # this part's windows, and at least one a record to come
        fast = self.speed * SPEED_MARGIN
        if job.work.total / fast > self.timeout_s:
            budget = int(self.speed * self.timeout_s)
            raise RequestError(
                f"the records make {job.work.total:,} windows; at this server's speed (~{self.speed:,.0f} "
                f"windows/s) about {budget:,} can be scored within SERVE_TIMEOUT_S = {self.timeout_s:g} s: "
                "send shorter documents or fewer records a request, set MAX_CHUNKS, or raise SERVE_TIMEOUT_S",
                413,
            )
        if time.monotonic() + left / fast > job.deadline:
            raise Expired()


class Job:
    """A request's records, its answer (``future``) and its deadline; :meth:`cancel` drops it."""

    def __init__(self, records: list, deadline: float, large: bool):
        self.records, self.deadline, self.large = records, deadline, large
        self.future: Future = Future()
        self.arrived = time.monotonic()
        self.next = 0  # records encoded so far (a large request goes in parts)
        self.work: Work | None = None  # a large request's part being scored
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

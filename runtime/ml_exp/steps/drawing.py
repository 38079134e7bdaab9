"""Pictures drawn in another process, beside a step's own work.

matplotlib's import alone takes ~0.4 s, and a picture drawn on a thread takes the GIL from the
step's work (measured: saving 20k encoded documents took 0.63 s instead of 0.07 s while the
length histogram was drawn on a thread). A process started when the step starts imports
matplotlib while the step imports its own libraries, and draws on another core.

Where that process cannot start or dies, or on a single core, the picture is drawn in the step's
own process: a picture is never what fails a step.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

log = logging.getLogger(__name__)


def _start() -> None:
    """The drawing process's start: it logs as the step's process does (-v: the libraries' logs
    too); Ctrl-C is for the step (which stops this process), not here."""
    import signal

    from ml_exp.core.console import quiet_libraries, setup_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_libraries()
    setup_logging()


def _warm() -> None:
    """Run first in the drawing process: the imports every picture needs."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401


class Picture:
    """A picture being drawn: :meth:`png` waits for it (drawing it here if its process broke)."""

    def __init__(self, future: Future | None, draw: Callable[..., Any], args: tuple[Any, ...]):
        self._future, self._draw, self._args = future, draw, args

    def png(self) -> Any:
        if self._future is not None:
            try:
                return self._future.result()
            except Exception as exc:  # noqa: BLE001 - the process broke, or could not take the work: draw here
                log.debug(
                    "drawing in another process failed (%s: %s); drawing in this process", type(exc).__name__, exc
                )
        return self._draw(*self._args)


class Drawing:
    """``with Drawing() as drawing: picture = drawing.draw(fn, *args) ... picture.png()``.
    ``fn`` and its arguments are pickled to the drawing process: a module-level function of
    plain values (arrays, numbers, strings)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._usable = (os.cpu_count() or 1) >= 2
        self._open()

    def _open(self) -> None:
        if self._pool is not None or not self._usable:
            return
        try:
            # spawn: a fork would copy the step's memory (and its threads' locks) into the child
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_start
            )
            self._pool.submit(_warm)
        except (OSError, RuntimeError) as exc:
            log.debug("no drawing process (%s); pictures are drawn in this process", exc)
            self._pool, self._usable = None, False

    def draw(self, draw: Callable[..., Any], *args: Any) -> Picture:
        self._open()  # again after a pause
        future = None
        if self._pool is not None:
            try:
                future = self._pool.submit(draw, *args)
            except (BrokenProcessPool, RuntimeError) as exc:
                log.debug("the drawing process stopped (%s); drawing in this process", exc)
                self._usable = False
        return Picture(future, draw, args)

    def pause(self) -> None:
        """Stop the drawing process until the next picture: while this process forks workers
        (a fork copies the pool's threads, and the locks they hold, into each)."""
        self.close()

    def close(self) -> None:
        """Stop the drawing process (it exits on its own: the step does not wait for it)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Drawing:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

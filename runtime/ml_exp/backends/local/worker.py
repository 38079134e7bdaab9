"""``python -m ml_exp.backends.local.worker <step> ...``: one worker process of the local backend.

The local backend (:mod:`ml_exp.backends.local`) starts it through torchrun (one per rank) to
train a model (step ``training``) or to run a tuning trial (step ``tuning`` with ``--trial``);
settings come from the experiment's settings.ini and the environment the backend hands over.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ml_exp.backends.base import Task
from ml_exp.backends.execute import execute, leave_error, one_line, open_task
from ml_exp.backends.local import die_with_parent
from ml_exp.core.console import QUIET, quiet_libraries, verbosity
from ml_exp.core.names import TRAINING, TUNING


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_exp.backends.local.worker")
    parser.add_argument("step", choices=[TRAINING, TUNING], help="training, or a trial of tuning")
    parser.add_argument("--experiment-dir", type=Path, required=True)
    parser.add_argument("--run-num", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument(
        "--trial", default=None, help="the tuning trial's name (trial_<k>): its model goes to its trial folder"
    )
    args = parser.parse_args(argv)
    if (args.step == TUNING) != bool(args.trial):
        parser.error("--trial goes with the tuning step, and only with it")

    die_with_parent()  # torchrun starts workers in their own process group; tie them to it
    rank = int(os.environ.get("RANK", 0))
    quiet_libraries()
    logging.basicConfig(
        level=logging.WARNING if verbosity() == QUIET else logging.INFO,
        format=f"[rank {rank}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        ctx, functions = open_task(args.experiment_dir, args.run_num)
        from ml_exp.backends.local import training_callbacks

        execute(
            Task(args.step, args.model),
            ctx,
            functions,
            data_dir=args.data_dir,
            checkpoints=args.checkpoints,
            trial=args.trial,
            callbacks=training_callbacks(ctx, args.model, args.trial),
        )
    except Exception as exc:
        # a problem the user can act on is one line (read-only or full storage: the path and the
        # errno); only an unexpected error keeps its traceback
        known = one_line(exc, near=str(args.checkpoints))
        leave_error(known or f"{type(exc).__name__}: {exc}", rank)
        if known:
            logging.getLogger("ml_exp").error(known)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

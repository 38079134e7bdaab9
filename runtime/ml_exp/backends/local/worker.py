"""``python -m ml_exp.backends.local.worker <step> ...``: one worker process of the local backend.

The local backend (:mod:`ml_exp.backends.local`) starts it through torchrun (one per rank) to
train a model (step ``training``) or to run a tuning trial (step ``tuning`` with ``--trial``);
settings come from the experiment's settings.ini and the environment the backend hands over.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from ml_exp.backends.local import ERROR_FILE, die_with_parent
from ml_exp.config import load_config
from ml_exp.core.console import QUIET, quiet_libraries, verbosity
from ml_exp.experiment.context import Context
from ml_exp.core.names import TRAINING, TUNING
from ml_exp.core.errors import StepError
from ml_exp.storage.errors import io_problem
from ml_exp.storage.store import Store, StoreError
from ml_exp.experiment.functions import load_udfs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_exp.backends.local.worker")
    parser.add_argument("step", choices=[TRAINING, TUNING], help="training, or a trial of tuning")
    parser.add_argument("--experiment-dir", type=Path, required=True)
    parser.add_argument("--run-num", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--trial", default=None, help="the tuning trial's name (trial_<k>): its model goes to its trial folder")
    args = parser.parse_args(argv)
    if (args.step == TUNING) != bool(args.trial):
        parser.error("--trial goes with the tuning step, and only with it")

    die_with_parent()  # torchrun starts workers in their own process group; tie them to it
    rank = int(os.environ.get("RANK", 0))
    quiet_libraries()
    logging.basicConfig(level=logging.WARNING if verbosity() == QUIET else logging.INFO, format=f"[rank {rank}] %(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = load_config(args.experiment_dir)
        run = Store.for_config(config).open_run(args.run_num)
        udfs = load_udfs(args.experiment_dir, config.udf_module, keep_loaded=True)
        ctx = Context(config=config, run=run, log=logging.getLogger("ml_exp.experiment"))
        from ml_exp.backends.local.search import pruning_callbacks
        from ml_exp.steps.training import train_model

        train_model(
            ctx, udfs, args.model, args.data_dir, args.checkpoints, trial=args.trial,
            sync_checkpoints=run.is_remote and args.trial is None, callbacks=pruning_callbacks(config),
        )  # fmt: skip
    except Exception as exc:
        # a problem the user can act on is one line (read-only or full storage: the path and the
        # errno); only an unexpected error keeps its traceback
        known = str(exc) if isinstance(exc, (StepError, StoreError)) else io_problem(exc, near=str(args.checkpoints))
        message = known or f"{type(exc).__name__}: {exc}"
        if os.environ.get(ERROR_FILE):
            with contextlib.suppress(OSError):
                Path(f"{os.environ[ERROR_FILE]}.rank{rank}").write_text(json.dumps({"rank": rank, "error": message}))
        if known:
            logging.getLogger("ml_exp").error(message)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

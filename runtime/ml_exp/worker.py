"""``python -m ml_exp.worker <step> ...``: one worker process of a step, as a backend starts it.

The local backend starts it through torchrun (one per rank); settings come from the
experiment's settings.ini and the environment, exactly as for ``exp run``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ml_exp.backends.local import ERROR_FILE, die_with_parent
from ml_exp.config import load_config
from ml_exp.context import Context
from ml_exp.steps import StepError
from ml_exp.store import Store
from ml_exp.udf import load_udfs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_exp.worker")
    parser.add_argument("step", choices=["training"])
    parser.add_argument("--experiment-dir", type=Path, required=True)
    parser.add_argument("--run-num", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--output", default=None, help="where the model goes in the run (default models/<model>)")
    parser.add_argument("--tracking-name", default="training")
    args = parser.parse_args(argv)

    die_with_parent()  # torchrun starts workers in their own process group; tie them to it
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = load_config(args.experiment_dir)
        run = Store(config.storage_uri, config.experiment_name).open_run(args.run_num)
        udfs = load_udfs(args.experiment_dir, config.udf_module, keep_loaded=True)
        ctx = Context(config=config, run=run, log=logging.getLogger("ml_exp.experiment"))
        from ml_exp.steps.train import train_model

        from ml_exp.steps.tune import pruning_callbacks

        train_model(
            ctx, udfs, args.model, args.data_dir, args.checkpoints,
            sync_checkpoints=run.store.is_s3 and args.output is None,
            output=args.output, callbacks=pruning_callbacks(config), tracking_name=args.tracking_name,
        )  # fmt: skip
    except Exception as exc:
        message = str(exc) if isinstance(exc, StepError) else f"{type(exc).__name__}: {exc}"
        if os.environ.get(ERROR_FILE):
            Path(f"{os.environ[ERROR_FILE]}.rank{rank}").write_text(json.dumps({"rank": rank, "error": message}))
        if isinstance(exc, StepError):
            logging.getLogger("ml_exp").error(message)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

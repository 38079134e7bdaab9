"""Weights & Biases tracking: one wandb run per (run, model, step) and per tuning trial; a no-op
when disabled.

Everything logged here is also written to the run's storage by the steps, so nothing depends
on wandb being reachable (offline mode is the default).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from ml_exp.context import Context


def wandb_name(ctx: Context, model: str, step: str, trial: str | None = None) -> str:
    """``run_<N>-<model>-<step>``, and ``run_<N>-<model>-tuning-trial_<k>`` for a tuning trial."""
    return "-".join([f"run_{ctx.run.num if ctx.run else 0}", model, step, *([trial] if trial else [])])


@contextmanager
def tracked(ctx: Context, model: str, step: str, trial: str | None = None, extra_config: dict[str, Any] | None = None) -> Iterator[Any]:
    """Yield a wandb run (or None when WANDB_MODE = disabled) of ``step`` (its job_type), for
    ``model`` (its folder key) or one of its tuning trials; finished on exit."""
    config = ctx.config
    if config.wandb_mode == "disabled":
        yield None
        return
    import wandb

    run = wandb.init(
        project=config.wandb_project,
        entity=config.wandb_entity or None,
        group=config.experiment_name,
        name=wandb_name(ctx, model, step, trial),
        job_type=step,
        mode=config.wandb_mode,
        dir=str(config.experiment_dir),
        config={"settings": dict(config.raw), "model": model, "run": ctx.run.num if ctx.run else None,
                **({"trial": trial} if trial else {}), **(extra_config or {})},
        reinit="create_new",
        settings=wandb.Settings(silent=True),
    )
    ctx.log.info("wandb %s run %s (%s)", config.wandb_mode, run.name, run.dir)
    try:
        yield run
    except BaseException:
        run.finish(exit_code=1)
        raise
    else:
        run.finish()

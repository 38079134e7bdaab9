"""Weights & Biases tracking: one wandb run per (run, model, step); a no-op when disabled.

Everything logged here is also written to the run's storage by the steps, so nothing depends
on wandb being reachable (offline mode is the default).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from ml_exp.context import Context


def wandb_name(ctx: Context, model: str, step: str) -> str:
    return f"run_{ctx.run.num if ctx.run else 0}-{model}-{step}"


@contextmanager
def tracked(ctx: Context, model: str, step: str, extra_config: dict[str, Any] | None = None, job_type: str | None = None) -> Iterator[Any]:
    """Yield a wandb run (or None when WANDB_MODE = disabled); finished on exit.

    ``step`` names the run (``run_<N>-<model>-<step>``, e.g. ``tune-3`` for a trial);
    ``job_type`` defaults to the step."""
    config = ctx.config
    if config.wandb_mode == "disabled":
        yield None
        return
    import wandb

    run = wandb.init(
        project=config.wandb_project,
        entity=config.wandb_entity or None,
        group=config.experiment_name,
        name=wandb_name(ctx, model, step),
        job_type=job_type or step,
        mode=config.wandb_mode,
        dir=str(config.experiment_dir),
        config={"settings": dict(config.raw), "model": model, "run": ctx.run.num if ctx.run else None, **(extra_config or {})},
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

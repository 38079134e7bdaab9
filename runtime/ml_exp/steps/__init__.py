"""The steps: plain functions of the context (``ctx.config``, ``ctx.run``, ``ctx.log``) and the
experiment's functions, one module per step, named as the step (:data:`ml_exp.core.names.STEPS`).

Each step function returns a dict of facts for the manifest (counts, metrics, ...). Where a step
runs (this process, torchrun workers, a SageMaker job) is the backends' business; the paths it
reads and writes come from :mod:`ml_exp.storage.layout`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_exp.core.errors import StepError
from ml_exp.storage.layout import model_key
from ml_exp.storage.store import Run

if TYPE_CHECKING:
    from ml_exp.experiment.context import Context


def local_input(run: Run, relpath: str, scratch_dir: str | Path) -> Path:
    """A local folder holding the complete output ``relpath`` of an earlier step.

    file:// storage: the folder itself (no copy); s3://: downloaded under ``scratch_dir``.
    """
    if not run.is_complete(relpath):
        raise StepError(f"{run.path(relpath)} is missing or incomplete: run the step that writes it first (exp run --run {run.num} --steps <step>).")
    missing = run.missing_files(relpath)
    if missing:  # deleted after it was written: a library would fail on it with a traceback
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise StepError(f"{run.path(relpath)} is damaged: {shown} {'is' if len(missing) == 1 else 'are'} missing. A completed step is never "
                        f"redone in the same run: restore the file(s), or rebuild everything in a new run with `exp run`.")
    local = run.local_dir(relpath)
    if local is not None:
        return local
    destination = Path(scratch_dir) / relpath
    run.get_dir(relpath, str(destination))
    return destination


def tracking_records(ctx: Context, step: str, live: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Per model, where ``step`` is tracked (for the manifest): the wandb run's stable id, name,
    project and entity, and what the live run reported (its URL when online). {} when tracking is off."""
    from ml_exp.steps.tracking import planned

    records = {name: planned(ctx, model_key(name), step) for name in live}
    return {name: {**record, **(live[name] or {})} for name, record in records.items() if record is not None}

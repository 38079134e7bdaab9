"""The steps: plain functions of (ctx, udfs) that read and write the run's storage.

Each step function takes the UDF context (``ctx.config``, ``ctx.run``, ``ctx.log``) and the
experiment's functions, and returns a dict of facts for the manifest (counts, metrics, ...).
Where a step runs (this process, torchrun workers, a SageMaker job) is the backends' business.
"""

from __future__ import annotations

import re
from pathlib import Path

# Storage folders of the steps, relative to the run folder (one place, so every step agrees).
RECONCILED = "data/reconciled"
PREPARED = "data/prepared"
LABELS = "data/prepared/labels.json"
# The processor that encoded a model's data, saved next to it (data/prepared/<model>/processor).
PROCESSOR = "processor"

class StepError(Exception):
    """A problem a user can fix (bad record, malformed encode output, missing input...).

    The message names the function, record or setting and says how to fix it; the step is
    marked failed with it.
    """

def model_key(model_name: str) -> str:
    """Folder-safe name of a model: ``allenai/longformer-base-4096`` -> ``allenai--longformer-base-4096``."""
    key = model_name.strip().replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-.") or "model"

def prepared_dir(model_name: str) -> str:
    return f"{PREPARED}/{model_key(model_name)}"

def model_dir(model_name: str) -> str:
    return f"models/{model_key(model_name)}"

def checkpoint_dir(model_name: str) -> str:
    return f"checkpoints/{model_key(model_name)}"

def inference_dir(model_name: str) -> str:
    return f"inference/{model_key(model_name)}"

def local_input(run, relpath: str, scratch_dir) -> Path:
    """A local folder holding the complete output ``relpath`` of an earlier step.

    file:// storage: the folder itself (no copy); s3://: downloaded under ``scratch_dir``.
    """

    if not run.is_complete(relpath):
        raise StepError(f"{run.path(relpath)} is missing or incomplete: run the step that writes it first (exp run --run {run.num} --steps <step>).")
    if not run.store.is_s3:
        return Path(run.local_path_or_url(relpath))
    destination = Path(scratch_dir) / relpath
    run.get_dir(relpath, str(destination))
    return destination

"""Where a step runs: one module per place, each with a ``BACKEND`` (:class:`~ml_exp.backends.base.Backend`).

- ``local`` (:mod:`ml_exp.backends.local`): this machine's processes; training and tuning
  trials in ``NUM_PROCESSES`` torchrun workers (its child half: ``local/worker.py``);
- ``sagemaker`` (:mod:`ml_exp.backends.sagemaker`): SageMaker jobs from the experiment's image
  (its child half, inside the image: ``sagemaker/container.py``).

A backend module is imported only when a run uses it (the SageMaker SDK costs seconds).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml_exp.backends.base import Backend


def backend_for(name: str, experiment_dir: str | os.PathLike[str] | None = None) -> Backend:
    """The backend of the BACKEND setting: ``ml_exp.backends.<name>.BACKEND`` for a built-in one,
    else the ``BACKEND`` of the module ``name`` (a dotted module name, importable from the
    experiment's folder as its five functions are)."""
    from ml_exp.backends.base import Backend

    if "." in name and experiment_dir is not None and str(experiment_dir) not in sys.path:
        sys.path.insert(0, str(experiment_dir))
    module_name = name if "." in name else f"{__name__}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not module_name.startswith(exc.name or "\0"):
            raise
        raise ValueError(f"BACKEND = {name}: no such backend (no module {module_name})") from None
    backend = getattr(module, "BACKEND", None)
    if not isinstance(backend, Backend):
        raise ValueError(
            f"BACKEND = {name}: module {module_name} has no BACKEND that is an ml_exp.backends.base.Backend"
        )
    return backend

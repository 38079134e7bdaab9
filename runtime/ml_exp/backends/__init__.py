"""Where a step runs: one module per place, each with a ``BACKEND`` (:class:`~ml_exp.backends.base.Backend`).

- ``local`` (:mod:`ml_exp.backends.local`): this machine's processes; training and tuning
  trials in ``NUM_PROCESSES`` torchrun workers (its child half: ``local/worker.py``);
- ``sagemaker`` (:mod:`ml_exp.backends.sagemaker`): SageMaker jobs from the experiment's image
  (its child half, inside the image: ``sagemaker/container.py``).

A backend module is imported only when a run uses it (the SageMaker SDK costs seconds).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml_exp.backends.base import Backend


def backend_for(name: str) -> Backend:
    """The backend called ``name`` (the BACKEND setting): ``ml_exp.backends.<name>.BACKEND``."""
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise ValueError(f"BACKEND = {name}: no such backend (no module {__name__}.{name})") from None
    return module.BACKEND

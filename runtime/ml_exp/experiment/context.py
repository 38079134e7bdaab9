"""What the five functions receive as ``ctx``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ml_exp.config import Config

if TYPE_CHECKING:
    from ml_exp.storage.store import Run


@dataclass(frozen=True)
class Context:
    """``ctx.config``: every setting, typed; ``ctx.run``: the run's storage (None outside a run);
    ``ctx.log``: a logger whose lines end up in the step's log; ``ctx.smoke``: a smoke run
    (``exp run --smoke``: a small sample, one short epoch)."""

    config: Config
    run: Run | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ml_exp.experiment"))
    smoke: bool = False

    @property
    def experiment_dir(self) -> Path:
        return self.config.experiment_dir

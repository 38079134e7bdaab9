"""``exp``: a thin command line over the pipeline, one module per group of commands.

- :mod:`.app`: the application, shared options, and how a user's problem is shown;
- :mod:`.run`: ``exp validate``, ``exp run``;
- :mod:`.runs`: ``exp runs``, ``exp compare``;
- :mod:`.production`: ``exp predict``, ``exp serve``, ``exp deploy``, ``exp endpoints``, ``exp undeploy``;
- :mod:`.doctor`: ``exp doctor`` (is the AWS account ready, before spending money);
- :mod:`.models`: ``exp leaderboard``, ``exp register``, ``exp registry``, ``exp approve``, ``exp reject``.
"""

from __future__ import annotations

import os

# each registers its commands on app, in the order `exp --help` lists them
from ml_exp.commands import (
    doctor,  # noqa: E402
    models,  # noqa: E402
    production,  # noqa: E402
    run,  # noqa: E402, I001
    runs,  # noqa: E402
)
from ml_exp.commands.app import app

__all__ = ["app", "doctor", "models", "production", "run", "runs"]

if __name__ == "__main__":  # pragma: no cover
    app(prog_name=os.environ.get("ML_EXP_PROG", "exp"))

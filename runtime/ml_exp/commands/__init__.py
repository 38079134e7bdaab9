"""``exp``: a thin command line over the pipeline, one module per group of commands.

- :mod:`.app`: the application, shared options, and how a user's problem is shown;
- :mod:`.run`: ``exp validate``, ``exp run``;
- :mod:`.runs`: ``exp runs``, ``exp compare``;
- :mod:`.production`: ``exp predict``, ``exp serve``, ``exp deploy``, ``exp endpoints``, ``exp undeploy``;
- :mod:`.doctor`: ``exp doctor`` (is the AWS account ready, before spending money).
"""

from __future__ import annotations

import os

from ml_exp.commands.app import app

# each registers its commands on app, in the order `exp --help` lists them
from ml_exp.commands import run  # noqa: E402, I001
from ml_exp.commands import runs  # noqa: E402
from ml_exp.commands import production  # noqa: E402
from ml_exp.commands import doctor  # noqa: E402

__all__ = ["app", "doctor", "production", "run", "runs"]

if __name__ == "__main__":  # pragma: no cover
    app(prog_name=os.environ.get("ML_EXP_PROG", "exp"))

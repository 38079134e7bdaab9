import sys
from pathlib import Path

import pytest

EXPERIMENT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXPERIMENT_DIR))  # so that `import experiment` finds this experiment's module


@pytest.fixture(scope="session")
def ctx():
    """The context ml-exp passes to the five functions, built from this folder's settings.ini."""
    from ml_exp.testing import make_context

    return make_context(EXPERIMENT_DIR)

"""The toolkit's former name, kept so that experiments generated before it was renamed keep
working: ``from ml_exp import defaults`` is :mod:`ml_exp.toolkit`."""

from ml_exp.toolkit import *  # noqa: F403
from ml_exp.toolkit import __all__  # noqa: F401

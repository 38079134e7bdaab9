"""What a person sees: a terminal or not, how much to say, and library noise kept quiet.

``exp`` sets the verbosity (``-q`` quiet, ``-v`` verbose) in the environment, so the processes it
starts (training workers) say as much as it does.
"""

from __future__ import annotations

import logging
import os
import sys

VERBOSITY_VARIABLE = "ML_EXP_VERBOSITY"
QUIET, NORMAL, VERBOSE = "quiet", "normal", "verbose"
# Quiet unless -v: what libraries print that a person running an experiment does not need.
NOISY_LOGGERS = (
    "matplotlib",
    "PIL",
    "transformers",
    "datasets",
    "accelerate",
    "torch",
    "httpx",
    "urllib3",
    "botocore",
    "boto3",
    "s3fs",
    "aiobotocore",
    "fsspec",
    "filelock",
    "wandb",
    "optuna",
    "sagemaker",
    "numexpr",
)
QUIET_LIBRARIES = {
    "TRANSFORMERS_VERBOSITY": "error",  # load reports, deprecation notes
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets' map/filter bars
    "WANDB_SILENT": "true",
    "TQDM_DISABLE": "1",
}


def interactive() -> bool:
    """A terminal on stderr: progress bars redraw in place (off a terminal: plain lines, no bars)."""
    return sys.stderr.isatty()


def verbosity() -> str:
    value = os.environ.get(VERBOSITY_VARIABLE, NORMAL)
    return value if value in (QUIET, NORMAL, VERBOSE) else NORMAL


def quiet_transformers_integrations() -> None:
    """Import transformers' integrations without their notice when quiet: with WANDB_MODE =
    offline, importing them prints "[INFO] Running in WANDB offline mode" (their own print)."""
    import contextlib
    import io
    import sys

    if verbosity() != QUIET or "transformers.integrations.integration_utils" in sys.modules:
        return
    with contextlib.redirect_stdout(io.StringIO()):
        import transformers.integrations.integration_utils  # noqa: F401


def set_verbosity(level: str) -> None:
    """For this process and the ones it starts."""
    os.environ[VERBOSITY_VARIABLE] = level
    quiet_libraries()


def quiet_libraries() -> None:
    """Unless verbose: library noise off, here and in child processes (environment variables
    they read at import); a setting the user made in the environment wins."""
    if verbosity() == VERBOSE:
        return
    for name, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(name, value)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def setup_logging() -> None:
    """Our log lines: plain off a terminal, rich on one; INFO, WARNING when quiet, DEBUG when verbose."""
    if interactive():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, show_time=False, markup=False)
    else:  # logs and CI: plain lines, no bars redrawn line after line
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        handler = logging.StreamHandler()
        handler.setFormatter(PlainFormatter())
    level = {QUIET: logging.WARNING, VERBOSE: logging.DEBUG}.get(verbosity(), logging.INFO)
    logging.basicConfig(
        level=logging.INFO if level == logging.DEBUG else level, format="%(message)s", handlers=[handler]
    )
    logging.getLogger("ml_exp").setLevel(level)


class PlainFormatter(logging.Formatter):
    """A message as it is; warnings and errors say so in front."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname}: {message}"

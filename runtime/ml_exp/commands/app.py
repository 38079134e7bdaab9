"""The ``exp`` application, its shared options, and the one way a user's problem is shown.

Every command catches :class:`~ml_exp.core.errors.UserError` (and only it) through
:func:`user_errors`: its problems, one line each, exit status 1, no traceback. Anything else is a
bug and keeps its traceback. Heavy modules are imported inside the commands, so that
``exp --help`` starts fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from ml_exp import __version__

app = typer.Typer(
    name="exp",
    help="Run isolated, reproducible transformer classification experiments (ml-exp).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's help formatting costs 65 ms of start-up (docs/benchmarks.md)
)

ExperimentDir = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-C",
        envvar="ML_EXP_EXPERIMENT_DIR",
        help="Experiment folder (the one with settings.ini).",
        file_okay=False,
        exists=True,
    ),
]
RunOption = Annotated[int, typer.Option("--run", min=1, help="The run whose model to use.")]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="A model of the run (default: its best on the comparison metric).")
]
NOTHING_DONE = "nothing was run or written"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ml-exp {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run isolated, reproducible transformer classification experiments (ml-exp)."""


def print_problems(problems: list, done: str = NOTHING_DONE, heading: str = "") -> None:
    """Every text literally (settings, records and exceptions may hold '[...]', which rich would
    read as markup); ``done`` says what was done anyway."""
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, highlight=False)
    console.print(
        Text.assemble((heading or f"{len(problems)} problem(s) found", "bold red"), f" ({done}):"), soft_wrap=True
    )
    for problem in problems:
        console.print(Text.assemble("  ", (str(problem.where), "bold"), f": {problem.message}"), soft_wrap=True)


@contextmanager
def user_errors(where: str) -> Iterator[None]:
    """A problem the user can fix (:class:`~ml_exp.core.errors.UserError`) as its problems and
    exit status 1; ``where`` names the option or setting when the error does not."""
    from ml_exp.core.errors import Problem, UserError

    try:
        yield
    except UserError as exc:
        problems = getattr(exc, "problems", None) or [Problem(exc.where or where, exc.message)]
        print_problems(problems, done=exc.outcome or NOTHING_DONE, heading=exc.heading)
        for line in exc.advice:
            typer.echo(line, err=True)
        raise typer.Exit(1) from None


def announce(message: str) -> None:
    from ml_exp.core.console import QUIET, verbosity

    if verbosity() != QUIET:
        typer.echo(message)

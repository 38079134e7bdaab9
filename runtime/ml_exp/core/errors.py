"""The one kind of error a user can fix.

Every problem a user can act on (a setting, a record, a file, a function, a permission) is a
:class:`UserError` whose message says what went wrong, where, and how to fix it; the CLI prints
it as one line and exits 1, without a traceback. Anything else is a bug and keeps its traceback.
Subclasses only say which part of the house raised it.
"""

from __future__ import annotations

from dataclasses import dataclass


class UserError(Exception):
    """A problem the user can fix; the message says what and how, ``where`` names the setting,
    option, file or function when the message alone does not (the CLI shows it first).

    How the CLI shows it: ``heading`` (default: how many problems), ``outcome`` (what was done
    anyway; default: nothing was run or written) and ``advice``, lines printed after the problems.
    """

    heading: str = ""
    outcome: str = ""
    advice: tuple[str, ...] = ()

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.message, self.where = message, where


@dataclass(frozen=True)
class Problem:
    """One thing wrong, named by where it is (a setting, a function, a file) with what is wrong and how to fix it."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ProblemsFound(UserError):
    """Every problem found at once (settings, the five functions, validation): nothing was run."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))
        self.message, self.where = str(self), ""


class StepError(UserError):
    """A step cannot go on (bad record, malformed encode output, missing input...): the message
    names the function, record or setting and says how to fix it; the step is marked failed with it."""

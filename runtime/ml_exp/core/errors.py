"""The one kind of error a user can fix.

Every problem a user can act on (a setting, a record, a file, a function, a permission) is a
:class:`UserError` whose message says what went wrong, where, and how to fix it; the CLI prints
it as one line and exits 1, without a traceback. Anything else is a bug and keeps its traceback.
Subclasses only say which part of the house raised it.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message says what, where and how."""


class StepError(UserError):
    """A step cannot go on (bad record, malformed encode output, missing input...): the message
    names the function, record or setting and says how to fix it; the step is marked failed with it."""

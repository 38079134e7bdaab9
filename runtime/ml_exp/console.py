"""What a person at a terminal sees, as opposed to logs and CI."""

from __future__ import annotations

import sys


def interactive() -> bool:
    """A terminal on stderr: progress bars redraw in place (off a terminal: plain lines, no bars)."""
    return sys.stderr.isatty()

"""Text in the PNGs the steps draw: literal, never matplotlib's mathtext (a label like ``$5 or
$6`` is drawn as written, and ``$\\frac{$`` cannot break a step), and short (a long label is cut
in the picture; the tables next to it hold it whole)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
LABEL_MAX = 32  # characters of a label on an axis or in a legend


def short(text: Any, limit: int = LABEL_MAX) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def literal_text(draw: F) -> F:
    """``draw`` (a function making a PNG with matplotlib) with every text drawn literally."""

    @functools.wraps(draw)
    def literally(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return draw(*args, **kwargs)

    return literally  # type: ignore[return-value]

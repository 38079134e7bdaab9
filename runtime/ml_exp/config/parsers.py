"""Value parsers for settings: text as written in settings.ini -> a typed value.

Pure and standard-library only (CLI start-up stays light). Each parser raises ``ValueError``
with a message that says what is wrong and how to fix it; :mod:`ml_exp.config` adds the key
and where the text came from. ``parse_int(1)``-style factories return a parser.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from ml_exp.core.names import EXPERIMENT_NAME_MAX, EXPERIMENT_NAME_RE, S3_BUCKET_RE

Parser = Callable[[str], Any]

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE | FALSE:
        return value in TRUE
    raise ValueError(f"{raw!r} is not true/false; write true or false")


# The largest whole number of any setting: what numpy's seeds, torch and SageMaker's int32 fields take.
INT_MAX = 2**31 - 1


def parse_int(minimum: int | None = None, maximum: int = INT_MAX) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"{value} is too small; use a whole number >= {minimum}")
        if value > maximum:
            raise ValueError(f"{value} is too large; use a whole number <= {maximum}")
        return value

    return parse


def parse_float(low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        if not math.isfinite(value):  # nan, inf, 1e400: no setting means them
            raise ValueError(f"{raw.strip()!r} is not a finite number")
        if low is not None and (value < low or (low_open and value == low)):
            raise ValueError(f"{value} is out of range; use a number {'>' if low_open else '>='} {low}")
        if high is not None and value > high:
            raise ValueError(f"{value} is out of range; use a number <= {high}")
        return value

    return parse


def parse_optional_float(low: float) -> Callable[[str], float | None]:
    """Empty = None; otherwise a number > ``low``."""
    above_low = parse_float(low, low_open=True)

    def parse(raw: str) -> float | None:
        return None if not raw.strip() else above_low(raw)

    return parse


def parse_choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"{raw!r} is not allowed; use one of: {', '.join(allowed)}")
        return value

    return parse


BUILT_IN_BACKENDS = ("local", "sagemaker")
_MODULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def parse_backend(raw: str) -> str:
    """``local``, ``sagemaker``, or the dotted name of a module whose ``BACKEND`` runs tasks
    elsewhere (a team's own job engine: :mod:`ml_exp.backends.base`)."""
    value = raw.strip()
    if value.lower() in BUILT_IN_BACKENDS:
        return value.lower()
    if not _MODULE_PATH.match(value):
        raise ValueError(
            f"{raw!r} is not allowed; use one of: {', '.join(BUILT_IN_BACKENDS)}, "
            "or the dotted name of a module that defines BACKEND (e.g. mycompany.slurm_backend)"
        )
    return value


def parse_optional_choice_int(*allowed: int) -> Callable[[str], int | None]:
    """Empty = None; otherwise one of the whole numbers ``allowed``."""

    def parse(raw: str) -> int | None:
        if not raw.strip():
            return None
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
        if value not in allowed:
            raise ValueError(f"{raw!r} is not allowed; leave it empty or use one of: {', '.join(map(str, allowed))}")
        return value

    return parse


def parse_auto_or_int(raw: str) -> int | None:
    """``auto`` = None (the runtime decides); otherwise a whole number >= 1."""
    if raw.strip().lower() == "auto":
        return None
    try:
        return parse_int(1)(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is neither 'auto' nor a whole number >= 1") from None


def parse_text(raw: str) -> str:
    return raw.strip()


def parse_pattern(regex: str, what: str, optional: bool = True) -> Callable[[str], str]:
    """The text, matched as a whole against ``regex``; ``what`` names a good value in the error."""
    compiled = re.compile(regex)

    def parse(raw: str) -> str:
        value = raw.strip()
        if not value and optional:
            return ""
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return parse


def parse_list(item: Callable[[str], str] = parse_text) -> Callable[[str], tuple[str, ...]]:
    """Comma separated; empty entries are dropped, each other one goes through ``item``."""

    def parse(raw: str) -> tuple[str, ...]:
        return tuple(item(part) for part in raw.split(",") if part.strip())

    return parse


def parse_experiment_name(raw: str) -> str:
    value = raw.strip()
    if len(value) > EXPERIMENT_NAME_MAX:
        raise ValueError(
            f"{value!r} is {len(value)} characters long; use at most {EXPERIMENT_NAME_MAX} (it heads S3 paths and "
            "SageMaker job names)"
        )
    if not re.fullmatch(EXPERIMENT_NAME_RE, value):
        raise ValueError(f"{value!r} is not a name of letters and digits joined by '-' (e.g. EXP-3333-longformer)")
    return value


def parse_model_names(raw: str) -> tuple[str, ...]:
    names = parse_list()(raw)
    for name in names:
        if re.search(r"\s", name):
            raise ValueError(f"model name {name!r} contains spaces; separate model names with commas")
    if len(set(names)) != len(names):
        raise ValueError("a model name is listed twice; list each model once")
    return names


def parse_split_ratios(raw: str) -> tuple[float, float, float]:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 3:
        raise ValueError(f"{raw!r} needs three numbers: train,validation,test (e.g. 0.8,0.1,0.1)")
    try:
        ratios = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{raw!r} must be three numbers, e.g. 0.8,0.1,0.1") from None
    if not all(0 < r < 1 for r in ratios):  # also NaN, which compares false either way
        raise ValueError(f"{raw!r}: each ratio must be between 0 and 1 (exclusive)")
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"{raw!r} sums to {sum(ratios):g}; the three ratios must sum to 1")
    return ratios  # type: ignore[return-value]


_S3_BUCKET = re.compile(S3_BUCKET_RE)


def parse_storage_uri(raw: str) -> str:
    """``file://<path>`` or ``s3://bucket[/prefix]``, without a trailing '/' (a relative file://
    path is resolved against the experiment folder by the config, not here)."""
    value = raw.strip()
    if not value:
        raise ValueError("is empty; use file://.exp-store (local disk) or s3://bucket/prefix")
    if value.startswith("s3://"):
        bucket = value[5:].split("/", 1)[0]
        if not _S3_BUCKET.fullmatch(bucket):
            raise ValueError(f"{bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
        return value.rstrip("/")
    if value.startswith("file://"):
        return value.rstrip("/") or value
    raise ValueError(f"{value!r} must start with file:// (local disk) or s3:// (S3)")


_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*[=:]")


def indented_settings(text: str, known: frozenset[str], free_form: set[str]) -> list[tuple[int, str, str, str]]:
    """Indented lines of an ini text that look like ``KEY = value`` for a ``known`` key, as
    (line number, KEY, the line, the key whose value it continues). Under a ``free_form`` key
    (its value spans lines by design, with lower-case terms) only an upper-case key counts."""
    found, current = [], None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;[":
            continue
        match = _KEY_LINE.match(stripped)
        if not line[0].isspace():
            current = match.group(1).upper() if match else None
            continue
        if current is None or not match or match.group(1).upper() not in known:
            continue
        if current in free_form and match.group(1) != match.group(1).upper():
            continue
        found.append((number, match.group(1).upper(), stripped, current))
    return found


def parse_threshold_rule(value: str) -> tuple[str, float]:
    """``f1`` -> ("f1", 0); ``precision:0.95`` -> ("precision", 0.95); ``0.5`` -> ("fixed", 0.5)."""
    text = str(value).strip().lower()
    if text == "f1":
        return "f1", 0.0
    kind, _, number = text.partition(":") if text.startswith("precision") else ("fixed", "", text)
    try:
        target = float(number)
    except ValueError:
        target = float("nan")
    if not 0.0 < target < 1.0:  # also false for NaN
        raise ValueError(
            f"LABEL_THRESHOLDS = {value!r}: use f1 (each label's threshold maximises its F1 on the validation "
            "split), precision:<p> with 0 < p < 1 (the lowest threshold reaching that precision), or one "
            "probability 0 < t < 1 for every label"
        )
    return kind, target


def parse_label_thresholds(raw: str) -> str:
    """LABEL_THRESHOLDS: ``f1``, ``precision:<p>`` or one probability, as canonical text."""
    kind, target = parse_threshold_rule(raw)
    return "f1" if kind == "f1" else (f"precision:{target:g}" if kind == "precision" else f"{target:g}")


def parse_review_precision(raw: str) -> float | None:
    """REVIEW_TARGET_PRECISION: empty = off, else a precision 0 < p <= 1."""
    if not raw.strip():
        return None
    value = parse_float(0.0, 1.0, low_open=True)(raw)
    return value

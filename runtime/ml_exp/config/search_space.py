"""TUNING_SPACE: the hyper-parameter search space, written readably in settings.ini.

One term per hyper-parameter, separated by ``;`` or new lines::

    TUNING_SPACE = learning_rate = log-uniform(1e-5, 5e-4); per_device_train_batch_size = choice(8, 16, 32)
                   num_train_epochs = int(2, 5); warmup_ratio = uniform(0, 0.2)

Distributions: ``uniform(low, high)``, ``log-uniform(low, high)`` (low > 0), ``int(low, high)``
(inclusive), ``log-int(low, high)``, ``choice(a, b, ...)``. Names are the training settings in
lower case (as in transformers.TrainingArguments); every value the space can produce must be a
valid value of that setting. Pure: no optuna or SageMaker import here (they map it themselves).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ml_exp.config import SETTINGS

TUNABLE = (
    "learning_rate",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "warmup_ratio",
    "weight_decay",
)
KINDS = ("uniform", "log-uniform", "int", "log-int", "choice")
_TERM = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)\s*=\s*(?P<kind>[A-Za-z-]+)\s*\((?P<args>[^()]*)\)\s*$")
_PARSERS = {s.key.lower(): s.parse for s in SETTINGS}


class SearchSpaceError(ValueError):
    """Every bad term of TUNING_SPACE, one per line, each naming the term."""


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[float | int, ...] = ()

    @property
    def is_int(self) -> bool:
        return self.kind in ("int", "log-int") or (
            self.kind == "choice" and all(isinstance(c, int) for c in self.choices)
        )

    @property
    def log(self) -> bool:
        return self.kind.startswith("log-")

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name} = choice({', '.join(map(str, self.choices))})"
        return f"{self.name} = {self.kind}({_number(self.low)}, {_number(self.high)})"


def parse_space(text: str) -> tuple[Parameter, ...]:
    """Parse TUNING_SPACE; raise :class:`SearchSpaceError` listing every bad term."""
    terms = [t.strip() for t in re.split(r"[;\n]", text) if t.strip()]
    problems: list[str] = []
    parameters: list[Parameter] = []
    for term in terms:
        try:
            parameters.append(_parse_term(term))
        except ValueError as exc:
            problems.append(f"{term!r}: {exc}")
    names = [p.name for p in parameters]
    problems += [
        f"{name!r} appears twice; give each hyper-parameter one term"
        for name in sorted({n for n in names if names.count(n) > 1})
    ]
    if not terms:
        problems.append("is empty; write terms such as learning_rate = log-uniform(1e-5, 5e-4)")
    if problems:
        raise SearchSpaceError("\n".join(problems))
    return tuple(parameters)


def _parse_term(term: str) -> Parameter:
    match = _TERM.match(term)
    if not match:
        raise ValueError("write <name> = <distribution>(<arguments>), e.g. learning_rate = log-uniform(1e-5, 5e-4)")
    name, kind = match["name"].lower(), match["kind"].lower()
    if name not in TUNABLE:
        raise ValueError(f"{name} cannot be tuned; tunable: {', '.join(TUNABLE)}")
    if kind not in KINDS:
        raise ValueError(f"unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
    values = [_value(a) for a in match["args"].split(",") if a.strip()]
    if kind == "choice":
        if len(values) < 2:
            raise ValueError("choice needs at least two values")
        for value in values:
            _check_value(name, value)
        return Parameter(name, kind, choices=tuple(values))
    if len(values) != 2:
        raise ValueError(f"{kind} takes two numbers: low, high")
    low, high = values
    if not low < high:
        raise ValueError(f"low ({_number(low)}) must be smaller than high ({_number(high)})")
    if kind.startswith("log-") and low <= 0:
        raise ValueError(f"{kind} needs low > 0")
    if kind.endswith("int") and not (float(low).is_integer() and float(high).is_integer()):
        raise ValueError(f"{kind} takes whole numbers")
    for value in (low, high):
        _check_value(name, value)
    if kind.endswith("int"):
        return Parameter(name, kind, int(low), int(high))
    return Parameter(name, kind, float(low), float(high))


def _value(text: str) -> float | int:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _check_value(name: str, value: float | int) -> None:
    """A value the space can produce must be valid for the setting itself."""
    try:
        _PARSERS[name](str(value))
    except ValueError as exc:
        raise ValueError(f"{_number(value)} is not a valid {name.upper()}: {exc}") from None


def _number(value: float | int | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def as_settings(params: dict[str, float | int]) -> dict[str, str]:
    """A trial's values as settings overrides (environment variables), e.g. LEARNING_RATE=3e-05."""
    return {name.upper(): (repr(float(v)) if isinstance(v, float) else str(int(v))) for name, v in params.items()}

"""The types of every manifest field the commands read: a manifest that is valid JSON but holds
something else (steps as a list, a metric as a string, a truncated copy...) is a damaged run,
said once with where it is wrong, never a traceback deep inside a command.

Every field is optional (a run just claimed has few); when present it must have its type.
"""

from __future__ import annotations

import math
from typing import Any

SCALAR = (str, int, float, bool, type(None))
TEXT = (str, type(None))
NUMBER = (int, float, type(None))

# top-level field -> the types it may have
TOP = {
    "experiment": (str,),
    "run": (int,),
    "created_at": TEXT,
    "status": TEXT,
    "smoke": (bool, type(None)),
    "command": (list,),
    "settings": (dict,),
    "settings_from_environment": (list,),
    "environment": (dict,),
    "overrides": (dict,),
    "git": (dict, type(None)),
    "code": (dict, type(None)),
    "template": (dict, type(None)),
    "versions": (dict,),
    "steps": (dict,),
    "sagemaker_jobs": (dict,),
    "deployments": (list,),
}
# a step's field -> its types
STEP = {
    "status": TEXT,
    "started_at": TEXT,
    "ended_at": TEXT,
    "duration_s": NUMBER,
    "attempt": (int,),
    "error": TEXT,
    "fingerprint": TEXT,
    "metrics": (dict, type(None)),
    "tracking": (dict, str, type(None)),
    "code": (dict, type(None)),
}


def _kind(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "a number", float: "a number", bool: "true/false", dict: "an object"}
    names.update({list: "a list", type(None): "null"})
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # JSON true is no number
    return isinstance(value, types)


def _text_map(value: Any) -> bool:
    """An object of text values (code.sources: each file's digest)."""
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """Where ``manifest`` holds a type the commands cannot read (empty: none)."""
    found = [
        f"{key} is not {_kind(types)}"
        for key, types in TOP.items()
        if key in manifest and not _is(manifest[key], types)
    ]
    for key, kinds in (("settings", SCALAR), ("environment", SCALAR), ("overrides", SCALAR)):
        values = manifest.get(key)
        if isinstance(values, dict):  # readers take str() of a setting: any single value will do
            found += [f"{key}.{name} is not {_kind(kinds)}" for name, v in values.items() if not _is(v, kinds)]
    for key in ("git", "code", "versions"):
        if isinstance(manifest.get(key), dict):
            found += [
                f"{key}.{name} is an object or list"
                for name, v in manifest[key].items()
                if not _is(v, SCALAR) and not (key == "code" and name == "sources" and _text_map(v))
            ]
    steps = manifest.get("steps")
    for step, info in steps.items() if isinstance(steps, dict) else ():
        if not isinstance(info, dict):
            found.append(f"steps.{step} is not an object")
            continue
        found += [
            f"steps.{step}.{key} is not {_kind(types)}"
            for key, types in STEP.items()
            if key in info and not _is(info[key], types)
        ]
        for model, values in (info.get("metrics") or {}).items() if isinstance(info.get("metrics"), dict) else ():
            if not isinstance(values, dict):
                found.append(f"steps.{step}.metrics.{model} is not an object")
            elif not all(_is(v, NUMBER) for v in values.values()):
                found.append(f"steps.{step}.metrics.{model} holds a value that is not a number")
    jobs = manifest.get("sagemaker_jobs")
    for name, job in jobs.items() if isinstance(jobs, dict) else ():
        if not isinstance(job, dict) or not all(_is(job.get(k), NUMBER) for k in ("billable_seconds", "cost_usd")):
            found.append(f"sagemaker_jobs.{name} is not an object with numbers")
    deployments = manifest.get("deployments")
    if isinstance(deployments, list) and not all(isinstance(d, dict) for d in deployments):
        found.append("deployments holds an entry that is not an object")
    return found


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (null, not NoneType)."""
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", type(None): "null", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None: strict JSON (``json.dumps(...,
    allow_nan=False)``), which scripts reading ``--json`` output can parse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value

"""The experiment's five user-defined functions: loading them and checking them without calling them."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ml_exp.core.errors import Problem, ProblemsFound

# name -> the parameters ml-exp passes, positionally, in this order
SIGNATURES: dict[str, tuple[str, ...]] = {
    "reconcile": ("ctx",),
    "load_processor": ("model_name", "ctx"),
    "encode": ("batch", "processor", "ctx"),
    "load_model": ("model_name", "labels", "ctx"),
    "compute_metrics": ("predictions", "references", "labels", "ctx"),
}
# Optional functions: checked like the five when the module defines them.
OPTIONAL: dict[str, tuple[str, ...]] = {
    "collate": ("rows", "processor", "ctx")  # encoded rows -> a batch of tensors (default: PadCollator)
}


@dataclass(frozen=True)
class Functions:
    """The five functions, ready to call."""

    module: ModuleType
    reconcile: Callable[..., Any]
    load_processor: Callable[..., Any]
    encode: Callable[..., Any]
    load_model: Callable[..., Any]
    compute_metrics: Callable[..., Any]
    collate: Callable[..., Any] | None = None


def load_functions(experiment_dir: Path, module_name: str, keep_loaded: bool = False) -> Functions:
    """Import ``<experiment_dir>/<module_name>.py`` and return its five functions.

    ``keep_loaded`` leaves the module importable by name afterwards (in ``sys.modules``, its
    folder on ``sys.path``), as worker processes that unpickle the functions need; without it
    nothing of the experiment stays behind (``exp validate``).
    Raises :class:`ProblemsFound` naming every problem (import failure, missing function, wrong
    parameters, body still a stub).
    """
    module, problems = _import(Path(experiment_dir), module_name, keep_loaded)
    if module is not None:
        problems += check_functions(module, module_name)
    if problems:
        raise ProblemsFound(problems)
    optional = {name: getattr(module, name, None) for name in OPTIONAL}
    return Functions(module, **{name: getattr(module, name) for name in SIGNATURES}, **optional)


def check_experiment_functions(experiment_dir: Path, module_name: str) -> list[Problem]:
    """Every problem with the experiment's functions (empty when they are ready to run)."""
    try:
        load_functions(experiment_dir, module_name)
    except ProblemsFound as exc:
        return exc.problems
    return []


def _import(
    experiment_dir: Path, module_name: str, keep_loaded: bool = False
) -> tuple[ModuleType | None, list[Problem]]:
    path = experiment_dir / (module_name.replace(".", "/") + ".py")
    label = path.name
    if not path.is_file():
        return None, [
            Problem(
                "UDF_MODULE",
                f"{path} not found; create {label} with the five functions or point UDF_MODULE at your module",
            )
        ]
    # The module may import its siblings (e.g. a data helper), so the experiment folder goes on
    # the path; siblings imported here are forgotten afterwards so that another experiment's
    # modules of the same name never shadow them.
    before = set(sys.modules)
    sys.path.insert(0, str(experiment_dir))
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        if keep_loaded:
            sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module, []
    except Exception as exc:  # the user's code can raise anything at import time
        if keep_loaded:
            _forget(experiment_dir, before)
            sys.modules.pop(module_name, None)
        where = _user_frame(exc, path)
        return None, [Problem(label, f"cannot be imported{where}: {type(exc).__name__}: {exc}")]
    finally:
        if not keep_loaded:
            _forget(experiment_dir, before)


def _forget(experiment_dir: Path, before: set[str]) -> None:
    """Undo an import: the folder leaves sys.path and its modules leave sys.modules."""
    if str(experiment_dir) in sys.path:
        sys.path.remove(str(experiment_dir))
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if file.startswith(str(experiment_dir)):
            del sys.modules[name]


def user_error(what: str, exc: BaseException, experiment_dir: Path) -> str:
    """ "<what> raised KeyError: 'x' (at experiment.py line 12, in encode)"."""
    return f"{what} raised {type(exc).__name__}: {exc}{user_frames(exc, experiment_dir)}"


def user_frames(exc: BaseException, experiment_dir: Path) -> str:
    """ " (at experiment.py line 12, in encode)": where an exception of the user's code arose, in
    the user's own files (the experiment folder), not in the runtime's; "" when none is."""
    folder = str(Path(experiment_dir).resolve())
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(folder + "/")]
    where = " -> ".join(f"{Path(f.filename).relative_to(folder)} line {f.lineno}, in {f.name}" for f in frames[-3:])
    return f" (at {where})" if where else ""


def _user_frame(exc: BaseException, path: Path) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f" (line {exc.lineno})"
    return f" (line {frames[-1].lineno})" if frames else ""


def check_functions(module: ModuleType, module_name: str) -> list[Problem]:
    problems: list[Problem] = []
    for name, params in {**SIGNATURES, **OPTIONAL}.items():
        where = f"{module_name}.{name}"
        expected = f"def {name}({', '.join(params)})"
        function = getattr(module, name, None)
        if function is None:
            if name not in OPTIONAL:
                problems.append(Problem(where, f"is missing; define {expected}"))
            continue
        if not callable(function):
            problems.append(Problem(where, f"is not a function; define {expected}"))
            continue
        try:
            inspect.signature(function).bind(*params)
        except TypeError:
            problems.append(
                Problem(where, f"has parameters {inspect.signature(function)}; ml-exp calls it as {expected}")
            )
            continue
        except ValueError:  # no signature (a builtin): nothing more to check
            continue
        if is_stub(function):
            problems.append(Problem(where, "is not implemented yet (its body is only a stub); write its body"))
    return problems


def is_stub(function: Callable[..., Any]) -> bool:
    """True when the body is only a docstring, ``pass``, ``...`` or ``raise NotImplementedError``."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return False
    tree = ast.parse(source)
    definition = tree.body[0]
    if not isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    return all(_is_stub_statement(statement) for statement in definition.body)


def _is_stub_statement(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return statement.value.value is Ellipsis or isinstance(statement.value.value, str)
    if isinstance(statement, ast.Raise) and statement.exc is not None:
        raised = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
        return isinstance(raised, ast.Name) and raised.id == "NotImplementedError"
    return False

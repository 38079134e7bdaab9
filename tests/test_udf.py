"""The five functions: loading, signature checks and stub detection, without calling them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ml_exp.experiment.functions import SIGNATURES, check_experiment_functions, load_functions
from ml_exp.core.errors import ProblemsFound

REAL_BODY = "    return None\n"
STUB_BODIES = {
    "pass": "    pass\n",
    "ellipsis": "    ...\n",
    "docstring": '    """Only a docstring."""\n',
    "docstring+pass": '    """Doc."""\n    pass\n',
    "raise-class": "    raise NotImplementedError\n",
    "raise-call": '    """Doc."""\n    raise NotImplementedError("write me")\n',
}


def write_module(directory: Path, bodies: dict[str, str] | None = None, header: str = "", name: str = "experiment") -> Path:
    bodies = bodies or {}
    parts = [header]
    for function, params in SIGNATURES.items():
        parts.append(f"def {function}({', '.join(params)}):\n{bodies.get(function, REAL_BODY)}\n")
    (directory / f"{name}.py").write_text("\n".join(parts))
    return directory


def test_complete_module_loads(tmp_path):
    udfs = load_functions(write_module(tmp_path), "experiment")
    assert udfs.compute_metrics(None, None, None, None) is None


@pytest.mark.parametrize("function", list(SIGNATURES))
@pytest.mark.parametrize("stub", list(STUB_BODIES))
def test_each_stub_is_named(tmp_path, function, stub):
    problems = check_experiment_functions(write_module(tmp_path, {function: STUB_BODIES[stub]}), "experiment")
    assert [p.where for p in problems] == [f"experiment.{function}"]
    assert "not implemented" in problems[0].message


def test_all_five_stubs_in_one_report(tmp_path):
    problems = check_experiment_functions(write_module(tmp_path, {f: STUB_BODIES["raise-call"] for f in SIGNATURES}), "experiment")
    assert [p.where for p in problems] == [f"experiment.{f}" for f in SIGNATURES]


@pytest.mark.parametrize(
    "body",
    [
        '    """Doc."""\n    return {"accuracy": 1.0}\n',
        "    if ctx:\n        raise NotImplementedError\n    return 1\n",
        "    raise ValueError('not a stub: a deliberate error')\n",
        "    yield from ()\n",
    ],
)
def test_real_bodies_are_not_stubs(tmp_path, body):
    assert check_experiment_functions(write_module(tmp_path, {"reconcile": body}), "experiment") == []


def test_missing_function_and_wrong_parameters(tmp_path):
    write_module(tmp_path)
    source = (tmp_path / "experiment.py").read_text()
    source = source.replace("def load_model(model_name, labels, ctx):", "def load_model(model_name):")
    source = source.replace("def encode(batch, processor, ctx):", "def encoder(batch, processor, ctx):")
    (tmp_path / "experiment.py").write_text(source)
    problems = {p.where: p.message for p in check_experiment_functions(tmp_path, "experiment")}
    assert set(problems) == {"experiment.encode", "experiment.load_model"}
    assert "def encode(batch, processor, ctx)" in problems["experiment.encode"]
    assert "load_model(model_name, labels, ctx)" in problems["experiment.load_model"]


def test_defaults_and_star_args_are_accepted(tmp_path):
    write_module(tmp_path)
    path = tmp_path / "experiment.py"
    path.write_text(path.read_text().replace("def encode(batch, processor, ctx):", "def encode(batch, processor, ctx=None, *args, **kwargs):"))
    assert check_experiment_functions(tmp_path, "experiment") == []


def test_import_error_names_file_and_line(tmp_path):
    write_module(tmp_path, header="import json\nimport not_a_real_package_xyz\n")
    [problem] = check_experiment_functions(tmp_path, "experiment")
    assert problem.where == "experiment.py"
    assert "line 2" in problem.message and "not_a_real_package_xyz" in problem.message


def test_syntax_error_names_line(tmp_path):
    (tmp_path / "experiment.py").write_text("def reconcile(ctx):\n    return [\n")
    [problem] = check_experiment_functions(tmp_path, "experiment")
    assert problem.where == "experiment.py" and "SyntaxError" in problem.message


def test_missing_module_names_udf_module(tmp_path):
    [problem] = check_experiment_functions(tmp_path, "experiment")
    assert problem.where == "UDF_MODULE" and "experiment.py" in problem.message


def test_sibling_modules_of_two_experiments_do_not_shadow_each_other(tmp_path):
    for name in ("one", "two"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "helper.py").write_text(f"NAME = {name!r}\n")
        write_module(directory, header="import helper\n", bodies={"reconcile": "    return helper.NAME\n"})
    assert load_functions(tmp_path / "one", "experiment").reconcile(None) == "one"
    assert load_functions(tmp_path / "two", "experiment").reconcile(None) == "two"


def test_udf_error_lists_every_problem(tmp_path):
    write_module(tmp_path, {"reconcile": STUB_BODIES["pass"], "encode": STUB_BODIES["ellipsis"]})
    with pytest.raises(ProblemsFound) as caught:
        load_functions(tmp_path, "experiment")
    assert "experiment.reconcile" in str(caught.value) and "experiment.encode" in str(caught.value)


def test_decorated_function_is_checked_by_its_body(tmp_path):
    header = textwrap.dedent(
        """
        import functools

        def traced(function):
            @functools.wraps(function)
            def wrapper(*args, **kwargs):
                return function(*args, **kwargs)
            return wrapper
        """
    )
    write_module(tmp_path, header=header)
    path = tmp_path / "experiment.py"
    path.write_text(path.read_text().replace("def reconcile(ctx):\n    return None", "@traced\ndef reconcile(ctx):\n    pass"))
    assert [p.where for p in check_experiment_functions(tmp_path, "experiment")] == ["experiment.reconcile"]

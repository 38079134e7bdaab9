"""The shape of the runtime package, read from its source: layers import downwards only, no module
reaches into another's private names, every run path lives in the layout module, the pipeline
knows no backend, and no module grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "runtime" / "ml_exp"
# config -> store/layout -> steps -> backends -> pipeline -> cli; a module may import its own
# layer or a lower one, never a higher one (function-level imports included).
LAYERS = [
    {"ml_exp", "ml_exp.names", "ml_exp.parsers", "ml_exp.console", "ml_exp.metrics"},
    {"ml_exp.config_rules", "ml_exp.config"},
    {"ml_exp.layout", "ml_exp.storage_errors", "ml_exp.run_folder", "ml_exp.store", "ml_exp.lease", "ml_exp.context", "ml_exp.udf",
     "ml_exp.manifest", "ml_exp.search_space", "ml_exp.tracking", "ml_exp.validate", "ml_exp.defaults", "ml_exp.pdf"},
    {"ml_exp.steps", "ml_exp.serving"},
    {"ml_exp.backends"},
    {"ml_exp.pipeline", "ml_exp.runs", "ml_exp.summary", "ml_exp.testing", "ml_exp.compare", "ml_exp.production"},
    {"ml_exp.cli"},
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    candidates = [(len(prefix), i) for i, layer in enumerate(LAYERS) for prefix in layer
                  if module == prefix or module.startswith(prefix + ".")]
    assert candidates, f"{module} is in no layer of this test; add it to LAYERS"
    return max(candidates)[1]


def _imports(tree: ast.AST, module: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every ml_exp import, relative ones resolved."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.split(".")[0] == "ml_exp"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: len(module.split(".")) - node.level + (1 if MODULES[module].name == "__init__.py" else 0)]
                base = ".".join([*package, *([base] if base else [])])
            if base.split(".")[0] == "ml_exp":
                found.append((base, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    tree = ast.parse(MODULES[module].read_text())
    upward = [target for target, _ in _imports(tree, module) if _layer(target) > _layer(module)]
    assert not upward, f"{module} (layer {_layer(module)}) imports from a higher layer: {upward}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_uses_another_modules_private_names(module):
    tree = ast.parse(MODULES[module].read_text())
    taken = [f"{target}.{name}" for target, names in _imports(tree, module) for name in names
             if name.startswith("_") and not name.startswith("__") and target != module]
    aliases = {}  # local name -> ml_exp module, for `import ml_exp.x as y` / `from ml_exp import x`
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({(a.asname or a.name): a.name for a in node.names if a.name.startswith("ml_exp")})
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ml_exp"):
            aliases.update({(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES})
    reached = [f"{aliases[n.value.id]}.{n.attr}" for n in ast.walk(tree)
               if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
               and n.attr.startswith("_") and not n.attr.startswith("__")]
    assert not taken + reached, f"{module} uses private names of other modules: {taken + reached}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= 400, f"{module} has {lines} lines; split it"


def test_run_paths_live_in_the_layout_module_only():
    for module, path in MODULES.items():
        if module != "ml_exp.layout":
            assert "tuning/" not in path.read_text(), f"{module} spells a path of the run layout; use ml_exp.layout"


def test_the_pipeline_knows_no_backend():
    source = MODULES["ml_exp.pipeline"].read_text()
    for word in ("sagemaker", "SageMaker", "torchrun", "config.backend ==", '"local"'):
        assert word not in source, f"ml_exp.pipeline mentions {word!r}: what differs by backend belongs in ml_exp.backends"


def test_every_backend_module_offers_its_backend():
    from ml_exp.backends import backend_for
    from ml_exp.backends.base import Backend
    from ml_exp.config import SETTINGS

    choices = next(s for s in SETTINGS if s.key == "BACKEND")
    for name in ("local", "sagemaker"):
        backend = backend_for(name)
        assert isinstance(backend, Backend) and backend.name == name
        assert choices.parse(name) == name
    with pytest.raises(ValueError, match="no such backend"):
        backend_for("kubernetes")


def test_one_name_per_step():
    from ml_exp import layout
    from ml_exp.backends.sagemaker.jobs import JOB_STEPS, job_name
    from ml_exp.config import KNOWN_KEYS
    from ml_exp.names import STEP_NAMES, STEPS

    for step in STEPS:
        assert f"RUN_{step.name.upper()}" in KNOWN_KEYS
        assert (PACKAGE / "steps" / f"{step.name}.py").is_file()
    assert layout.tuning_dir("m").split("/")[0] == "tuning" and layout.inference_dir("m").split("/")[0] == "inference"
    assert set(JOB_STEPS) == set(STEP_NAMES) - {"reconciliation"}
    for step in JOB_STEPS:
        token = next(s.token for s in STEPS if s.name == step)
        assert f"-r3-{token}-" in job_name("EXP-1", 3, step, "m", token="t")

"""The experiment's code travels in model.tar.gz (code/): the CPU serving image holds no
experiment, so an endpoint's predictor reads the five functions from there."""

from __future__ import annotations

import tarfile
from ml_exp.serving.bundle import CODE, Bundle, code_files
from ml_exp.storage.layout import SERVING_INFO
from tests.bake import bake


def test_the_code_is_settings_requirements_modules_and_packages(tmp_path):
    project = bake(tmp_path, ticket="EXP-96", model_slug="code")
    (project / "helpers").mkdir()
    (project / "helpers" / "__init__.py").write_text("")
    (project / "helpers" / "text.py").write_text("CLEAN = True\n")
    (project / "data").mkdir()
    (project / "data" / "big.csv").write_text("id,text\n")
    (project / ".exp-store").mkdir(exist_ok=True)
    found = {p.as_posix() for p in code_files(project)}
    assert {"settings.ini", "requirements-extra.txt", "experiment.py", "demo_documents.py"} <= found
    assert {"helpers/__init__.py", "helpers/text.py"} <= found
    assert not [p for p in found if p.startswith(("tests/", "data/", ".", "scripts/"))], sorted(found)


def test_the_archive_holds_the_model_and_the_code(tmp_path):
    project = bake(tmp_path, ticket="EXP-97", model_slug="pack")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    archive = Bundle(model, None, {"labels": ["a"], "fields": {}, "settings": {}}).pack(tmp_path / "model.tar.gz", project)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"config.json", SERVING_INFO} <= names
    assert {f"{CODE}/experiment.py", f"{CODE}/settings.ini", f"{CODE}/demo_documents.py"} <= names
    assert not [n for n in names if n.startswith(f"{CODE}/tests")]

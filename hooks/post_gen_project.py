"""Finish the generated repo: keep the chosen example's files, then print the next steps."""

import shutil
from pathlib import Path

EXAMPLE = {{ cookiecutter.example | jsonify }}
EXPERIMENT = {{ cookiecutter.experiment_name | jsonify }}

here = Path.cwd()
if EXAMPLE == "blank":
    # The blank experiment.py replaces the demo; the demo's data generator goes.
    shutil.move(str(here / "_blank" / "experiment.py"), str(here / "experiment.py"))
    (here / "demo_documents.py").unlink()
if EXAMPLE == "layout":
    # The layout demo (scanned pages, a tiny LayoutLMv3) replaces the document-types demo.
    for name in ("experiment.py", "demo_pages.py"):
        shutil.move(str(here / "_layout" / name), str(here / name))
    (here / "demo_documents.py").unlink()
shutil.rmtree(here / "_blank")
shutil.rmtree(here / "_layout")

todo = (
    "  $EDITOR experiment.py settings.ini   # implement the five functions, check the settings\n"
    if EXAMPLE == "blank"
    else "  # experiment.py holds a runnable demo (synthetic scanned pages, a tiny LayoutLMv3)\n"
    if EXAMPLE == "layout"
    else "  # experiment.py holds a runnable demo (synthetic documents, a tiny BERT)\n"
)
print(
    f"\nCreated {EXPERIMENT}/. Next steps:\n"
    f"  cd {EXPERIMENT}\n"
    "  python -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt\n"
    f"{todo}"
    "  exp validate                         # every problem at once, before any compute\n"
    "  exp run                              # the steps switched on in settings.ini\n"
)

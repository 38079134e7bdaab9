"""The template's settings.ini, written from the settings table (``ml_exp.config.Config``).

    python tools/settings_ini.py            # print it
    python tools/settings_ini.py --write    # rewrite {{cookiecutter.experiment_name}}/settings.ini
    python tools/settings_ini.py --check    # exit 1 when the committed file is out of date

``make settings-ini`` runs ``--write``; a test runs the comparison. The settings, their defaults,
groups and help come from the runtime; only what the template adds lives here: the header, the
values filled from the cookiecutter answers, and comment lines that name answers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "runtime"))  # this checkout's table, whatever ml_exp is installed

from ml_exp.config import GROUPS, SECTION, SETTINGS, Setting  # noqa: E402

TEMPLATE_FILE = ROOT / "{{cookiecutter.experiment_name}}" / "settings.ini"
HEADING_WIDTH = 99

HEADER = (
    "# Settings of experiment {{ cookiecutter.experiment_name }}: every step reads this one file.",
    "# Environment variables of the same name override a value here (e.g. RUN_NUM=3 exp run).",
    "# Secrets (WANDB_API_KEY, AWS credentials) never go here: set them in the environment.",
    "# `exp validate` checks all of it before any compute.",
)


def _default(key: str) -> str:
    return next(s.default for s in SETTINGS if s.key == key)


def _demo_or_default(key: str, demo: str, layout: str | None = None) -> str:
    """The document-types demo trains a tiny model quickly; a blank experiment keeps the default;
    the layout demo (a tiny LayoutLMv3 on one-page scans) takes ``layout`` when given."""
    branch = f'{{% elif cookiecutter.example == "layout" %}}{layout}' if layout is not None else ""
    return f'{{% if cookiecutter.example == "document-types" %}}{demo}{branch}{{% else %}}{_default(key)}{{% endif %}}'


# Values the answers give (Jinja, rendered when the experiment is baked); every other setting
# is written with its default.
VALUES = {
    "EXPERIMENT_NAME": "{{ cookiecutter.experiment_name }}",
    "MODEL_NAMES": "{{ cookiecutter.model_names }}",
    "MAX_LENGTH": _demo_or_default("MAX_LENGTH", "64", layout="64"),
    # The demo's documents are long (demo_documents.py): every window at inference; two per
    # document (its first and last) in training, which keeps an epoch short
    "DOCUMENT_STRATEGY": _demo_or_default("DOCUMENT_STRATEGY", "chunks"),
    "CHUNK_STRIDE": _demo_or_default("CHUNK_STRIDE", "16"),
    "MAX_CHUNKS": _demo_or_default("MAX_CHUNKS", "2"),
    # max: one window holds the passage; the mean of ~40 windows drowns it
    "CHUNK_AGGREGATION": _demo_or_default("CHUNK_AGGREGATION", "max"),
    "NUM_TRAIN_EPOCHS": _demo_or_default("NUM_TRAIN_EPOCHS", "6", layout="4"),
    "LEARNING_RATE": _demo_or_default("LEARNING_RATE", "2e-3", layout="2e-3"),
    "PER_DEVICE_TRAIN_BATCH_SIZE": _demo_or_default("PER_DEVICE_TRAIN_BATCH_SIZE", "16", layout="8"),
    "WANDB_PROJECT": "{{ cookiecutter.wandb_project }}",
    "WANDB_ENTITY": "{{ cookiecutter.wandb_entity }}",
    "AWS_REGION": "{{ cookiecutter.aws_region }}",
    "SAGEMAKER_ROLE_ARN": "{{ cookiecutter.sagemaker_role_arn }}",
}
# Lines under a setting's help that name answers ('{%-' keeps an unanswered one from leaving a gap).
NOTES = {
    "STORAGE_URI": (
        "{%- if cookiecutter.s3_bucket %}",
        "# With BACKEND = sagemaker: STORAGE_URI = s3://{{ cookiecutter.s3_bucket }}/ml-exp",
        "{%- endif %}",
    ),
    "IMAGE_URI": (
        "# e.g. <account>.dkr.ecr.<region>.amazonaws.com/{{ cookiecutter.ecr_repository }}:"
        "{{ cookiecutter.experiment_name | lower }}",
    ),
}


def render(
    settings: Iterable[Setting] = SETTINGS,
    values: Mapping[str, str] = VALUES,
    notes: Mapping[str, Iterable[str]] = NOTES,
    header: Iterable[str] = HEADER,
) -> str:
    """settings.ini's text: the header, then group by group a heading and, for each setting, its
    help as comment lines above ``KEY = value`` (the value from ``values``, else the default)."""
    lines = [*header, "", f"[{SECTION}]"]
    group = None
    for s in settings:
        if s.group != group:
            group = s.group
            lines += ["", f"# --- {GROUPS[group]} ".ljust(HEADING_WIDTH, "-")]
        lines += [f"# {line}".rstrip() for line in s.help.splitlines()]
        lines += notes.get(s.key, ())
        lines.append(f"{s.key} = {values.get(s.key, s.default)}".rstrip())
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"rewrite {TEMPLATE_FILE.relative_to(ROOT)}")
    action.add_argument("--check", action="store_true", help="exit 1 when the committed file differs from the table")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        TEMPLATE_FILE.write_text(text, encoding="utf-8")
    elif args.check:
        if TEMPLATE_FILE.read_text(encoding="utf-8") != text:
            print(
                f"{TEMPLATE_FILE.relative_to(ROOT)} is out of date with the settings table; run `make settings-ini`",
                file=sys.stderr,
            )
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

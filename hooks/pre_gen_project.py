"""Refuse bad answers before anything is written: one line per problem, exit status 1.

Cookiecutter renders this file with the answers, then runs it; on a non-zero exit it removes
the half-made output folder. The rules for names the runtime also checks (experiment name,
AWS region, role ARN, S3 bucket, W&B names) are the runtime's own: runtime/ml_exp/names.py,
loaded by its path (nothing need be installed yet), so a new experiment meets `exp validate`.
"""

import importlib.util
import os
import re
import sys
from pathlib import Path

NAMES_FILE = Path("runtime", "ml_exp", "core", "names.py")
# The template's folder: cookiecutter's CLI and API say it; cruft does not, but (like
# cookiecutter) runs hooks from a process that has changed into it.
TEMPLATE_DIR = {{ cookiecutter.get("_repo_dir", "") | jsonify }}


def load_name_rules():
    """ml_exp.core.names from the template being baked, else from the installed runtime.
    Returns (the module, None) or (None, why neither could be loaded)."""
    candidates = [Path(TEMPLATE_DIR)] if TEMPLATE_DIR else []
    try:
        candidates.append(Path(os.readlink(f"/proc/{os.getppid()}/cwd")))
    except OSError:  # no /proc (macOS): the installed runtime is the fallback
        pass
    failures = []
    for path in dict.fromkeys(folder / NAMES_FILE for folder in candidates):
        if not path.is_file():
            failures.append(f"no {path}")
            continue
        spec = importlib.util.spec_from_file_location("ml_exp_names_of_template", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            failures.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        return module, None
    try:
        import ml_exp.core.names
    except ImportError as exc:
        failures.append(f"ml_exp is not installed ({exc})")
        return None, "; ".join(failures)
    return ml_exp.core.names, None


ANSWERS = {
    "ticket": {{ cookiecutter.ticket | jsonify }},
    "model_slug": {{ cookiecutter.model_slug | jsonify }},
    "experiment_name": {{ cookiecutter.experiment_name | jsonify }},
    "example": {{ cookiecutter.example | jsonify }},
    "model_names": {{ cookiecutter.model_names | jsonify }},
    "aws_region": {{ cookiecutter.aws_region | jsonify }},
    "s3_bucket": {{ cookiecutter.s3_bucket | jsonify }},
    "sagemaker_role_arn": {{ cookiecutter.sagemaker_role_arn | jsonify }},
    "ecr_repository": {{ cookiecutter.ecr_repository | jsonify }},
    "wandb_project": {{ cookiecutter.wandb_project | jsonify }},
    "wandb_entity": {{ cookiecutter.wandb_entity | jsonify }},
    "runtime_requirement": {{ cookiecutter.runtime_requirement | jsonify }},
    "description": {{ cookiecutter.description | jsonify }},
    "base_image_registry": {{ cookiecutter.base_image_registry | jsonify }},
}
# Answers written into scripts/*.sh and the Dockerfiles: beyond their own pattern, none may hold
# a character a shell or a Dockerfile reads (quotes, $, `, \\, spaces, ;, newlines...), so that a
# value there is literal text, whatever quotes surround it.
IN_SCRIPTS = ("aws_region", "ecr_repository", "experiment_name", "base_image_registry")
SHELL_SAFE = r"[A-Za-z0-9._:/@+-]*"
# A registry: host[:port][/path], as Docker's reference grammar has it.
REGISTRY = (r"(?=.{1,255}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
            r"(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
# A model name per entry of model_names: a Hub id (org/name) or a name load_model knows.
MODEL_NAME = r"[A-Za-z0-9_.][A-Za-z0-9_./-]{0,199}"
# requirements.txt's one line: a requirement (name[extras] with versions or @ URL), never a pip option.
REQUIREMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[A-Za-z0-9,._-]+\])?(?:\s*(?:[=!<>~]=?=?|===)\s*[A-Za-z0-9.*+!_-]+(?:\s*,\s*(?:[=!<>~]=?=?)\s*[A-Za-z0-9.*+!_-]+)*|\s+@\s+[A-Za-z][A-Za-z0-9+.-]*://[^\s#;]+)?"


def rules(names):
    """(variable, pattern, what a good answer looks like, may it be empty?). Ticket, slug and
    ECR repository are the template's own; the others are the runtime's rules."""
    return [
        ("ticket", r"[A-Z][A-Z0-9]*-[0-9]+",
         "a ticket key such as EXP-3333 (uppercase project key, '-', number)", False),
        ("model_slug", r"[a-z0-9]+(-[a-z0-9]+)*", "lowercase letters and digits joined by single '-', such as "
                                                  "longformer or tiny-bert", False),
        ("experiment_name", names.EXPERIMENT_NAME_RE, "letters and digits joined by '-', at most "
                                                      f"{names.EXPERIMENT_NAME_MAX} characters (it prefixes S3 paths "
                                                      "and SageMaker job names)", False),
        ("example", r"document-types|blank|layout", "document-types, layout (demos) or blank (stubs)", False),
        ("aws_region", names.AWS_REGION_RE, "an AWS region such as us-east-1", False),
        ("s3_bucket", names.S3_BUCKET_RE, "an S3 bucket name: 3-63 lowercase letters, digits, '.', '-'; starts and "
                                          "ends with a letter or digit (or empty)", True),
        ("sagemaker_role_arn", names.ROLE_ARN_RE, "an IAM role ARN such as "
                                                  "arn:aws:iam::123456789012:role/SageMakerRole (or empty)", True),
        ("ecr_repository", r"(?=.{2,256}$)(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*",
         "an ECR repository name: lowercase letters, digits, '.', '_', '-' and '/' separated parts", False),
        ("wandb_project", names.WANDB_PROJECT_RE, "a W&B project name without spaces or / \\ # ? % :", False),
        ("wandb_entity", names.WANDB_ENTITY_RE, "a W&B user or team name (or empty)", True),
        ("runtime_requirement", REQUIREMENT, "a pip requirement for the ml-exp runtime, e.g. "
                                             "ml-exp[train,sagemaker,serve,pdf]==0.1.0 or ml-exp @ file:///path "
                                             "(no pip option, no comment)", False),
        ("description", r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]{0,300}", "one line of at most 300 characters", True),
        ("base_image_registry", REGISTRY, "a registry such as 123456789012.dkr.ecr.us-east-1.amazonaws.com "
                                          "(host, optional :port and /path; no scheme, no credentials)", False),
    ]


# Derived from ticket and model_slug by default: not reported again when those are wrong.
DERIVED = ("experiment_name", "ecr_repository")


def problems(answers, names):
    found = []
    for name, pattern, expected, may_be_empty in rules(names):
        value = answers[name]
        if value == "" and may_be_empty:
            continue
        if name in DERIVED and any(f.startswith(("ticket:", "model_slug:")) for f in found):
            continue
        if name == "base_image_registry" and any(f.startswith("aws_region:") for f in found):
            continue  # its default is made of the region
        if name == "experiment_name" and len(value) > names.EXPERIMENT_NAME_MAX:
            found.append(f"{name}: {value!r} is longer than {names.EXPERIMENT_NAME_MAX} characters; use a shorter "
                         "ticket or model_slug")
        elif not re.fullmatch(pattern, value):
            found.append(f"{name}: {value!r} is not valid; expected {expected}")
    models = [name.strip() for name in answers["model_names"].split(",")]
    if not any(models):
        found.append("model_names: is empty; give at least one model name (comma separated), e.g. tiny-bert")
    elif not all(models) or any(re.search(r"\s", name) for name in models):
        found.append(f"model_names: {answers['model_names']!r} is not a comma separated list of model names (no spaces "
                     "in a name, no empty entries)")
    elif not all(re.fullmatch(MODEL_NAME, name) for name in models):
        found.append(f"model_names: {answers['model_names']!r} is not a comma separated list of model names (letters, "
                     "digits, '_', '.', '-' and '/' as in org/model)")
    reported = {line.split(":")[0] for line in found}
    derived_wrong = reported & {"ticket", "model_slug", "aws_region"}
    for name in IN_SCRIPTS:
        if name in reported or (name in (*DERIVED, "base_image_registry") and derived_wrong):
            continue
        if not re.fullmatch(SHELL_SAFE, answers[name]):
            found.append(f"{name}: {answers[name]!r} holds a character a shell script or Dockerfile would read; use "
                         "letters, digits and . _ : / @ + -")
    return found


if __name__ == "__main__":
    names, why = load_name_rules()
    if names is None:
        print(f"ERROR: template: cannot load the name rules ({NAMES_FILE.as_posix()}): {why}; bake from a complete "
              "ml-exp checkout", file=sys.stderr)
        sys.exit(1)
    found = problems(ANSWERS, names)
    for line in found:
        print(f"ERROR: {line}", file=sys.stderr)
    if found:
        print(f"Nothing was generated ({len(found)} problem(s)); fix the answers and run cookiecutter again.",
              file=sys.stderr)
        sys.exit(1)

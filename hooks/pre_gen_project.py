"""Refuse bad answers before anything is written: one line per problem, exit status 1.

Cookiecutter renders this file with the answers, then runs it; on a non-zero exit it removes
the half-made output folder.
"""

import re
import sys

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
}

# (variable, pattern, what a good answer looks like, may it be empty?)
RULES = [
    ("ticket", r"[A-Z][A-Z0-9]*-[0-9]+", "a ticket key such as EXP-3333 (uppercase project key, '-', number)", False),
    ("model_slug", r"[a-z0-9]+(-[a-z0-9]+)*", "lowercase letters and digits joined by single '-', such as longformer or tiny-bert", False),
    ("experiment_name", r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*", "letters and digits joined by '-', at most 48 characters (it prefixes S3 paths and SageMaker job names)", False),
    ("example", r"document-types|blank", "document-types (a runnable demo) or blank (stubs)", False),
    ("aws_region", r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]", "an AWS region such as us-east-1", False),
    ("s3_bucket", r"(?!xn--)(?!.*\.\.)(?!.*-s3alias$)(?!.*--ol-s3$)(?![0-9.]+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", "an S3 bucket name: 3-63 lowercase letters, digits, '.', '-'; starts and ends with a letter or digit (or empty)", True),
    ("sagemaker_role_arn", r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+", "an IAM role ARN such as arn:aws:iam::123456789012:role/SageMakerRole (or empty)", True),
    ("ecr_repository", r"(?=.{2,256}$)(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*", "an ECR repository name: lowercase letters, digits, '.', '_', '-' and '/' separated parts", False),
    ("wandb_project", r"[^/\\#?%:\s]{1,128}", "a W&B project name without spaces or / \\ # ? % :", False),
    ("wandb_entity", r"[A-Za-z0-9_-]{1,64}", "a W&B user or team name (or empty)", True),
    ("runtime_requirement", r"\S.*", "a pip requirement for the ml-exp runtime, e.g. ml-exp[train,sagemaker]", False),
]


# Derived from ticket and model_slug by default: not reported again when those are wrong.
DERIVED = ("experiment_name", "ecr_repository")


def problems(answers):
    found = []
    for name, pattern, expected, may_be_empty in RULES:
        value = answers[name]
        if value == "" and may_be_empty:
            continue
        if name in DERIVED and any(f.startswith(("ticket:", "model_slug:")) for f in found):
            continue
        if not re.fullmatch(pattern, value):
            found.append(f"{name}: {value!r} is not valid; expected {expected}")
    if len(answers["experiment_name"]) > 48 and not any(f.startswith("experiment_name:") for f in found):
        found.append(f"experiment_name: {answers['experiment_name']!r} is longer than 48 characters; use a shorter ticket or model_slug")
    models = [name.strip() for name in answers["model_names"].split(",")]
    if not any(models):
        found.append("model_names: is empty; give at least one model name (comma separated), e.g. tiny-bert")
    elif not all(models) or any(re.search(r"\s", name) for name in models):
        found.append(f"model_names: {answers['model_names']!r} is not a comma separated list of model names (no spaces in a name, no empty entries)")
    return found


if __name__ == "__main__":
    found = problems(ANSWERS)
    for line in found:
        print(f"ERROR: {line}", file=sys.stderr)
    if found:
        print(f"Nothing was generated ({len(found)} problem(s)); fix the answers and run cookiecutter again.", file=sys.stderr)
        sys.exit(1)

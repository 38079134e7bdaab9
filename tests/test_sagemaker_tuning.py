"""SageMaker tuning against moto's server: the tuning job the SDK's HyperparameterTuner creates.

moto (5.2.5) implements CreateHyperParameterTuningJob, DescribeHyperParameterTuningJob (always
"Completed" at once, with a fixed fake BestTrainingJob), ListHyperParameterTuningJobs and
DeleteHyperParameterTuningJob; it answers ListTrainingJobsForHyperParameterTuningJob and
StopHyperParameterTuningJob with HTTP 500 (not implemented; so is IAM SimulatePrincipalPolicy,
which the SDK tries before staging and then does without), and runs no trial. So the job is
created in moto by the real SDK code (the request read back through moto's recorder), and the
answers of the polling client (a job in progress, completed with trials, failed) come from a
botocore Stubber, which checks them against SageMaker's API model.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import ANY, Stubber

from tests.aws_requests import aws_client
from ml_exp.backends.sagemaker import jobs as sm
from ml_exp.backends.sagemaker import tuner as smt
from ml_exp.config.search_space import parse_space
from ml_exp.core.errors import StepError
from ml_exp.steps.training_callbacks import METRIC_LINE
from ml_exp.core.names import TUNING as TUNING_STEP
from ml_exp.steps import Task
from ml_exp.steps.tuning import tune_model
from tests.test_sagemaker import BUCKET, FULL, IMAGE, ROLE, SECRET, aws, project, s3_text, sagemaker_context  # noqa: F401 - fixtures

MODEL = "org/Model_v2.1"


def tune(ctx, **driver):
    """The tuning step for MODEL, with the SageMaker driver (``driver``: its polling options)."""
    task = Task(TUNING_STEP, MODEL, parse_space(SPACE))
    return tune_model(ctx, task, lambda ctx, task: {"trials": smt.search(ctx, task.model, task.parameters, **driver)})
SPACE = ("learning_rate = log-uniform(1e-5, 5e-4); per_device_train_batch_size = choice(8, 16, 32); "
         "num_train_epochs = int(2, 5); warmup_ratio = uniform(0, 0.2)")
TUNING = {"MODEL_NAMES": MODEL, "RUN_TUNING": "true", "TUNING_SPACE": SPACE, "TUNING_TRIALS": "6", "TUNING_PARALLEL_TRIALS": "2"}
NAME_RE = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}"
WHEN = datetime(2026, 11, 28, tzinfo=timezone.utc)


@pytest.fixture
def make_ctx(aws: str, project, monkeypatch: pytest.MonkeyPatch):
    """test_sagemaker's context, with the tuning settings (a test's own settings win)."""
    return lambda **settings: sagemaker_context(project, monkeypatch, **{**TUNING, **settings})


@pytest.fixture
def created(aws: str, tmp_path):
    """The CreateHyperParameterTuningJob requests moto receives while the test runs (moto's recorder)."""
    from moto.moto_api import recorder

    recorder._location = str(tmp_path / "moto-recording.jsonl")
    recorder.reset_recording()
    recorder.start_recording()

    def requests_made(target: str = "SageMaker.CreateHyperParameterTuningJob") -> list[dict]:
        found = []
        for line in open(recorder._location):
            entry = json.loads(line)
            if entry["headers"].get("X-Amz-Target") == target:
                found.append(json.loads(base64.b64decode(entry["body"]) if entry["body_encoded"] else entry["body"]))
        return found

    yield requests_made
    recorder.stop_recording()


# --- the polling client's answers (moto's are fixed fakes) ----------------------------------------


def _description(name: str, status: str, best: dict | None = None, reason: str | None = None, completed: int = 0) -> dict:
    description = {
        "HyperParameterTuningJobName": name, "HyperParameterTuningJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/{name.lower()}",
        "HyperParameterTuningJobConfig": {"Strategy": "Bayesian", "ResourceLimits": {"MaxParallelTrainingJobs": 2}},
        "HyperParameterTuningJobStatus": status, "CreationTime": WHEN,
        "TrainingJobStatusCounters": {"Completed": completed, "InProgress": 2 if status == "InProgress" else 0,
                                      "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0},
        "ObjectiveStatusCounters": {"Succeeded": completed, "Pending": 0, "Failed": 0},
    }
    if best:
        description["BestTrainingJob"] = best
    if reason:
        description["FailureReason"] = reason
    return description


def _trial(tuning: str, number: int, status: str, tuned: dict[str, str], value: float | None) -> dict:
    name = f"{tuning}-{number:03d}-{number:08x}"
    trial = {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name.lower()}",
             "CreationTime": WHEN, "TrainingJobStatus": status, "TunedHyperParameters": tuned}
    if value is not None:
        trial["FinalHyperParameterTuningJobObjectiveMetric"] = {"Type": "Maximize", "MetricName": "eval_f1_macro", "Value": value}
        trial["ObjectiveStatus"] = "Succeeded"
    return trial


TUNED = [  # as SageMaker hands them over: strings
    ({"learning_rate": "3.1e-05", "per_device_train_batch_size": "16", "num_train_epochs": "3", "warmup_ratio": "0.05"}, "Completed", 0.71),
    ({"learning_rate": "0.00021", "per_device_train_batch_size": "32", "num_train_epochs": "5", "warmup_ratio": "0.1"}, "Completed", 0.8333),
    ({"learning_rate": "0.00049", "per_device_train_batch_size": "8", "num_train_epochs": "2", "warmup_ratio": "0.2"}, "Failed", None),
]


def _polling_client(monkeypatch: pytest.MonkeyPatch, answers) -> tuple[object, Stubber, list]:
    """A SageMaker client whose answers are ``answers`` [(operation, response or ("error", code,
    message)[, the NextToken it must be asked with])], handed to the backend in place of the real
    one; returns (client, stubber, [(operation, params) asked])."""
    client = boto3.client("sagemaker", region_name="us-east-1", endpoint_url="https://sagemaker.invalid",
                          aws_access_key_id="x", aws_secret_access_key="x")
    calls: list = []
    client.meta.events.register("before-parameter-build.sagemaker.*", lambda params, model, **kw: calls.append((model.name, dict(params))))
    stub = Stubber(client)
    for operation, response, *token in answers:
        if isinstance(response, tuple):
            stub.add_client_error(operation, service_error_code=response[1], service_message=response[2])
            continue
        expected = {"HyperParameterTuningJobName": ANY}
        if operation.startswith("list"):
            expected.update({"MaxResults": 100}, **({"NextToken": token[0]} if token else {}))
        stub.add_response(operation, response, expected)
    stub.activate()
    monkeypatch.setattr(sm, "sagemaker_client", lambda region: client)
    return client, stub, calls


def _completed_answers(name_hint: str = "job") -> list:
    trials = [_trial(name_hint, i + 1, status, tuned, value) for i, (tuned, status, value) in enumerate(TUNED)]
    best = {key: trials[1][key] for key in ("TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingJobStatus",
                                            "TunedHyperParameters", "FinalHyperParameterTuningJobObjectiveMetric")}
    return [
        ("describe_hyper_parameter_tuning_job", _description(name_hint, "InProgress")),
        ("describe_hyper_parameter_tuning_job", _description(name_hint, "InProgress")),
        ("describe_hyper_parameter_tuning_job", _description(name_hint, "Completed", best=best, completed=2)),
        ("list_training_jobs_for_hyper_parameter_tuning_job", {"TrainingJobSummaries": trials[:2], "NextToken": "page-2"}),
        ("list_training_jobs_for_hyper_parameter_tuning_job", {"TrainingJobSummaries": trials[2:]}, "page-2"),
    ]


def _settings_ini(project) -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(project / "settings.ini")
    return {key.upper(): value for key, value in parser.items("settings", raw=True)}


# --- the tuning job ----------------------------------------------------------------------------


def _start_as_the_toolkit_does(root, program: str, script: str) -> None:
    """What the training toolkit of a Deep Learning Container does with sagemaker_program when it is
    not a .py file: chmod <code dir>/<program>, then /bin/sh -c './<program> <args>' in the code dir.
    Here under ``root`` (no /opt/ml): the script is found and runs, and hands over to the driver."""
    code_dir, data = root / "opt/ml/code", root / "opt/ml/input/data/code"
    code_dir.mkdir(parents=True)
    (code_dir / "requirements.txt").write_text("ml-exp @ git+https://example.invalid/ml-exp.git\n")  # the image's, never installed
    data.mkdir(parents=True)
    (data / "ml_exp_trial.sh").write_text(script)
    os.chmod(os.path.join(code_dir, program), 511)
    started = subprocess.run(["/bin/sh", "-c", f"./{program} --learning_rate 3e-05 --step tuning"], cwd=code_dir, capture_output=True, text=True)
    assert started.returncode == 127 and "/opt/ml/input/data/sm_drivers/sm_train.sh" in started.stderr, started


def test_tuning_creates_the_job_it_describes_and_writes_the_best_trial(make_ctx, created, monkeypatch, project, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    ctx = make_ctx(**FULL)
    _, stub, calls = _polling_client(monkeypatch, _completed_answers())
    seen: list = []
    best = tune(ctx, poll_seconds=0, on_status=lambda *s: seen.append(s))
    stub.assert_no_pending_responses()

    folder = f"tuning/{'org--Model_v2.1'}"
    spec = ctx.run.read_json(f"{folder}/sagemaker_tuning_job.json")
    name = spec["tuning_job_name"]
    (request,) = created()
    assert request["HyperParameterTuningJobName"] == name and len(name) <= 32 and re.fullmatch(NAME_RE, name)
    assert name.startswith("EXP-80-s") and f"-r{ctx.run.num}-org-" in name  # shortened to fit 32
    assert {params["HyperParameterTuningJobName"] for _, params in calls} == {name}  # polled the job it created
    assert [s[1] for s in seen] == ["InProgress", "Completed"] and seen[0][2].startswith("0 completed, 2 in progress")

    # the search, as SageMaker gets it
    config = request["HyperParameterTuningJobConfig"]
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "learning_rate", "MinValue": "1e-05", "MaxValue": "0.0005", "ScalingType": "Logarithmic"},
        {"Name": "warmup_ratio", "MinValue": "0.0", "MaxValue": "0.2", "ScalingType": "Linear"},
    ]
    assert ranges["IntegerParameterRanges"] == [{"Name": "num_train_epochs", "MinValue": "2", "MaxValue": "5", "ScalingType": "Linear"}]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "per_device_train_batch_size", "Values": ["8", "16", "32"]}]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "eval_f1_macro"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2}
    assert config["Strategy"] == "Bayesian" and config["RandomSeed"] == 42

    # the objective is read from the lines the training step prints
    definition = request["TrainingJobDefinition"]
    metrics = {m["Name"]: m["Regex"] for m in definition["AlgorithmSpecification"]["MetricDefinitions"]}
    assert set(metrics) == {"eval_f1_macro", "eval_loss"}
    line = f"[training rank 0] {METRIC_LINE.format(name='eval_f1_macro', value=0.8333)}"
    assert re.search(metrics["eval_f1_macro"], line).group(1) == "0.8333"
    assert re.search(metrics["eval_loss"], METRIC_LINE.format(name="eval_loss", value=1.25e-05)).group(1) == "1.25e-05"
    assert re.search(metrics["eval_loss"], line) is None and re.search(metrics["eval_f1_macro"], "ml-exp-metric: eval_f1_macro_x=0.1;") is None

    # each trial: a training job of the training step, from the experiment's image
    run = ctx.run.uri
    assert definition["AlgorithmSpecification"]["TrainingImage"] == IMAGE and definition["RoleArn"] == ROLE
    # no volume key: ml.g5 has local NVMe storage, for which AWS refuses one (the output key stays)
    assert definition["ResourceConfig"] == {"InstanceType": "ml.g5.12xlarge", "InstanceCount": 2, "VolumeSizeInGB": 77}
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 2 * 3600, "MaxWaitTimeInSeconds": int(3.5 * 3600)}
    assert definition["VpcConfig"] == {"Subnets": ["subnet-0abc", "subnet-0def"], "SecurityGroupIds": ["sg-0123"]}
    assert definition["OutputDataConfig"] == {"S3OutputPath": f"{run}/jobs/", "KmsKeyId": FULL["KMS_KEY_ID"], "CompressionType": "GZIP"}
    assert "CheckpointConfig" not in definition  # trials never resume from each other's checkpoints
    static = definition["StaticHyperParameters"]
    assert {key: static[key] for key in ("step", "run", "model")} == {"step": "tuning", "run": str(ctx.run.num), "model": MODEL}
    # the toolkit runs a program that is no .py file as /bin/sh -c "./<program> <args>" in /opt/ml/code
    assert os.path.normpath(os.path.join("/opt/ml/code", static["sagemaker_program"])) == "/opt/ml/input/data/code/ml_exp_trial.sh"
    assert not static["sagemaker_program"].endswith(".py")  # a .py program: pip install -r /opt/ml/code/requirements.txt first
    assert not set(static) & {"learning_rate", "per_device_train_batch_size", "num_train_epochs", "warmup_ratio"}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in definition["InputDataConfig"]}
    staged = f"{run}/jobs/{name}"
    assert channels["prepared"] == f"{run}/data/prepared/org--Model_v2.1/" and channels["code"] == f"{staged}/input/code"
    assert re.fullmatch(re.escape(staged) + r"/tuning-\d+/input/sm_drivers", channels["sm_drivers"]) and len(channels) == 3

    # how a trial starts: the toolkit runs the trial entry, which runs the SDK's driver -> torchrun -> the container
    assert s3_text(f"{channels['code']}/ml_exp_trial.sh") == smt.TRIAL_ENTRY_SOURCE
    assert s3_text(f"{channels['code']}/ml_exp_entry.py") == sm.ENTRY_SOURCE
    assert "exec /bin/bash /opt/ml/input/data/sm_drivers/sm_train.sh" in smt.TRIAL_ENTRY_SOURCE
    assert subprocess.run(["sh", "-n", "-c", smt.TRIAL_ENTRY_SOURCE]).returncode == 0
    _start_as_the_toolkit_does(tmp_path, static["sagemaker_program"], s3_text(f"{channels['code']}/ml_exp_trial.sh"))
    train_sh = s3_text(f"{channels['sm_drivers']}/sm_train.sh")
    assert "torchrun_driver.py" in train_sh and "cd /opt/ml/input/data/code" in train_sh
    assert json.loads(s3_text(f"{channels['sm_drivers']}/distributed.json")) == {"process_count_per_node": 4, "smp": None}
    assert json.loads(s3_text(f"{channels['sm_drivers']}/sourcecode.json"))["entry_script"] == "ml_exp_entry.py"
    assert static["sagemaker_submit_directory"].startswith(f"{staged}/tuning-")

    # the settings: every one, except (over SageMaker's 48) some whose value the image's settings.ini has
    environment = dict(definition["Environment"])
    assert len(environment) <= 48 and "WANDB_API_KEY" not in environment
    assert environment.pop("ML_EXP_EXPERIMENT_DIR") == "/opt/ml/code"
    left = spec["training"]["environment_from_image"]
    assert left and set(environment) | set(left) == set(ctx.config.raw) and not set(environment) & set(left)
    assert all(environment[key] == ctx.config.raw[key] for key in environment)
    in_file = _settings_ini(project)
    assert all(key in in_file and in_file[key] == ctx.config.raw[key] for key in left)
    for key in ("BACKEND", "STORAGE_URI", "TUNING_SPACE", "TRAINING_INSTANCE_COUNT", "NUM_PROCESSES", "MODEL_NAMES"):  # set in the environment here
        assert environment[key] == ctx.config.raw[key]
    saved = ctx.run.read_text(f"{folder}/sagemaker_tuning_job.json")
    assert SECRET not in saved and "WANDB_API_KEY" not in spec["training"]["environment"]
    assert spec["training"]["checkpoint_config"] is None
    stored = aws_client("sagemaker").describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)  # moto kept it
    assert stored["TrainingJobDefinition"]["StaticHyperParameters"] == static

    # the results, as with the local backend: trials named trial_<k>, SageMaker's job name beside
    job = lambda n: f"job-{n:03d}-{n:08x}"  # noqa: E731
    assert best == {
        "model": MODEL, "objective": "f1_macro", "direction": "maximize", "best_trial": "trial_1", "value": 0.8333,
        "params": {"learning_rate": 0.00021, "per_device_train_batch_size": 32, "num_train_epochs": 5, "warmup_ratio": 0.1},
        "trials": 3, "backend": "sagemaker", "job_name": job(2),
    }
    assert isinstance(best["params"]["per_device_train_batch_size"], int) and isinstance(best["params"]["num_train_epochs"], int)
    assert isinstance(best["params"]["warmup_ratio"], float)
    assert ctx.run.read_json(f"{folder}/best.json") == best
    trials = ctx.run.read_json(f"{folder}/trials.json")
    assert [(t["trial"], t["state"], t["value"], t["job_name"]) for t in trials] == [
        ("trial_0", "completed", 0.71, job(1)), ("trial_1", "completed", 0.8333, job(2)), ("trial_2", "failed", None, job(3))]
    assert trials[0]["params"] == {"learning_rate": 3.1e-05, "per_device_train_batch_size": 16, "num_train_epochs": 3, "warmup_ratio": 0.05}
    assert ctx.run.read_text(f"{folder}/trials.csv").splitlines()[2].startswith("trial_1,completed,0.8333,")

    assert tune(ctx) == best  # done: nothing is created or asked again
    assert len(created()) == 1


def test_minimizing_the_loss(make_ctx, created):
    ctx = make_ctx(TUNING_OBJECTIVE="loss", TUNING_DIRECTION="minimize")
    spec = smt.tuning_spec(ctx, MODEL, parse_space(SPACE))
    smt.create(spec)
    (request,) = created()
    assert request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "eval_loss"}
    (metric,) = request["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"]
    assert metric["Name"] == "eval_loss" and re.search(metric["Regex"], METRIC_LINE.format(name="eval_loss", value=0.4172)).group(1) == "0.4172"
    assert spec["objective"] == {"name": "loss", "metric_name": "eval_loss", "direction": "minimize", "type": "Minimize"}
    assert ctx.run.listdir("tuning") == []  # tuning_spec and _create save nothing in the run
    # without TUNING_OBJECTIVE: the metric for the best model
    assert smt.tuning_spec(make_ctx(TUNING_OBJECTIVE="", METRIC_FOR_BEST_MODEL="accuracy"), MODEL, parse_space(SPACE))["objective"]["metric_name"] == "eval_accuracy"


# --- dry run, retries ----------------------------------------------------------------------------


def test_dry_run_saves_the_spec_and_creates_nothing_then_the_saved_spec_is_the_job(make_ctx, created, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    ctx = make_ctx()
    result = smt.plan(ctx, MODEL, parse_space(SPACE))
    name, folder = result["tuning_job_name"], "tuning/org--Model_v2.1"
    assert result["status"] == "dry-run" and result["spec_uri"] == f"{ctx.run.uri}/{folder}/sagemaker_tuning_job.json"
    assert ctx.run.listdir(folder) == ["sagemaker_tuning_job.json"]
    saved = ctx.run.read_json(f"{folder}/sagemaker_tuning_job.json")
    assert saved == result["spec"] and SECRET not in json.dumps(saved)
    assert created() == [] and aws_client("sagemaker").list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"] == []
    assert len(name) <= 32 and re.fullmatch(NAME_RE, name)

    # the real run later: the saved job was never created (SageMaker: no such job), so it is created now, as saved
    answers = [("describe_hyper_parameter_tuning_job", ("error", "ResourceNotFound", f"Amazon SageMaker can't find a tuning job with name {name}")),
               *_completed_answers(name)]
    _, stub, calls = _polling_client(monkeypatch, answers)
    best = tune(ctx, poll_seconds=0)
    stub.assert_no_pending_responses()
    (request,) = created()
    assert request["HyperParameterTuningJobName"] == name and {p["HyperParameterTuningJobName"] for _, p in calls} == {name}
    assert "WANDB_API_KEY" not in request["TrainingJobDefinition"]["Environment"] and SECRET not in json.dumps(request)
    assert ctx.run.read_json(f"{folder}/sagemaker_tuning_job.json") == saved  # not overwritten
    assert (best["best_trial"], best["job_name"], best["trials"]) == ("trial_1", f"{name}-002-00000002", 3)


def test_a_retry_attaches_to_the_tuning_job_of_the_earlier_attempt(make_ctx, created, monkeypatch):
    ctx = make_ctx()
    spec = smt.tuning_spec(ctx, MODEL, parse_space(SPACE))
    ctx.run.write_json("tuning/org--Model_v2.1/sagemaker_tuning_job.json", spec)  # an attempt that created its job, then died
    smt.create(spec)
    assert len(created()) == 1
    answers = [("describe_hyper_parameter_tuning_job", _description(spec["tuning_job_name"], "InProgress")), *_completed_answers(spec["tuning_job_name"])]
    _, stub, _ = _polling_client(monkeypatch, answers)
    best = tune(ctx, poll_seconds=0)
    stub.assert_no_pending_responses()
    assert len(created()) == 1  # no second job
    assert best["best_trial"] == "trial_1" and best["job_name"].startswith(spec["tuning_job_name"] + "-002-")


# --- failures --------------------------------------------------------------------------------------


def test_a_failed_tuning_job_is_a_step_error_naming_its_reason(make_ctx, created, monkeypatch):
    reason = "No training job succeeded after 5 attempts. For additional details, please take a look at the training job failures"
    _polling_client(monkeypatch, [("describe_hyper_parameter_tuning_job", _description("j", "InProgress")),
                                  ("describe_hyper_parameter_tuning_job", _description("j", "Failed", reason=reason))])
    ctx = make_ctx()
    with pytest.raises(StepError) as failed:
        tune(ctx, poll_seconds=0)
    name = ctx.run.read_json("tuning/org--Model_v2.1/sagemaker_tuning_job.json")["tuning_job_name"]
    for text in (reason, f"tuning job {name} failed", "/aws/sagemaker/TrainingJobs", "list-training-jobs-for-hyper-parameter-tuning-job"):
        assert text in str(failed.value)
    assert not ctx.run.exists("tuning/org--Model_v2.1/best.json") and len(created()) == 1


def test_a_stopped_tuning_job_fails_the_step(monkeypatch):
    client, _, _ = _polling_client(monkeypatch, [("describe_hyper_parameter_tuning_job", _description("j", "Stopped"))])
    with pytest.raises(StepError, match="tuning job j stopped: it was stopped"):
        smt.wait_for_tuning_job(client, "j", "eu-west-1", poll_seconds=0)


def test_a_completed_job_without_a_best_trial_says_what_the_trials_must_print(make_ctx, created, monkeypatch):
    trials = [_trial("j", 1, "Failed", dict(TUNED[0][0]), None)]
    _polling_client(monkeypatch, [("describe_hyper_parameter_tuning_job", _description("j", "Completed")),
                                  ("list_training_jobs_for_hyper_parameter_tuning_job", {"TrainingJobSummaries": trials})])
    ctx = make_ctx()
    with pytest.raises(StepError, match=r"no trial completed with a value of f1_macro \(1 tried\); each trial must get 'f1_macro'"):
        tune(ctx, poll_seconds=0)
    assert ctx.run.read_json("tuning/org--Model_v2.1/trials.json")[0]["state"] == "failed"
    assert not ctx.run.exists("tuning/org--Model_v2.1/best.json")


def test_an_aws_error_creating_the_job_is_a_step_error(make_ctx, monkeypatch):
    from botocore.exceptions import ClientError

    def refuse(spec):
        raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": "tuning jobs quota is 0"}}, "CreateHyperParameterTuningJob")

    monkeypatch.setattr(smt, "create", refuse)
    with pytest.raises(StepError, match=r"CreateHyperParameterTuningJob failed \(ResourceLimitExceeded\): tuning jobs quota is 0"):
        tune(make_ctx(), poll_seconds=0)


def test_too_many_settings_set_in_the_environment_are_refused_before_any_job(make_ctx, created):
    ctx = make_ctx()
    environment = {key: value + "-changed" for key, value in ctx.config.raw.items()}  # none as in settings.ini
    with pytest.raises(StepError, match="at most 48 environment variables"):
        smt.fit_environment(ctx.config, {**environment, "ML_EXP_EXPERIMENT_DIR": "/opt/ml/code"})
    fits = {key: ctx.config.raw[key] for key in list(ctx.config.raw)[:48]}  # no room kept for a secret: none travels
    assert smt.fit_environment(ctx.config, fits) == (fits, [])
    environment, left = smt.fit_environment(ctx.config, {**fits, "ML_EXP_EXPERIMENT_DIR": "/opt/ml/code"})
    assert len(environment) == 48 and len(left) == 1 and left[0] not in environment
    with pytest.raises(StepError, match="TUNING_SPACE is empty"):
        smt.tuning_spec(ctx, MODEL, ())
    assert created() == []


# --- names --------------------------------------------------------------------------------------


def test_tuning_job_names_are_readable_and_deterministic_with_a_token():
    assert smt.tuning_job_name("EXP-80-sm", 3, "tiny-bert", token="abc123") == "EXP-80-sm-r3-tiny-bert-abc123"
    assert smt.tuning_job_name("EXP-80-sm", 3, "org/Model_v2.1", token="t") == "EXP-80-sm-r3-org-Model-v2-1-t"
    names = {smt.tuning_job_name("EXP-80-sm", 1, "tiny-bert") for _ in range(50)}
    assert len(names) == 50 and all(re.fullmatch(r"EXP-80-sm-r1-tiny-bert-[0-9a-f]{6}", n) for n in names)


@pytest.mark.parametrize("experiment, run_num, model", [
    ("EXP-3333-" + "very-long-experiment-name-" * 3, 12, "allenai/longformer-large-4096-finetuned-triviaqa"),
    ("E", 1, "org/" + "m" * 120),
    ("EXP-" + "x" * 59, 123456, "m"),
    ("EXP-3333-longformer", 7, "org/Model_v2.1 (copy)..."),
    ("EXP-3333-longformer", 99999999, "allenai/longformer-base-4096"),
])
def test_tuning_job_names_are_valid_for_sagemaker(experiment: str, run_num: int, model: str):
    name = smt.tuning_job_name(experiment, run_num, model)
    assert len(name) <= 32 and re.fullmatch(NAME_RE, name), name
    assert f"-r{run_num}-" in name and re.search(r"-[0-9a-f]{6}$", name)


def test_long_tuning_job_names_stay_distinct():
    experiment = "EXP-3333-" + "a-very-long-experiment-name-" * 3
    a = smt.tuning_job_name(experiment, 1, "allenai/longformer-base-4096-variant-one", token="t")
    b = smt.tuning_job_name(experiment, 1, "allenai/longformer-base-4096-variant-two", token="t")
    c = smt.tuning_job_name(experiment + "x", 1, "allenai/longformer-base-4096-variant-one", token="t")
    assert len({a, b, c}) == 3 and all(len(n) <= 32 for n in (a, b, c)) and a.startswith("EXP-3333")


def test_importing_the_tuning_backend_does_not_import_the_sdk():
    code = "import sys, ml_exp.backends.sagemaker.tuner; sys.exit(any(m.split('.')[0] in ('sagemaker', 'boto3') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_trial_is_named_as_a_local_trial():
    assert smt.trial_of("EXP-80-r1-tiny-bert-abc123-001-4a7a8f5e") == "trial_0"
    assert smt.trial_of("EXP-80-r1-tiny-bert-abc123-012-4a7a8f5e") == "trial_11"
    assert smt.trial_of("some-other-job") == "some-other-job"  # not the tuner's: its own name

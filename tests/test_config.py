"""settings.ini -> Config: types, defaults, cross-field rules, and a corpus of bad settings files."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from ml_exp.core import names
from ml_exp.config import GROUPS, KNOWN_KEYS, SETTINGS, Config, load_config, read_settings_file
from ml_exp.core.errors import ProblemsFound
from ml_exp.pipeline.validate import validate

GOOD = {"EXPERIMENT_NAME": "EXP-1-tiny", "MODEL_NAMES": "tiny-bert", "WANDB_PROJECT": "ml-exp"}


def write_settings(directory: Path, values: dict[str, str], extra_lines: str = "") -> Path:
    lines = ["[settings]", *(f"{key} = {value}" for key, value in values.items()), extra_lines]
    (directory / "settings.ini").write_text("\n".join(lines) + "\n")
    return directory


def test_defaults_and_types(tmp_path):
    config = load_config(write_settings(tmp_path, GOOD), environ={})
    assert config.run_num is None and config.num_processes is None
    assert config.steps == ("reconciliation", "preparation", "training", "inference")
    assert config.split_ratios == (0.8, 0.1, 0.1)
    assert config.seed == 42 and isinstance(config.learning_rate, float)
    assert config.storage_uri == (tmp_path / ".exp-store").as_uri()
    assert config.objective == "f1_macro"
    assert config.model_names == ("tiny-bert",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]


def test_every_setting_has_a_field():
    fields = {f.name for f in dataclasses.fields(Config)}
    assert {s.key.lower() for s in SETTINGS} <= fields


def test_environment_overrides_the_file(tmp_path):
    write_settings(tmp_path, {**GOOD, "SEED": "1", "RUN_NUM": "auto"})
    config = load_config(tmp_path, environ={"SEED": "7", "RUN_NUM": "3", "MODEL_NAMES": "a, b"})
    assert (config.seed, config.run_num, config.model_names) == (7, 3, ("a", "b"))


def test_percent_sign_is_literal(tmp_path):
    write_settings(tmp_path, {**GOOD, "TUNING_SPACE": "learning_rate = choice(1e-5, 2e-5) % literal"})
    assert load_config(tmp_path, environ={}).tuning_space.endswith("% literal")


def test_bad_environment_value_names_key_and_source(tmp_path):
    write_settings(tmp_path, GOOD)
    with pytest.raises(ProblemsFound) as caught:
        load_config(tmp_path, environ={"SEED": "abc"})
    assert str(caught.value.problems[0]).startswith("SEED:")
    assert "environment variable" in str(caught.value)


def test_sagemaker_backend_when_complete(tmp_path):
    values = {
        **GOOD,
        "BACKEND": "sagemaker",
        "STORAGE_URI": "s3://team-bucket/prefix/",
        "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/SageMakerRole",
        "IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml-exp/exp-1:exp-1-abc123",
        "USE_SPOT": "yes",
        "SUBNETS": "subnet-0abc, subnet-0def",
        "SECURITY_GROUP_IDS": "sg-0123",
    }
    config = load_config(write_settings(tmp_path, values), environ={})
    assert config.storage_uri == "s3://team-bucket/prefix"
    assert config.use_spot is True and config.subnets == ("subnet-0abc", "subnet-0def")


# (settings on top of GOOD, or raw extra lines; the key each problem must name)
BAD = [
    ({"SEED": "forty-two"}, "SEED"),
    ({"RUN_NUM": "0"}, "RUN_NUM"),
    ({"RUN_NUM": "latest"}, "RUN_NUM"),
    ({"NUM_PROCESSES": "-2"}, "NUM_PROCESSES"),
    ({"SPLIT_RATIOS": "0.8,0.1"}, "SPLIT_RATIOS"),
    ({"SPLIT_RATIOS": "0.8,0.2,0.1"}, "SPLIT_RATIOS"),
    ({"SPLIT_RATIOS": "1,0,0"}, "SPLIT_RATIOS"),
    ({"BACKEND": "kubernetes"}, "BACKEND"),
    ({"STORAGE_URI": "gs://bucket/x"}, "STORAGE_URI"),
    ({"STORAGE_URI": "s3://Bad_Bucket/x"}, "STORAGE_URI"),
    ({"MODEL_NAMES": ""}, "MODEL_NAMES"),
    ({"MODEL_NAMES": "bert base"}, "MODEL_NAMES"),
    ({"MODEL_NAMES": "a,a"}, "MODEL_NAMES"),
    ({"RUN_TRAINING": "maybe"}, "RUN_TRAINING"),
    ({"LEARNING_RATE": "0"}, "LEARNING_RATE"),
    ({"PER_DEVICE_TRAIN_BATCH_SIZE": "0"}, "PER_DEVICE_TRAIN_BATCH_SIZE"),
    ({"MIXED_PRECISION": "fp8"}, "MIXED_PRECISION"),
    ({"WARMUP_RATIO": "1.5"}, "WARMUP_RATIO"),
    ({"MAX_LENGTH": "long"}, "MAX_LENGTH"),
    ({"RUN_TUNING": "true"}, "TUNING_SPACE"),
    ({"TUNING_TRIALS": "2", "TUNING_PARALLEL_TRIALS": "4"}, "TUNING_PARALLEL_TRIALS"),
    ({"TUNING_DIRECTION": "up"}, "TUNING_DIRECTION"),
    ({"WANDB_MODE": "sometimes"}, "WANDB_MODE"),
    ({"WANDB_PROJECT": ""}, "WANDB_PROJECT"),
    ({"EXPERIMENT_NAME": "my experiment"}, "EXPERIMENT_NAME"),
    ({"UDF_MODULE": "my-module"}, "UDF_MODULE"),
    ({"AWS_REGION": "mars"}, "AWS_REGION"),
    ({"SAGEMAKER_ROLE_ARN": "role/SageMaker"}, "SAGEMAKER_ROLE_ARN"),
    ({"TRAINING_INSTANCE_TYPE": "g5.2xlarge"}, "TRAINING_INSTANCE_TYPE"),
    ({"TRAINING_INSTANCE_COUNT": "0"}, "TRAINING_INSTANCE_COUNT"),
    ({"SUBNETS": "subnet-0abc"}, "SECURITY_GROUP_IDS"),
    ({"SECURITY_GROUP_IDS": "group-1", "SUBNETS": "subnet-0abc"}, "SECURITY_GROUP_IDS"),
    ({"BACKEND": "sagemaker"}, "SAGEMAKER_ROLE_ARN"),
    ({"BACKEND": "sagemaker"}, "IMAGE_URI"),
    ({"BACKEND": "sagemaker"}, "STORAGE_URI"),
    ({"LEARNIGN_RATE": "1e-4"}, "LEARNIGN_RATE"),
    ({"WANDB_API_KEY": "abc123"}, "WANDB_API_KEY"),
    ({"AWS_SECRET_ACCESS_KEY": "abc123"}, "AWS_SECRET_ACCESS_KEY"),
    (
        {
            key: "false"
            for key in ("RUN_RECONCILIATION", "RUN_PREPARATION", "RUN_TRAINING", "RUN_TUNING", "RUN_INFERENCE")
        },
        "RUN_*",
    ),
]


@pytest.mark.parametrize(("values", "key"), BAD, ids=[f"{k}-{i}" for i, (_, k) in enumerate(BAD)])
def test_bad_settings_name_the_key_and_write_nothing(tmp_path, values, key):
    store = tmp_path / ".exp-store"
    write_settings(tmp_path, {**GOOD, **values})
    report = validate(tmp_path, environ={})
    assert not report.ok
    named = [p for p in report.problems if p.where == key]
    assert named, f"no problem names {key}: {[str(p) for p in report.problems]}"
    assert all(len(p.message) > 15 for p in named)  # says what is wrong and how to fix it
    assert not store.exists() or not [p for p in store.rglob("*") if p.is_file()]


def test_unknown_key_suggests_the_known_one(tmp_path):
    write_settings(tmp_path, {**GOOD, "LEARNIGN_RATE": "1e-4"})
    with pytest.raises(ProblemsFound, match="did you mean LEARNING_RATE"):
        load_config(tmp_path, environ={})


def test_secret_in_settings_is_refused(tmp_path):
    write_settings(tmp_path, {**GOOD, "WANDB_API_KEY": "abc123"})
    with pytest.raises(ProblemsFound, match="must not be in settings.ini"):
        load_config(tmp_path, environ={})


def test_several_mistakes_are_all_reported(tmp_path):
    write_settings(
        tmp_path,
        {
            **GOOD,
            "SEED": "x",
            "BACKEND": "cloud",
            "SPLIT_RATIOS": "0.5,0.5,0.5",
            "WANDB_MODE": "never",
            "MODEL_NAMES": "",
            "TYPO_KEY": "1",
        },
    )
    with pytest.raises(ProblemsFound) as caught:
        load_config(tmp_path, environ={})
    assert {p.where for p in caught.value.problems} == {
        "SEED",
        "BACKEND",
        "SPLIT_RATIOS",
        "WANDB_MODE",
        "MODEL_NAMES",
        "TYPO_KEY",
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("SEED = 1\n", "no [settings] section"),
        ("[settings]\nSEED = 1\nSEED = 2\n", "not a valid ini file"),
        ("[settings\nSEED = 1\n", "no [settings] section"),
    ],
)
def test_malformed_file_is_one_clear_problem(tmp_path, text, fragment):
    (tmp_path / "settings.ini").write_text(text)
    with pytest.raises(ProblemsFound) as caught:
        load_config(tmp_path, environ={})
    assert fragment in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_missing_file_says_where_to_run(tmp_path):
    with pytest.raises(ProblemsFound, match=re.escape(str(tmp_path / "settings.ini")) + ".*not found"):
        load_config(tmp_path, environ={})


def test_known_keys_cover_the_brief():
    brief = {
        "EXPERIMENT_NAME", "RUN_NUM", "UDF_MODULE", "RUN_RECONCILIATION", "RUN_PREPARATION", "RUN_TRAINING",
        "RUN_TUNING", "RUN_INFERENCE", "BACKEND", "STORAGE_URI", "NUM_PROCESSES", "MODEL_NAMES", "SPLIT_RATIOS",
        "SEED", "MAX_LENGTH", "NUM_TRAIN_EPOCHS", "LEARNING_RATE", "PER_DEVICE_TRAIN_BATCH_SIZE",
        "PER_DEVICE_EVAL_BATCH_SIZE", "GRADIENT_ACCUMULATION_STEPS", "WARMUP_RATIO", "WEIGHT_DECAY",
        "MIXED_PRECISION", "EARLY_STOPPING_PATIENCE", "METRIC_FOR_BEST_MODEL", "CLASS_WEIGHTS", "TUNING_TRIALS",
        "TUNING_PARALLEL_TRIALS", "TUNING_SPACE", "TUNING_OBJECTIVE", "TUNING_DIRECTION", "WANDB_PROJECT",
        "WANDB_ENTITY", "WANDB_MODE", "AWS_REGION", "SAGEMAKER_ROLE_ARN", "IMAGE_URI", "TRAINING_INSTANCE_TYPE",
        "TRAINING_INSTANCE_COUNT", "PREPARATION_INSTANCE_TYPE", "INFERENCE_INSTANCE_TYPE", "ENDPOINT_INSTANCE_TYPE",
        "ENDPOINT_INSTANCE_COUNT", "ENDPOINT_SERVERLESS_MEMORY_MB", "USE_SPOT", "MAX_RUN_HOURS",
        "MAX_WAIT_HOURS", "VOLUME_SIZE_GB", "KMS_KEY_ID", "SUBNETS", "SECURITY_GROUP_IDS",
    }  # fmt: skip
    long_documents = {
        "DOCUMENT_STRATEGY",
        "CHUNK_STRIDE",
        "MAX_CHUNKS",
        "CHUNK_AGGREGATION",
        "CHUNK_TRAINING",
        "CHUNK_GRAD_WINDOWS",
        "CHUNK_WINDOW_EPOCHS",
    }  # issues 11, 27
    aws = {"WANDB_API_KEY_SECRET", "SERVING_IMAGE_URI", "ENDPOINT_IMAGE"}  # issue 21's names
    serving = {"SERVE_TIMEOUT_S"}  # issue 23's
    registry = {"DATA_FROM", "MODEL_PACKAGE_GROUP"}  # issue 26's names
    decisions = {"PROBLEM_TYPE", "LABEL_THRESHOLDS", "CALIBRATION", "REVIEW_TARGET_PRECISION"}  # issue 25's
    assert KNOWN_KEYS - brief == {
        "TUNING_TRIAL_EPOCHS",
        "FULL_DETERMINISM",
        "TRAIN_SAMPLING_STRATEGY",
        *long_documents,
        *aws,
        *serving,
        *registry,
        *decisions,
    }  # added in the same style


@pytest.mark.parametrize(("text", "value"), [("", None), ("1024", 1024), ("6144", 6144), (" 3072 ", 3072)])
def test_endpoint_serverless_memory_is_empty_or_a_size_sagemaker_offers(tmp_path, text, value):
    # (a serverless endpoint runs the CPU serving image, never the training image)
    write_settings(
        tmp_path,
        {
            **GOOD,
            "ENDPOINT_SERVERLESS_MEMORY_MB": text,
            "SERVING_IMAGE_URI": "1.dkr.ecr.us-east-1.amazonaws.com/serve:cpu",
        },
    )
    assert load_config(tmp_path, environ={}).endpoint_serverless_memory_mb == value


@pytest.mark.parametrize("text", ["1000", "8192", "2 GB"])
def test_endpoint_serverless_memory_refuses_other_sizes(tmp_path, text):
    write_settings(tmp_path, {**GOOD, "ENDPOINT_SERVERLESS_MEMORY_MB": text})
    with pytest.raises(
        ProblemsFound, match="ENDPOINT_SERVERLESS_MEMORY_MB.*use one of: 1024, 2048, 3072, 4096, 5120, 6144"
    ):
        load_config(tmp_path, environ={})


@pytest.mark.parametrize(
    ("old", "new"), [("INSTANCE_TYPE", "TRAINING_INSTANCE_TYPE"), ("INSTANCE_COUNT", "TRAINING_INSTANCE_COUNT")]
)
def test_renamed_settings_are_refused_with_the_new_name(tmp_path, old, new):
    write_settings(tmp_path, {**GOOD, old: "1"})
    with pytest.raises(ProblemsFound) as caught:
        load_config(tmp_path, environ={})
    assert [str(p) for p in caught.value.problems] == [f"{old}: was renamed to {new}; rename it in settings.ini"]
    write_settings(tmp_path, GOOD)
    with pytest.raises(ProblemsFound, match=f"{old}: was renamed to {new}; set the environment variable {new}"):
        load_config(tmp_path, environ={old: "1"})


def test_overrides_are_checked_and_kept_in_raw(tmp_path):
    config = load_config(write_settings(tmp_path, GOOD), environ={})
    tuned = config.with_overrides({"LEARNING_RATE": "3e-05", "NUM_TRAIN_EPOCHS": "2"}, source="tuning")
    assert (tuned.learning_rate, tuned.num_train_epochs, tuned.seed) == (3e-05, 2.0, config.seed)
    assert tuned.raw["LEARNING_RATE"] == "3e-05" and config.raw["LEARNING_RATE"] == "5e-5"
    assert tuned.storage_uri == config.storage_uri
    with pytest.raises(ProblemsFound, match=r"LEARNING_RATE: 'fast' is not a number \(from tuning\)"):
        config.with_overrides({"LEARNING_RATE": "fast"}, source="tuning")
    with pytest.raises(ProblemsFound, match="LERNING_RATE: is not a setting"):
        config.with_overrides({"LERNING_RATE": "1"})


def test_each_setting_is_declared_once_as_a_field():
    """Config's fields are the settings (plus the folder and the raw text), each with its help."""
    fields = [f.name for f in dataclasses.fields(Config)]
    assert fields == ["experiment_dir", *(s.key.lower() for s in SETTINGS), "raw"]
    assert len(KNOWN_KEYS) == len(SETTINGS)
    assert [s.group for s in SETTINGS if s.group not in GROUPS] == []
    for s in SETTINGS:
        assert s.help.strip() and not s.help.startswith("#"), f"{s.key} needs a help line"
        if s.key != "EXPERIMENT_NAME":  # the template fills it in
            s.parse(s.default)  # every default is a valid value


def test_step_switches_are_the_steps_of_names():
    switches = [s for s in SETTINGS if s.group == "steps"]
    assert [s.key for s in switches] == [f"RUN_{step.name.upper()}" for step in names.STEPS]
    for setting, step in zip(switches, names.STEPS):
        assert step.summary in setting.help


def test_name_rules_are_the_runtime_ones(tmp_path):
    longest = "EXP-1-" + "x" * (names.EXPERIMENT_NAME_MAX - 6)
    assert (
        load_config(write_settings(tmp_path, {**GOOD, "EXPERIMENT_NAME": longest}), environ={}).experiment_name
        == longest
    )
    for bad, fragment in [(longest + "y", "64 characters long; use at most 63"), ("EXP-1-", "joined by '-'")]:
        write_settings(tmp_path, {**GOOD, "EXPERIMENT_NAME": bad})
        with pytest.raises(ProblemsFound, match=fragment):
            load_config(tmp_path, environ={})
    write_settings(tmp_path, {**GOOD, "STORAGE_URI": "s3://192.168.1.1/x"})  # names.S3_BUCKET_RE: no IP-like bucket
    with pytest.raises(ProblemsFound, match="STORAGE_URI: '192.168.1.1' is not a valid S3 bucket name"):
        load_config(tmp_path, environ={})


def test_read_settings_file_gives_the_text_without_checking_it(tmp_path):
    write_settings(
        tmp_path,
        {"SEED": "forty-two", "BACKEND": "cloud", "TUNING_SPACE": "a = choice(1, 2) % literal", "TYPO_KEY": "1"},
    )
    text = read_settings_file(tmp_path)
    assert list(text) == [s.key for s in SETTINGS]  # every setting, none other
    assert (text["SEED"], text["BACKEND"], text["TUNING_SPACE"]) == ("forty-two", "cloud", "a = choice(1, 2) % literal")
    assert text["LEARNING_RATE"] == "5e-5" and text["EXPERIMENT_NAME"] == ""  # missing: the default


def test_read_settings_file_ignores_the_environment(tmp_path, monkeypatch):
    write_settings(tmp_path, GOOD)
    monkeypatch.setenv("SEED", "7")
    assert read_settings_file(tmp_path)["SEED"] == "42"
    assert load_config(tmp_path, environ={"SEED": "7"}).raw == {**read_settings_file(tmp_path), "SEED": "7"}


@pytest.mark.parametrize(
    "text", ["EXP-1-a/run_4", "s3://bucket/prefix/EXP-1-a/run_12", "file:///data/runs/EXP-1-a/run_1"]
)
def test_data_from_names_a_run(tmp_path, text):
    write_settings(tmp_path, {**GOOD, "DATA_FROM": text})
    assert load_config(tmp_path, environ={}).data_from == text


@pytest.mark.parametrize("text", ["EXP-1-a", "EXP-1-a/run_0", "EXP-1-a/4", "http://x/EXP-1-a/run_1"])
def test_data_from_that_names_no_run_is_refused(tmp_path, text):
    write_settings(tmp_path, {**GOOD, "DATA_FROM": text})
    with pytest.raises(ProblemsFound, match="DATA_FROM"):
        load_config(tmp_path, environ={})

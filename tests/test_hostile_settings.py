"""A sweep of settings as a hostile (or hurried) user writes them: every one refused up front,
naming the setting, with no traceback; bounds of each kind and relations between settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_exp.config import load_config
from ml_exp.config.settings import SETTINGS
from ml_exp.core.errors import ProblemsFound

BASE = {"EXPERIMENT_NAME": "EXP-1-x", "MODEL_NAMES": "m", "WANDB_MODE": "disabled"}

# (settings, the setting named, a fragment of its message)
CASES = [
    # numbers that are no numbers, or not finite
    ({"LEARNING_RATE": "nan"}, "LEARNING_RATE", "not a finite number"),
    ({"NUM_TRAIN_EPOCHS": "inf"}, "NUM_TRAIN_EPOCHS", "not a finite number"),
    ({"NUM_TRAIN_EPOCHS": "1e400"}, "NUM_TRAIN_EPOCHS", "not a finite number"),
    ({"NUM_TRAIN_EPOCHS": "1e20"}, "NUM_TRAIN_EPOCHS", "out of range"),
    ({"WARMUP_RATIO": "nan"}, "WARMUP_RATIO", "not a finite number"),
    ({"WEIGHT_DECAY": "inf"}, "WEIGHT_DECAY", "not a finite number"),
    ({"MAX_RUN_HOURS": "nan"}, "MAX_RUN_HOURS", "not a finite number"),
    ({"TUNING_TRIAL_EPOCHS": "inf"}, "TUNING_TRIAL_EPOCHS", "not a finite number"),
    # whole numbers beyond what numpy, torch and SageMaker take
    ({"SEED": "99999999999999999999"}, "SEED", "too large"),
    ({"MAX_LENGTH": "99999999999999999999"}, "MAX_LENGTH", "too large"),
    ({"PER_DEVICE_TRAIN_BATCH_SIZE": "4294967296"}, "PER_DEVICE_TRAIN_BATCH_SIZE", "too large"),
    ({"TUNING_TRIALS": "99999999999999999999"}, "TUNING_TRIALS", "too large"),
    ({"TRAINING_INSTANCE_COUNT": "99999999999999999999"}, "TRAINING_INSTANCE_COUNT", "too large"),
    ({"VOLUME_SIZE_GB": "20000"}, "VOLUME_SIZE_GB", "too large"),
    ({"RUN_NUM": "99999999999999999999"}, "RUN_NUM", ""),
    ({"NUM_PROCESSES": "99999999999999999999"}, "NUM_PROCESSES", ""),
    # below the bounds
    ({"SEED": "-1"}, "SEED", "too small"),
    ({"MAX_LENGTH": "0"}, "MAX_LENGTH", "too small"),
    ({"LEARNING_RATE": "0"}, "LEARNING_RATE", "out of range"),
    ({"WARMUP_RATIO": "1.5"}, "WARMUP_RATIO", "out of range"),
    ({"EARLY_STOPPING_PATIENCE": "-1"}, "EARLY_STOPPING_PATIENCE", "too small"),
    ({"ENDPOINT_INSTANCE_COUNT": "0"}, "ENDPOINT_INSTANCE_COUNT", "too small"),
    # relations
    ({"TUNING_TRIALS": "2", "TUNING_PARALLEL_TRIALS": "3"}, "TUNING_PARALLEL_TRIALS", "larger than TUNING_TRIALS"),
    ({"DOCUMENT_STRATEGY": "chunks", "MAX_LENGTH": "64", "CHUNK_STRIDE": "62"}, "CHUNK_STRIDE", "MAX_LENGTH - 2"),
    ({"SUBNETS": "subnet-0abc"}, "SECURITY_GROUP_IDS", "go together"),
    (
        {
            "BACKEND": "sagemaker",
            "STORAGE_URI": "s3://bucket/runs",
            "USE_SPOT": "true",
            "MAX_RUN_HOURS": "5",
            "MAX_WAIT_HOURS": "1",
        },
        "MAX_WAIT_HOURS",
        "must be >= MAX_RUN_HOURS",
    ),
    ({"SPLIT_RATIOS": "0.8,0.1,0.2"}, "SPLIT_RATIOS", ""),
    ({"SPLIT_RATIOS": "nan,0.5,0.5"}, "SPLIT_RATIOS", ""),
    # serving
    ({"SERVE_TIMEOUT_S": "0"}, "SERVE_TIMEOUT_S", "out of range"),
    ({"SERVE_TIMEOUT_S": "nan"}, "SERVE_TIMEOUT_S", "not a finite number"),
    ({"SERVE_TIMEOUT_S": "99999"}, "SERVE_TIMEOUT_S", "<= 3600"),
    ({"ENDPOINT_SERVERLESS_MEMORY_MB": "1000"}, "ENDPOINT_SERVERLESS_MEMORY_MB", "1024, 2048"),
    ({"ENDPOINT_IMAGE": "gpu"}, "ENDPOINT_IMAGE", "not allowed"),
    # multi-label, calibration, review (issue 25)
    ({"PROBLEM_TYPE": "multilabel"}, "PROBLEM_TYPE", "single_label, multi_label"),
    ({"PROBLEM_TYPE": "multi_label", "LABEL_THRESHOLDS": "precision:1"}, "LABEL_THRESHOLDS", "0 < p < 1"),
    ({"PROBLEM_TYPE": "multi_label", "LABEL_THRESHOLDS": "nan"}, "LABEL_THRESHOLDS", "use f1"),
    ({"LABEL_THRESHOLDS": "0.3"}, "LABEL_THRESHOLDS", "only by PROBLEM_TYPE = multi_label"),
    ({"CALIBRATION": "platt"}, "CALIBRATION", "temperature, none"),
    ({"REVIEW_TARGET_PRECISION": "1.5"}, "REVIEW_TARGET_PRECISION", "<= 1.0"),
    ({"REVIEW_TARGET_PRECISION": "0"}, "REVIEW_TARGET_PRECISION", "> 0.0"),
    # tuning
    ({"TUNING_TRIALS": "0"}, "TUNING_TRIALS", "too small"),
    ({"TUNING_PARALLEL_TRIALS": "0"}, "TUNING_PARALLEL_TRIALS", "too small"),
    # long documents
    ({"CHUNK_AGGREGATION": "median"}, "CHUNK_AGGREGATION", "not allowed"),
    ({"DOCUMENT_STRATEGY": "chunks", "CHUNK_STRIDE": "-1"}, "CHUNK_STRIDE", "too small"),
    ({"MAX_CHUNKS": "-1"}, "MAX_CHUNKS", "too small"),
    # SageMaker names
    ({"TRAINING_INSTANCE_TYPE": "m5.large"}, "TRAINING_INSTANCE_TYPE", "not a SageMaker instance type"),
    ({"AWS_REGION": "mars-1"}, "AWS_REGION", "not an AWS region"),
    # models
    ({"MODEL_NAMES": "a,a"}, "MODEL_NAMES", "listed twice"),
    ({"PER_DEVICE_EVAL_BATCH_SIZE": "0"}, "PER_DEVICE_EVAL_BATCH_SIZE", "too small"),
    ({"GRADIENT_ACCUMULATION_STEPS": "0"}, "GRADIENT_ACCUMULATION_STEPS", "too small"),
]


def settings_dir(tmp_path: Path) -> Path:
    (tmp_path / "settings.ini").write_text("[settings]\n" + "".join(f"{k} = {v}\n" for k, v in BASE.items()))
    return tmp_path


@pytest.mark.parametrize(("values", "key", "message"), CASES, ids=lambda v: str(v)[:60])
def test_hostile_settings_are_refused_naming_the_setting(tmp_path, values, key, message):
    with pytest.raises(ProblemsFound) as caught:
        load_config(settings_dir(tmp_path), environ=values)
    assert any(p.where == key and message in p.message for p in caught.value.problems), caught.value.problems


HOSTILE = ["-1", "0", "nan", "inf", "-inf", "1e400", "99999999999999999999", "", " ", "abc", "0.5", "\x00", "é" * 300]


@pytest.mark.parametrize("setting", [s.key for s in SETTINGS])
def test_every_setting_takes_any_text_without_a_traceback(tmp_path, setting):
    """Any value of any setting: loaded, or refused with the setting named; never a traceback,
    and never a float that is not finite."""
    import math

    folder = settings_dir(tmp_path)
    for value in HOSTILE:
        try:
            config = load_config(folder, environ={setting: value})
        except ProblemsFound as exc:
            assert exc.problems and all(p.where for p in exc.problems)
            continue
        for name in dir(config):
            got = getattr(config, name, None)
            assert not (isinstance(got, float) and not math.isfinite(got)), (setting, value, name, got)


# Refused by `exp validate` (they need the experiment's code or a parse of their own), not at reading.
VALIDATE_CASES = [
    ({"TUNING_SPACE": "bogus", "RUN_TUNING": "true"}, "TUNING_SPACE", "write <name> = <distribution>"),
    ({"TUNING_SPACE": "learning_rate: loguniform(1, 0)"}, "TUNING_SPACE", ""),
    ({"MODEL_NAMES": "org/tiny,org--tiny"}, "MODEL_NAMES", "both map to the folder name"),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from tests.bake import bake

    return bake(tmp_path_factory.mktemp("hostile"), ticket="EXP-9", model_slug="hostile")


@pytest.mark.parametrize(("values", "key", "message"), VALIDATE_CASES, ids=lambda v: str(v)[:60])
def test_hostile_settings_are_refused_by_validate_naming_the_setting(demo, values, key, message):
    import os

    from ml_exp.pipeline.validate import validate

    report = validate(demo, environ={**os.environ, "WANDB_MODE": "disabled", **values}, check_storage=False)
    assert any(p.where == key and message in p.message for p in report.problems), report.problems

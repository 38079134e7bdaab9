"""settings.ini -> one typed, immutable, validated :class:`Config`.

Pure: reads the file (through python-decouple, so environment variables override it) and the
environment, nothing else. Every problem is collected, none stops the reading early, so a user
sees all of them at once in a :class:`ConfigError`.
"""

from __future__ import annotations

import configparser
import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decouple import RepositoryIni

from ml_exp.names import STEP_NAMES as STEPS

SETTINGS_FILE = "settings.ini"
SECTION = "settings"
# Settings that were renamed: refused under their old name, with the new one.
RENAMED = {"INSTANCE_TYPE": "TRAINING_INSTANCE_TYPE", "INSTANCE_COUNT": "TRAINING_INSTANCE_COUNT"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong, named by what is wrong (a setting, a function, a file) and how to fix it."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# --- value parsers: each raises ValueError with a message that says how to fix it ------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise ValueError(f"{raw!r} is not true/false; write true or false")


def _int(minimum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"{value} is too small; use a whole number >= {minimum}")
        return value

    return parse


def _float(low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        if low is not None and (value < low or (low_open and value == low)):
            raise ValueError(f"{value} is out of range; use a number {'>' if low_open else '>='} {low}")
        if high is not None and value > high:
            raise ValueError(f"{value} is out of range; use a number <= {high}")
        return value

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"{raw!r} is not allowed; use one of: {', '.join(allowed)}")
        return value

    return parse


def _auto_or_int(raw: str) -> int | None:
    if raw.strip().lower() == "auto":
        return None
    try:
        return _int(1)(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is neither 'auto' nor a whole number >= 1") from None


def _optional_float(low: float) -> Callable[[str], float | None]:
    def parse(raw: str) -> float | None:
        return None if not raw.strip() else _float(low, low_open=True)(raw)

    return parse


def _text(raw: str) -> str:
    return raw.strip()


def _pattern(regex: str, what: str, optional: bool = True) -> Callable[[str], str]:
    compiled = re.compile(regex)

    def parse(raw: str) -> str:
        value = raw.strip()
        if not value and optional:
            return ""
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return parse


def _list(item: Callable[[str], str] = _text) -> Callable[[str], tuple[str, ...]]:
    def parse(raw: str) -> tuple[str, ...]:
        return tuple(item(part) for part in raw.split(",") if part.strip())

    return parse


def _model_names(raw: str) -> tuple[str, ...]:
    names = _list()(raw)
    for name in names:
        if re.search(r"\s", name):
            raise ValueError(f"model name {name!r} contains spaces; separate model names with commas")
    if len(set(names)) != len(names):
        raise ValueError("a model name is listed twice; list each model once")
    return names


def _split_ratios(raw: str) -> tuple[float, float, float]:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 3:
        raise ValueError(f"{raw!r} needs three numbers: train,validation,test (e.g. 0.8,0.1,0.1)")
    try:
        ratios = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{raw!r} must be three numbers, e.g. 0.8,0.1,0.1") from None
    if any(r <= 0 or r >= 1 for r in ratios):
        raise ValueError(f"{raw!r}: each ratio must be between 0 and 1 (exclusive)")
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"{raw!r} sums to {sum(ratios):g}; the three ratios must sum to 1")
    return ratios  # type: ignore[return-value]


def _storage_uri(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("is empty; use file://.exp-store (local disk) or s3://bucket/prefix")
    if value.startswith("s3://"):
        bucket = value[5:].split("/", 1)[0]
        if not _S3_BUCKET.fullmatch(bucket):
            raise ValueError(f"{bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
        return value.rstrip("/")
    if value.startswith("file://"):
        return value.rstrip("/") or value
    raise ValueError(f"{value!r} must start with file:// (local disk) or s3:// (S3)")


_S3_BUCKET = re.compile(r"(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
AWS_REGION_RE = r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d"
ROLE_ARN_RE = r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+"
INSTANCE_TYPE_RE = r"ml\.[a-z0-9-]+\.[a-z0-9]+"


@dataclass(frozen=True)
class Setting:
    key: str
    default: str
    parse: Callable[[str], Any]
    group: str


def _settings() -> tuple[Setting, ...]:
    s = Setting
    return (
        # identity
        s("EXPERIMENT_NAME", "", _pattern(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", "a name of letters, digits and '-' (e.g. EXP-3333-longformer)", optional=False), "identity"),
        s("RUN_NUM", "auto", _auto_or_int, "identity"),
        s("UDF_MODULE", "experiment", _pattern(r"[A-Za-z_][\w.]*", "a Python module name (e.g. experiment)", optional=False), "identity"),
        # steps
        *(s(f"RUN_{step.upper()}", "true" if step != "tuning" else "false", _bool, "steps") for step in STEPS),
        # where
        s("BACKEND", "local", _choice("local", "sagemaker"), "where"),
        s("STORAGE_URI", "file://.exp-store", _storage_uri, "where"),
        s("NUM_PROCESSES", "auto", _auto_or_int, "where"),
        # data
        s("MODEL_NAMES", "", _model_names, "data"),
        s("SPLIT_RATIOS", "0.8,0.1,0.1", _split_ratios, "data"),
        s("SEED", "42", _int(0), "data"),
        s("MAX_LENGTH", "512", _int(1), "data"),
        # training (names follow transformers.TrainingArguments)
        s("NUM_TRAIN_EPOCHS", "3", _float(0, low_open=True), "training"),
        s("LEARNING_RATE", "5e-5", _float(0, 1, low_open=True), "training"),
        s("PER_DEVICE_TRAIN_BATCH_SIZE", "8", _int(1), "training"),
        s("PER_DEVICE_EVAL_BATCH_SIZE", "16", _int(1), "training"),
        s("GRADIENT_ACCUMULATION_STEPS", "1", _int(1), "training"),
        s("WARMUP_RATIO", "0.0", _float(0, 1), "training"),
        s("WEIGHT_DECAY", "0.0", _float(0), "training"),
        s("MIXED_PRECISION", "no", _choice("no", "fp16", "bf16"), "training"),
        s("EARLY_STOPPING_PATIENCE", "3", _int(0), "training"),
        s("METRIC_FOR_BEST_MODEL", "f1_macro", _pattern(r"[A-Za-z_][\w]*", "a metric name returned by compute_metrics (e.g. f1_macro)", optional=False), "training"),
        # tuning
        s("TUNING_TRIALS", "10", _int(1), "tuning"),
        s("TUNING_PARALLEL_TRIALS", "1", _int(1), "tuning"),
        s("TUNING_SPACE", "", _text, "tuning"),
        s("TUNING_OBJECTIVE", "", _pattern(r"[A-Za-z_][\w]*", "a metric name (empty = METRIC_FOR_BEST_MODEL)"), "tuning"),
        s("TUNING_DIRECTION", "maximize", _choice("maximize", "minimize"), "tuning"),
        s("TUNING_TRIAL_EPOCHS", "", _optional_float(0), "tuning"),
        # tracking
        s("WANDB_PROJECT", "", _pattern(r"[^/\\#?%:]{1,128}", "a W&B project name (no / \\ # ? % :, at most 128 characters)"), "tracking"),
        s("WANDB_ENTITY", "", _pattern(r"[\w-]{1,64}", "a W&B entity (user or team name)"), "tracking"),
        s("WANDB_MODE", "offline", _choice("offline", "online", "disabled"), "tracking"),
        # SageMaker
        s("AWS_REGION", "us-east-1", _pattern(AWS_REGION_RE, "an AWS region such as us-east-1"), "sagemaker"),
        s("SAGEMAKER_ROLE_ARN", "", _pattern(ROLE_ARN_RE, "an IAM role ARN such as arn:aws:iam::123456789012:role/SageMakerRole"), "sagemaker"),
        s("IMAGE_URI", "", _pattern(r"\S+(:[\w.-]+|@sha256:[0-9a-f]{64})", "an image URI with a tag, such as 123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:tag"), "sagemaker"),
        s("TRAINING_INSTANCE_TYPE", "ml.g5.2xlarge", _pattern(INSTANCE_TYPE_RE, "a SageMaker instance type such as ml.g5.2xlarge"), "sagemaker"),
        s("TRAINING_INSTANCE_COUNT", "1", _int(1), "sagemaker"),
        s("PREPARATION_INSTANCE_TYPE", "ml.m5.2xlarge", _pattern(INSTANCE_TYPE_RE, "a SageMaker instance type such as ml.m5.2xlarge"), "sagemaker"),
        s("INFERENCE_INSTANCE_TYPE", "ml.g5.xlarge", _pattern(INSTANCE_TYPE_RE, "a SageMaker instance type such as ml.g5.xlarge"), "sagemaker"),
        s("USE_SPOT", "false", _bool, "sagemaker"),
        s("MAX_RUN_HOURS", "24", _float(0, 28 * 24, low_open=True), "sagemaker"),
        s("MAX_WAIT_HOURS", "48", _float(0, 28 * 24, low_open=True), "sagemaker"),
        s("VOLUME_SIZE_GB", "100", _int(1), "sagemaker"),
        s("KMS_KEY_ID", "", _text, "sagemaker"),
        s("SUBNETS", "", _list(_pattern(r"subnet-[0-9a-f]+", "a subnet id such as subnet-0abc123")), "sagemaker"),
        s("SECURITY_GROUP_IDS", "", _list(_pattern(r"sg-[0-9a-f]+", "a security group id such as sg-0abc123")), "sagemaker"),
    )


SETTINGS: tuple[Setting, ...] = _settings()
KNOWN_KEYS = frozenset(s.key for s in SETTINGS)
# Secrets never belong in settings.ini (it is committed); they come from the environment.
SECRET_KEYS = frozenset({"WANDB_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN"})


@dataclass(frozen=True)
class Config:
    """Every setting of every step, typed. Field names are the settings' keys in lower case."""

    experiment_dir: Path
    experiment_name: str
    run_num: int | None
    udf_module: str
    run_reconciliation: bool
    run_preparation: bool
    run_training: bool
    run_tuning: bool
    run_inference: bool
    backend: str
    storage_uri: str
    num_processes: int | None
    model_names: tuple[str, ...]
    split_ratios: tuple[float, float, float]
    seed: int
    max_length: int
    num_train_epochs: float
    learning_rate: float
    per_device_train_batch_size: int
    per_device_eval_batch_size: int
    gradient_accumulation_steps: int
    warmup_ratio: float
    weight_decay: float
    mixed_precision: str
    early_stopping_patience: int
    metric_for_best_model: str
    tuning_trials: int
    tuning_parallel_trials: int
    tuning_space: str
    tuning_objective: str
    tuning_direction: str
    tuning_trial_epochs: float | None
    wandb_project: str
    wandb_entity: str
    wandb_mode: str
    aws_region: str
    sagemaker_role_arn: str
    image_uri: str
    training_instance_type: str
    training_instance_count: int
    preparation_instance_type: str
    inference_instance_type: str
    use_spot: bool
    max_run_hours: float
    max_wait_hours: float
    volume_size_gb: int
    kms_key_id: str
    subnets: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    # The raw text of every setting as read (file or environment): the manifest's snapshot.
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps switched on, in pipeline order."""
        return tuple(step for step in STEPS if getattr(self, f"run_{step}"))

    @property
    def objective(self) -> str:
        return self.tuning_objective or self.metric_for_best_model

    def with_overrides(self, overrides: Mapping[str, str], source: str = "override") -> Config:
        """The same settings with ``overrides`` (key -> text, as in settings.ini) applied and
        checked like the rest; ``raw`` holds them too, so every process and job that starts
        from this config gets them. ConfigError names each bad override."""
        unknown = sorted(set(overrides) - KNOWN_KEYS)
        if unknown:
            raise ConfigError([Problem(key, f"is not a setting ({source})") for key in unknown])
        if not overrides:
            return self
        raw = {**self.raw, **{key: str(value) for key, value in overrides.items()}}
        return _build(self.experiment_dir, raw, [], lambda key: source if key in overrides else SETTINGS_FILE)


def load_config(experiment_dir: str | os.PathLike[str] = ".", environ: Mapping[str, str] | None = None) -> Config:
    """Read ``<experiment_dir>/settings.ini`` (environment variables override it).

    Raises :class:`ConfigError` listing every problem found.
    """
    env = os.environ if environ is None else environ
    experiment_dir = Path(experiment_dir).resolve()
    path = experiment_dir / SETTINGS_FILE
    repository = _read_ini(path)
    file_keys_lower = set(repository.parser.options(SECTION))
    file_keys = {k.upper() for k in file_keys_lower}

    problems: list[Problem] = []
    for key in sorted(file_keys - KNOWN_KEYS):
        if key in SECRET_KEYS:
            problems.append(Problem(key, f"is a secret and must not be in {SETTINGS_FILE} (it gets committed); remove it and set it in the environment instead"))
        elif key in RENAMED:
            problems.append(Problem(key, f"was renamed to {RENAMED[key]}; rename it in {SETTINGS_FILE}"))
        else:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            hint = f"did you mean {close[0]}?" if close else "remove it or check the spelling"
            problems.append(Problem(key, f"unknown setting in {SETTINGS_FILE}; {hint}"))
    for key in sorted(set(RENAMED) & set(env)):
        problems.append(Problem(key, f"was renamed to {RENAMED[key]}; set the environment variable {RENAMED[key]} instead (and unset {key})"))

    raw: dict[str, str] = {}
    from_env: set[str] = set()
    for setting in SETTINGS:
        # As python-decouple does: the environment first, then the file, then the default.
        # (``environ`` is explicit so that tests and callers control it.)
        if setting.key in env:
            raw[setting.key] = env[setting.key]
            from_env.add(setting.key)
        elif setting.key.lower() in file_keys_lower:
            # raw: a '%' in a value is just a character, not configparser interpolation
            raw[setting.key] = repository.parser.get(SECTION, setting.key, raw=True)
        else:
            raw[setting.key] = setting.default
    return _build(experiment_dir, raw, problems, lambda key: "environment variable" if key in from_env else SETTINGS_FILE)


def _build(experiment_dir: Path, raw: dict[str, str], problems: list[Problem], source: Callable[[str], str]) -> Config:
    """Parse every setting's text (``raw``), check the rules between settings, build the Config."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        try:
            values[setting.key.lower()] = setting.parse(raw[setting.key])
        except ValueError as exc:
            problems.append(Problem(setting.key, f"{exc} (from {source(setting.key)})"))
    problems.extend(_cross_checks(values))
    if problems:
        raise ConfigError(problems)
    values["storage_uri"] = _resolve_storage_uri(values["storage_uri"], experiment_dir)
    return Config(experiment_dir=experiment_dir, raw=raw, **values)


def _read_ini(path: Path) -> RepositoryIni:
    if not path.is_file():
        raise ConfigError([Problem(str(path), f"not found; run exp in an experiment folder (one with a {SETTINGS_FILE})")])
    try:
        repository = RepositoryIni(str(path))
    except configparser.MissingSectionHeaderError:
        raise ConfigError([Problem(SETTINGS_FILE, f"has no [{SECTION}] section; put a [{SECTION}] line above the settings")]) from None
    except configparser.Error as exc:
        message = str(exc).replace("\n", " ")
        raise ConfigError([Problem(SETTINGS_FILE, f"is not a valid ini file: {message}")]) from None
    if not repository.parser.has_section(SECTION):
        raise ConfigError([Problem(SETTINGS_FILE, f"has no [{SECTION}] section; put every setting under a [{SECTION}] line")])
    return repository


def _cross_checks(v: dict[str, Any]) -> list[Problem]:
    """Rules that involve more than one setting; a rule whose settings did not parse is skipped
    (their own problems are already reported)."""
    problems: list[Problem] = []

    def has(*keys: str) -> bool:
        return all(key in v for key in keys)

    if has("model_names") and not v["model_names"]:
        problems.append(Problem("MODEL_NAMES", "is empty; list at least one model name (comma separated)"))
    switches = [f"run_{step}" for step in STEPS]
    if has(*switches) and not any(v[s] for s in switches):
        problems.append(Problem("RUN_*", "every step is switched off; set at least one of " + ", ".join(s.upper() for s in switches) + " to true"))
    if has("run_tuning", "tuning_space") and v["run_tuning"] and not v["tuning_space"]:
        problems.append(Problem("TUNING_SPACE", "is empty but RUN_TUNING is true; describe the search space or set RUN_TUNING = false"))
    if has("tuning_parallel_trials", "tuning_trials") and v["tuning_parallel_trials"] > v["tuning_trials"]:
        problems.append(Problem("TUNING_PARALLEL_TRIALS", f"({v['tuning_parallel_trials']}) is larger than TUNING_TRIALS ({v['tuning_trials']}); lower it"))
    if has("wandb_mode", "wandb_project") and v["wandb_mode"] != "disabled" and not v["wandb_project"]:
        problems.append(Problem("WANDB_PROJECT", "is empty; name a W&B project or set WANDB_MODE = disabled"))
    if has("subnets", "security_group_ids") and bool(v["subnets"]) != bool(v["security_group_ids"]):
        missing = "SUBNETS" if not v["subnets"] else "SECURITY_GROUP_IDS"
        problems.append(Problem(missing, "SUBNETS and SECURITY_GROUP_IDS go together (VPC mode); set both or neither"))
    if has("backend") and v["backend"] == "sagemaker":
        for key in ("SAGEMAKER_ROLE_ARN", "IMAGE_URI", "AWS_REGION", "TRAINING_INSTANCE_TYPE", "PREPARATION_INSTANCE_TYPE", "INFERENCE_INSTANCE_TYPE"):
            if has(key.lower()) and not v[key.lower()]:
                problems.append(Problem(key, "is required when BACKEND = sagemaker"))
        if has("storage_uri") and not v["storage_uri"].startswith("s3://"):
            problems.append(Problem("STORAGE_URI", "must be an s3:// URI when BACKEND = sagemaker (jobs read and write S3)"))
        if has("use_spot", "max_wait_hours", "max_run_hours") and v["use_spot"] and v["max_wait_hours"] < v["max_run_hours"]:
            problems.append(Problem("MAX_WAIT_HOURS", f"({v['max_wait_hours']:g}) must be >= MAX_RUN_HOURS ({v['max_run_hours']:g}) when USE_SPOT = true"))
    return problems


def _resolve_storage_uri(uri: str, experiment_dir: Path) -> str:
    """``file://relative`` is relative to the experiment folder; store it absolute."""
    if uri.startswith("file://"):
        path = Path(uri[len("file://"):] or ".")
        if not path.is_absolute():
            path = experiment_dir / path
        return "file://" + str(path.resolve())
    return uri


def read_settings_file(experiment_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Every setting's text as settings.ini gives it (its value there, else the default), without
    the environment and without checking the values."""
    parser = configparser.ConfigParser()
    parser.read(os.path.join(experiment_dir, SETTINGS_FILE), encoding="utf-8")
    in_file = parser.has_section(SECTION)
    return {s.key: parser.get(SECTION, s.key, raw=True) if in_file and parser.has_option(SECTION, s.key) else s.default for s in SETTINGS}

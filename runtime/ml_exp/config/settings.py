"""settings.ini -> one typed, immutable, validated :class:`Config`.

Every setting is declared once, as a field of :class:`Config`: its type, its default (the text,
as written in settings.ini), its parser, its group and its help (the comment above it in the
template's settings.ini, which ``make settings-ini`` writes from these declarations).

Pure: reads the file (through python-decouple, so environment variables override it) and the
environment, nothing else. Every problem is collected, none stops the reading early, so a user
sees all of them at once in a :class:`ProblemsFound`.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decouple import RepositoryIni

from ml_exp.config.parsers import (
    Parser,
    indented_settings,
    parse_auto_or_int,
    parse_backend,
    parse_bool,
    parse_choice,
    parse_experiment_name,
    parse_float,
    parse_int,
    parse_label_thresholds,
    parse_list,
    parse_model_names,
    parse_optional_choice_int,
    parse_optional_float,
    parse_pattern,
    parse_review_precision,
    parse_split_ratios,
    parse_storage_uri,
    parse_text,
)
from ml_exp.config.rules import cross_checks
from ml_exp.core import names
from ml_exp.core.errors import Problem, ProblemsFound
from ml_exp.core.names import AWS_REGION_RE, INSTANCE_TYPE_RE, ROLE_ARN_RE, WANDB_ENTITY_RE, WANDB_PROJECT_RE
from ml_exp.core.names import STEP_NAMES as STEPS

SETTINGS_FILE = "settings.ini"
SECTION = "settings"
# Settings that were renamed: refused under their old name, with the new one.
RENAMED = {"INSTANCE_TYPE": "TRAINING_INSTANCE_TYPE", "INSTANCE_COUNT": "TRAINING_INSTANCE_COUNT"}
# Secrets never belong in settings.ini (it is committed); they come from the environment.
SECRET_KEYS = frozenset(
    {"WANDB_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN"}
)
# The groups of settings, in settings.ini's order: name -> the heading of its part of the file.
GROUPS = {
    "identity": "identity",
    "steps": "steps: which ones `exp run` runs, in this order",
    "where": "where",
    "data": "data",
    "training": "training (names as in transformers.TrainingArguments)",
    "tuning": "tuning (used when RUN_TUNING = true)",
    "tracking": "tracking (Weights & Biases; the key: WANDB_API_KEY here, WANDB_API_KEY_SECRET on SageMaker)",
    "sagemaker": "SageMaker (used when BACKEND = sagemaker)",
}


@dataclass(frozen=True)
class Setting:
    """One setting: ``key`` in settings.ini, ``default`` text, ``parse`` (text -> value, raises
    ValueError), ``group`` (one of GROUPS) and ``help`` (lines of the comment above it)."""

    key: str
    default: str
    parse: Parser
    group: str
    help: str


def setting(default: str, parse: Parser, group: str, help: str) -> Any:
    """Declare a setting as a field of Config (the field's name in upper case is its key).
    No dataclass default: a Config is always built by load_config, from the text."""
    if group not in GROUPS:
        raise ValueError(f"unknown settings group {group!r}; use one of {', '.join(GROUPS)}")
    return field(metadata={"setting": {"default": default, "parse": parse, "group": group, "help": help}})


def step_switch(step: str, default: str) -> Any:
    """``RUN_<STEP>``: its help is the step's own summary (ml_exp.core.names.STEPS)."""
    summary = next(s.summary for s in names.STEPS if s.name == step)
    return setting(default, parse_bool, "steps", f"{step.capitalize()}: {summary}.")


def _instance_type(example: str) -> Parser:
    return parse_pattern(INSTANCE_TYPE_RE, f"a SageMaker instance type such as {example}")


def _metric_name(what: str, optional: bool) -> Parser:
    return parse_pattern(r"[A-Za-z_]\w*", what, optional=optional)


@dataclass(frozen=True)
class Config:
    """Every setting of every step, typed. Field names are the settings' keys in lower case."""

    experiment_dir: Path
    # --- identity
    experiment_name: str = setting(
        "",
        parse_experiment_name,
        "identity",
        "Folder name of this experiment in storage, wandb group, prefix of SageMaker job names.",
    )
    run_num: int | None = setting(
        "auto",
        parse_auto_or_int,
        "identity",
        "auto = the next free run number; an integer = that run (it must not exist yet).",
    )
    udf_module: str = setting(
        "experiment",
        parse_pattern(r"[A-Za-z_][\w.]*", "a Python module name (e.g. experiment)", optional=False),
        "identity",
        "Python module (in this folder) holding the five functions.",
    )
    model_package_group: str = setting(
        "",
        parse_pattern(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", "a name of letters, digits and '-'"),
        "identity",
        "The use case: exp register's model registry group (empty = the ticket prefix, EXP of EXP-3333-longformer).",
    )
    # --- steps, in pipeline order (checked against ml_exp.core.names.STEPS below)
    run_reconciliation: bool = step_switch(names.RECONCILIATION, "true")
    run_preparation: bool = step_switch(names.PREPARATION, "true")
    run_tuning: bool = step_switch(names.TUNING, "false")
    run_training: bool = step_switch(names.TRAINING, "true")
    run_inference: bool = step_switch(names.INFERENCE, "true")
    # --- where
    backend: str = setting(
        "local",
        parse_backend,
        "where",
        "local = processes on this machine; sagemaker = SageMaker jobs from IMAGE_URI;\n"
        "or the dotted name of a module whose BACKEND runs the tasks elsewhere.",
    )
    storage_uri: str = setting(
        "file://.exp-store",
        parse_storage_uri,
        "where",
        "file://<path> (a relative path is relative to this folder) or s3://bucket/prefix.\n"
        "Runs land in <STORAGE_URI>/<EXPERIMENT_NAME>/run_<N>/.",
    )
    num_processes: int | None = setting(
        "auto",
        parse_auto_or_int,
        "where",
        "Training processes: auto = one per GPU (1 on CPU); an integer forces that many (gloo on CPU).",
    )
    # --- data
    model_names: tuple[str, ...] = setting(
        "",
        parse_model_names,
        "data",
        "Models to fine-tune, comma separated (Hub names, or names load_model knows); several make a comparison job.",
    )
    split_ratios: tuple[float, float, float] = setting(
        "0.8,0.1,0.1",
        parse_split_ratios,
        "data",
        "train,validation,test fractions of the reconciled records (stratified by label); sum to 1.",
    )
    seed: int = setting("42", parse_int(0), "data", "Random seed of the split, of training and of the tuning sampler.")
    problem_type: str = setting(
        names.SINGLE_LABEL,
        parse_choice(*names.PROBLEM_TYPES),
        "data",
        "single_label = a record's label is one class name; multi_label = a list of them (a document may be\n"
        "several types at once, or none: []), trained with a sigmoid per label and split by iterative stratification.",
    )
    data_from: str = setting(
        "",
        parse_pattern(r"((file|s3)://\S+/)?[A-Za-z0-9][A-Za-z0-9._-]*/run_[1-9]\d*", "EXPERIMENT/run_N"),
        "data",
        "Reuse another run's reconciled records and split (e.g. EXP-3333-longformer/run_4, in STORAGE_URI, or a full\n"
        "file:// or s3:// URI of the run): reconciliation copies them, preparation keeps their train/validation/test.",
    )
    max_length: int = setting(
        "512",
        parse_int(1),
        "data",
        "Tokens per model input (per window with DOCUMENT_STRATEGY = chunks), special tokens included.",
    )
    document_strategy: str = setting(
        "truncate",
        parse_choice(*names.DOCUMENT_STRATEGIES),
        "data",
        "What the model sees of a document longer than MAX_LENGTH: truncate = its first MAX_LENGTH tokens;\n"
        "head_tail = its first and last tokens (a quarter head, three quarters tail); chunks = all of it,\n"
        "in windows of MAX_LENGTH tokens (trained as CHUNK_TRAINING says; scores combined per document).",
    )
    chunk_stride: int = setting(
        "64",
        parse_int(0),
        "data",
        "DOCUMENT_STRATEGY = chunks: tokens two neighbouring windows share (0 <= CHUNK_STRIDE < MAX_LENGTH).",
    )
    max_chunks: int = setting(
        "0",
        parse_int(0),
        "data",
        "DOCUMENT_STRATEGY = chunks: training windows per document, evenly spaced when it has more (0 = all);\n"
        "validation, test and predictions always use every window. A window left out may be the one that\n"
        "decides (CHUNK_TRAINING = document cannot learn from it): bound memory with CHUNK_GRAD_WINDOWS instead.",
    )
    chunk_aggregation: str = setting(
        "mean",
        parse_choice("mean", "max"),
        "data",
        "DOCUMENT_STRATEGY = chunks: a document's scores from its windows' class probabilities: mean | max (per\n"
        "class, scaled to sum to 1). CHUNK_TRAINING = document with max learns from each class's highest logit,\n"
        "so that filler can score low for every class: use max where one passage decides a long document.",
    )
    chunk_training: str = setting(
        "windows",
        parse_choice("windows", "document"),
        "data",
        "DOCUMENT_STRATEGY = chunks: windows = each training window learns its document's label;\n"
        "document = a batch holds whole documents, their windows' scores combined by CHUNK_AGGREGATION,\n"
        "the loss the document's (for long documents mostly filler: the gradient finds the deciding window).",
    )
    chunk_grad_windows: int = setting(
        "0",
        parse_int(0),
        "data",
        "CHUNK_TRAINING = document: windows per document trained with gradients (0 = all): every window is\n"
        "scored without them, then each document's most confident windows again with them; memory then\n"
        "grows with this number, not with the documents' length, for one more forward pass of those windows.",
    )
    chunk_window_epochs: int = setting(
        "1",
        parse_int(0),
        "data",
        "CHUNK_TRAINING = document: first epochs that train window by window (each window its document's\n"
        "label, windows of many documents a batch, at most CHUNK_GRAD_WINDOWS per document of the batch), then\n"
        "the document loss, which from the first step found the deciding windows in only 2 runs of 3; at most\n"
        "all epochs but the last (a run or tuning trial of one epoch: the document loss only); 0 = never.",
    )
    # --- training
    num_train_epochs: float = setting(
        "3",
        parse_float(0, 10_000, low_open=True),
        "training",
        "Passes over the training split (a fraction is allowed).",
    )
    learning_rate: float = setting(
        "5e-5",
        parse_float(0, 1, low_open=True),
        "training",
        "Peak learning rate of AdamW (reached after the warm-up, then decaying linearly).",
    )
    per_device_train_batch_size: int = setting(
        "8", parse_int(1), "training", "Records per batch in each training process."
    )
    per_device_eval_batch_size: int = setting(
        "16",
        parse_int(1),
        "training",
        "Records per batch in evaluation and inference (on a GPU, the inference step fills batches of\n"
        "shorter records up to the tokens of its longest batch, at most 8 times as many records).",
    )
    gradient_accumulation_steps: int = setting(
        "1", parse_int(1), "training", "Batches per optimizer step (effective batch = this x batch size x processes)."
    )
    warmup_ratio: float = setting(
        "0.0", parse_float(0, 1), "training", "Fraction of the training steps that warm the learning rate up from 0."
    )
    weight_decay: float = setting("0.0", parse_float(0), "training", "AdamW weight decay (0 = none).")
    train_sampling_strategy: str = setting(
        "auto",
        parse_choice("auto", "random", "group_by_length"),
        "training",
        "Order of the training records: group_by_length = batches of similar lengths, drawn from small shuffled pools "
        "(less\n"
        "padding: faster when lengths vary); random = plain shuffling; auto = group_by_length when random batches "
        "would be\n"
        "more than 10% padding and lengths do not sort the labels; else random (always with DOCUMENT_STRATEGY = "
        "chunks).",
    )
    mixed_precision: str = setting(
        "no",
        parse_choice("no", "fp16", "bf16"),
        "training",
        "no | fp16 | bf16 (fp16/bf16 need a GPU that supports them).",
    )
    early_stopping_patience: int = setting(
        "3", parse_int(0), "training", "Stop after this many evaluations without improvement (0 = never stop early)."
    )
    metric_for_best_model: str = setting(
        "f1_macro",
        _metric_name("a metric name returned by compute_metrics (e.g. f1_macro)", optional=False),
        "training",
        "A key of the dict compute_metrics returns; picks the best checkpoint.",
    )
    class_weights: str = setting(
        "none",
        parse_choice("none", "balanced"),
        "training",
        "none | balanced: weigh each class's loss by records / (classes x its records in the\n"
        "training split), so that rare classes count as much as frequent ones (imbalanced data).",
    )
    label_thresholds: str = setting(
        "f1",
        parse_label_thresholds,
        "training",
        "PROBLEM_TYPE = multi_label: each label's probability threshold, chosen on the validation split after\n"
        "training and saved with the model: f1 (each label's best F1) | precision:<p> (the lowest reaching p) | <t>.",
    )
    calibration: str = setting(
        "temperature",
        parse_choice("temperature", "none"),
        "training",
        "temperature = scale the scores by a temperature fitted on the validation split (one per label in\n"
        "multi_label), so that a score of 0.8 is right about 80% of the time; it never changes which class wins.",
    )
    review_target_precision: float | None = setting(
        "",
        parse_review_precision,
        "training",
        "E.g. 0.98: predictions at least as confident as the validation split needs to reach this precision go\n"
        "straight through, the rest are marked needs_review (predictions, exp predict, exp serve). Empty = off.",
    )
    full_determinism: bool = setting(
        "false",
        parse_bool,
        "training",
        "true = deterministic kernels too (torch.use_deterministic_algorithms; slower, repeatable on GPUs as far as\n"
        "PyTorch allows); false = SEED alone (the same metrics on the same CPU machine; GPU kernels may still vary).",
    )
    # --- tuning
    tuning_trials: int = setting("10", parse_int(1), "tuning", "Trials per model.")
    tuning_parallel_trials: int = setting(
        "1", parse_int(1), "tuning", "Trials run at the same time (at most TUNING_TRIALS)."
    )
    tuning_space: str = setting(
        "",
        parse_text,
        "tuning",
        "The search space, one term per hyper-parameter, separated by ';' (or on indented lines), e.g.\n"
        "TUNING_SPACE = learning_rate = log-uniform(1e-5, 5e-4); per_device_train_batch_size = choice(8, 16, 32);\n"
        "    num_train_epochs = int(2, 5); warmup_ratio = uniform(0, 0.2)\n"
        "Distributions: uniform(low, high), log-uniform(low, high), int(low, high), log-int(low, high),\n"
        "choice(a, b, ...). Tunable: learning_rate, num_train_epochs, per_device_train_batch_size,\n"
        "gradient_accumulation_steps, warmup_ratio, weight_decay.",
    )
    tuning_objective: str = setting(
        "",
        _metric_name("a metric name (empty = METRIC_FOR_BEST_MODEL)", optional=True),
        "tuning",
        "Metric to optimise (empty = METRIC_FOR_BEST_MODEL).",
    )
    tuning_direction: str = setting(
        "maximize", parse_choice("maximize", "minimize"), "tuning", "Direction of the objective: maximize | minimize."
    )
    tuning_trial_epochs: float | None = setting(
        "",
        parse_optional_float(0),
        "tuning",
        "A smaller budget per trial: at most this many epochs (empty = as NUM_TRAIN_EPOCHS / the space).",
    )
    # --- tracking
    wandb_project: str = setting(
        "",
        parse_pattern(WANDB_PROJECT_RE, "a W&B project name (no spaces, no / \\ # ? % :, at most 128 characters)"),
        "tracking",
        "W&B project of the runs (the experiment is a group in it).",
    )
    wandb_entity: str = setting(
        "",
        parse_pattern(WANDB_ENTITY_RE, "a W&B entity (user or team name)"),
        "tracking",
        "W&B user or team (empty = the default entity of your API key).",
    )
    wandb_mode: str = setting(
        "offline",
        parse_choice("offline", "online", "disabled"),
        "tracking",
        "offline (default, nothing leaves this machine) | online (needs WANDB_API_KEY) | disabled.",
    )
    wandb_api_key_secret: str = setting(
        "",
        parse_pattern(r"[A-Za-z0-9/_+=.@:-]{1,2048}", "a Secrets Manager secret name or ARN"),
        "tracking",
        "SageMaker: the Secrets Manager secret (name or ARN) of the W&B key; jobs read it at start, never in requests",
    )
    # --- sagemaker
    aws_region: str = setting(
        "us-east-1",
        parse_pattern(AWS_REGION_RE, "an AWS region such as us-east-1"),
        "sagemaker",
        "Region of the SageMaker jobs.",
    )
    sagemaker_role_arn: str = setting(
        "",
        parse_pattern(ROLE_ARN_RE, "an IAM role ARN such as arn:aws:iam::123456789012:role/SageMakerRole"),
        "sagemaker",
        "IAM role the SageMaker jobs run as.",
    )
    image_uri: str = setting(
        "",
        parse_pattern(
            r"\S+(:[\w.-]+|@sha256:[0-9a-f]{64})",
            "an image URI with a tag, such as 123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:tag",
        ),
        "sagemaker",
        "The image of the SageMaker jobs, with its tag: the URI scripts/build_and_push.sh prints.",
    )
    training_instance_type: str = setting(
        "ml.g5.2xlarge",
        _instance_type("ml.g5.2xlarge"),
        "sagemaker",
        "Training instances (tuning trials use them too): their type.",
    )
    training_instance_count: int = setting(
        "1",
        parse_int(1),
        "sagemaker",
        "Training instances (tuning trials use them too): how many; more than 1 = one torchrun across them.",
    )
    preparation_instance_type: str = setting(
        "ml.m5.2xlarge",
        _instance_type("ml.m5.2xlarge"),
        "sagemaker",
        "Instance of the preparation job (encoding: CPUs, no GPU needed).",
    )
    inference_instance_type: str = setting(
        "ml.g5.xlarge",
        _instance_type("ml.g5.xlarge"),
        "sagemaker",
        "Instance of the inference jobs (every model on the test split).",
    )
    endpoint_instance_type: str = setting(
        "ml.g4dn.xlarge",
        _instance_type("ml.g4dn.xlarge"),
        "sagemaker",
        "Instances of the endpoint exp deploy creates from a run's model: their type.",
    )
    endpoint_instance_count: int = setting(
        "1", parse_int(1), "sagemaker", "Instances of that endpoint: how many (requests are spread over them)."
    )
    endpoint_serverless_memory_mb: int | None = setting(
        "",
        parse_optional_choice_int(1024, 2048, 3072, 4096, 5120, 6144),
        "sagemaker",
        "exp deploy: a serverless endpoint with this much memory (1024 to 6144, in steps of 1024) instead of\n"
        "instances (empty = instances). Serverless endpoints have no GPU and cannot be in a VPC.",
    )
    serving_image_uri: str = setting(
        "",
        parse_pattern(r"\S+(:[\w.-]+|@sha256:[0-9a-f]{64})", "an image URI with a tag"),
        "sagemaker",
        "exp deploy: the CPU serving image (make serving-image: no CUDA, no training stack); serverless needs it.",
    )
    endpoint_image: str = setting(
        "auto",
        parse_choice("auto", "serving", "training"),
        "sagemaker",
        "Endpoint image: auto (SERVING_IMAGE_URI if serverless, else IMAGE_URI) | serving | training (IMAGE_URI).",
    )
    serve_timeout_s: float = setting(
        "50",
        parse_float(0, 3600, low_open=True),
        "sagemaker",
        "exp serve and endpoints: a request's work is dropped after this many seconds (503); under SageMaker's 60.",
    )
    use_spot: bool = setting(
        "false",
        parse_bool,
        "sagemaker",
        "Managed spot training; MAX_WAIT_HOURS (>= MAX_RUN_HOURS) bounds the wait for capacity.",
    )
    max_run_hours: float = setting(
        "24",
        parse_float(0, 28 * 24, low_open=True),
        "sagemaker",
        "A job is stopped after running this many hours (at most 28 days).",
    )
    max_wait_hours: float = setting(
        "48",
        parse_float(0, 28 * 24, low_open=True),
        "sagemaker",
        "With USE_SPOT: hours a job may take in all, waiting for capacity included.",
    )
    volume_size_gb: int = setting(
        "100", parse_int(1, 16384), "sagemaker", "Disk of each instance in GB (data, checkpoints, the model)."
    )
    kms_key_id: str = setting(
        "",
        parse_pattern(r"[a-zA-Z0-9:/_-]{1,2048}", "a KMS key id, key ARN, alias/<name> or alias ARN"),
        "sagemaker",
        "Optional KMS key: outputs, and volumes of types without local NVMe storage (g4dn, g5, g6, p4d: none).",
    )
    subnets: tuple[str, ...] = setting(
        "",
        parse_list(parse_pattern(r"subnet-[0-9a-f]+", "a subnet id such as subnet-0abc123")),
        "sagemaker",
        "Optional VPC mode: subnets (comma separated), together with SECURITY_GROUP_IDS.",
    )
    security_group_ids: tuple[str, ...] = setting(
        "",
        parse_list(parse_pattern(r"sg-[0-9a-f]+", "a security group id such as sg-0abc123")),
        "sagemaker",
        "Optional VPC mode: security groups (comma separated), together with SUBNETS.",
    )
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
        from this config gets them. ProblemsFound names each bad override."""
        unknown = sorted(set(overrides) - KNOWN_KEYS)
        if unknown:
            raise ProblemsFound([Problem(key, f"is not a setting ({source})") for key in unknown])
        if not overrides:
            return self
        raw = {**self.raw, **{key: str(value) for key, value in overrides.items()}}
        return _build(self.experiment_dir, raw, [], lambda key: source if key in overrides else SETTINGS_FILE)


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(key=f.name.upper(), **f.metadata["setting"]) for f in dataclasses.fields(Config) if "setting" in f.metadata
)
KNOWN_KEYS = frozenset(s.key for s in SETTINGS)


def _check_table() -> None:
    """The declarations above are the single source: refuse to import when they disagree with
    the steps, or when a group is scattered (settings.ini is written group by group)."""
    switches = tuple(s.key for s in SETTINGS if s.group == "steps")
    if switches != tuple(f"RUN_{step.upper()}" for step in STEPS):
        raise AssertionError(f"the steps settings {switches} must be RUN_<STEP> for ml_exp.core.names.STEPS, in order")
    groups = [s.group for s in SETTINGS]
    runs = [group for i, group in enumerate(groups) if i == 0 or groups[i - 1] != group]
    if runs != list(GROUPS):
        raise AssertionError(
            f"settings must be declared group by group, in the order of GROUPS ({', '.join(GROUPS)}), not {runs}"
        )


_check_table()


def read_settings_file(experiment_dir: str | os.PathLike[str] = ".") -> dict[str, str]:
    """Every setting's text as ``<experiment_dir>/settings.ini`` gives it: its value there, else
    its default. No environment, nothing parsed or checked (a bad value comes back as written).
    Raises :class:`ProblemsFound` only when the file itself cannot be read (missing, not ini,
    no [settings] section)."""
    return _with_defaults(_read_ini(Path(experiment_dir) / SETTINGS_FILE))


def load_config(experiment_dir: str | os.PathLike[str] = ".", environ: Mapping[str, str] | None = None) -> Config:
    """Read ``<experiment_dir>/settings.ini`` (environment variables override it).

    Raises :class:`ProblemsFound` listing every problem found.
    """
    env = os.environ if environ is None else environ
    experiment_dir = Path(experiment_dir).resolve()
    in_file = _read_ini(experiment_dir / SETTINGS_FILE)
    problems = _unknown_keys(set(in_file), env)
    # As python-decouple does: the environment first, then the file, then the default
    # (``environ`` is explicit so that tests and callers control it).
    from_env = {key for key in KNOWN_KEYS if key in env}
    raw = {key: env[key] if key in from_env else text for key, text in _with_defaults(in_file).items()}
    return _build(
        experiment_dir, raw, problems, lambda key: "environment variable" if key in from_env else SETTINGS_FILE
    )


def _read_ini(path: Path) -> dict[str, str]:
    """Every key of the file's [settings] section (upper case) -> its text as written."""
    if not path.is_file():
        raise ProblemsFound(
            [Problem(str(path), f"not found; run exp in an experiment folder (one with a {SETTINGS_FILE})")]
        )
    try:  # utf-8-sig: a byte-order mark (some Windows editors write one) is no part of the text
        parser = RepositoryIni(str(path), encoding="utf-8-sig").parser
    except configparser.MissingSectionHeaderError:
        raise ProblemsFound(
            [Problem(SETTINGS_FILE, f"has no [{SECTION}] section; put a [{SECTION}] line above the settings")]
        ) from None
    except configparser.Error as exc:
        message = str(exc).replace("\n", " ")
        raise ProblemsFound([Problem(SETTINGS_FILE, f"is not a valid ini file: {message}")]) from None
    except UnicodeDecodeError as exc:
        raise ProblemsFound(
            [Problem(SETTINGS_FILE, f"is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8")]
        ) from None
    if not parser.has_section(SECTION):
        raise ProblemsFound(
            [Problem(SETTINGS_FILE, f"has no [{SECTION}] section; put every setting under a [{SECTION}] line")]
        )
    # ini reads an indented line as the value above continued: `\tSEED = 7` would join KMS_KEY_ID
    hidden = indented_settings(path.read_text(encoding="utf-8-sig"), KNOWN_KEYS, free_form={"TUNING_SPACE"})
    if hidden:
        raise ProblemsFound(
            [
                Problem(
                    key,
                    f"line {number} of {SETTINGS_FILE} ({line!r}) is indented, so it is read as part of the value of "
                    f"{above} above it; remove the indentation",
                )
                for number, key, line, above in hidden
            ]
        )
    # raw: a '%' in a value is just a character, not configparser interpolation
    return {key.upper(): parser.get(SECTION, key, raw=True) for key in parser.options(SECTION)}


def _with_defaults(in_file: Mapping[str, str]) -> dict[str, str]:
    return {s.key: in_file.get(s.key, s.default) for s in SETTINGS}


def _unknown_keys(file_keys: set[str], env: Mapping[str, str]) -> list[Problem]:
    """Keys in the file that are no setting (secrets, renamed ones, typos), and renamed
    settings still set in the environment."""
    problems: list[Problem] = []
    for key in sorted(file_keys - KNOWN_KEYS):
        if key in SECRET_KEYS:
            problems.append(
                Problem(
                    key,
                    f"is a secret and must not be in {SETTINGS_FILE} (it gets committed); remove it and set it in the "
                    "environment instead",
                )
            )
        elif key in RENAMED:
            problems.append(Problem(key, f"was renamed to {RENAMED[key]}; rename it in {SETTINGS_FILE}"))
        else:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            hint = f"did you mean {close[0]}?" if close else "remove it or check the spelling"
            problems.append(Problem(key, f"unknown setting in {SETTINGS_FILE}; {hint}"))
    for key in sorted(set(RENAMED) & set(env)):
        problems.append(
            Problem(
                key,
                f"was renamed to {RENAMED[key]}; set the environment variable {RENAMED[key]} instead (and unset {key})",
            )
        )
    return problems


def _build(experiment_dir: Path, raw: dict[str, str], problems: list[Problem], source: Callable[[str], str]) -> Config:
    """Parse every setting's text (``raw``), check the rules between settings, build the Config."""
    values: dict[str, Any] = {}
    for s in SETTINGS:
        try:
            values[s.key.lower()] = s.parse(raw[s.key])
        except ValueError as exc:
            problems.append(Problem(s.key, f"{exc} (from {source(s.key)})"))
    problems.extend(Problem(key, message) for key, message in cross_checks(values))
    if problems:
        raise ProblemsFound(problems)
    values["storage_uri"] = _resolve_storage_uri(values["storage_uri"], experiment_dir)
    return Config(experiment_dir=experiment_dir, raw=raw, **values)


def _resolve_storage_uri(uri: str, experiment_dir: Path) -> str:
    """``file://relative`` is relative to the experiment folder; store it absolute."""
    if uri.startswith("file://"):
        path = Path(uri[len("file://") :] or ".")
        if not path.is_absolute():
            path = experiment_dir / path
        return "file://" + str(path.resolve())
    return uri

"""Everything that can be checked before compute, all problems at once.

Deliberately light: no torch, transformers or sagemaker import on this path.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ml_exp.config import Config, load_config
from ml_exp.core.errors import Problem, ProblemsFound
from ml_exp.core.names import PREPARATION, TRUNCATE
from ml_exp.experiment.functions import check_experiment_functions

DEFAULT_UDF_MODULE = "experiment"
WANDB_HOST = "api.wandb.ai"


@dataclass
class Report:
    config: Config | None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the settings will do, said before any compute

    @property
    def ok(self) -> bool:
        return not self.problems and self.config is not None


def validate(
    experiment_dir: str | os.PathLike[str] = ".",
    environ: Mapping[str, str] | None = None,
    check_storage: bool = True,
    new_run: bool = True,
    steps: Sequence[str] | None = None,
) -> Report:
    """``new_run``: the run is about to be claimed, so an explicit RUN_NUM must be free;
    ``steps``: the steps about to run (default: those switched on in settings.ini)."""
    env = os.environ if environ is None else environ
    directory = Path(experiment_dir).resolve()
    try:
        config: Config | None = load_config(directory, env)
        problems: list[Problem] = []
    except ProblemsFound as exc:
        config, problems = None, list(exc.problems)
        if any(p.where.endswith("settings.ini") and "not found" in p.message for p in problems):
            return Report(None, problems)

    udf_module = config.udf_module if config else env.get("UDF_MODULE", DEFAULT_UDF_MODULE)
    problems += check_experiment_functions(directory, udf_module)
    if config is not None:
        problems += check_model_keys(config)
        problems += check_backend(config)
        problems += check_tuning(config)
        problems += check_tracking(config, env)
        if PREPARATION in (steps or config.steps):  # only preparation tokenizes with the user's processor
            problems += check_documents(config)
        if check_storage:
            problems += check_store(config, new_run)
            problems += check_data_from(config)
        return Report(config, problems, kms_notes(config))
    return Report(config, problems)


def kms_notes(config: Config) -> list[str]:
    """What KMS_KEY_ID encrypts: every output, and the volumes of the instance types that take a
    volume key (not those with local NVMe storage, which AWS encrypts in hardware and refuses a key for)."""
    if not config.kms_key_id:
        return []
    from ml_exp.backends.sagemaker.instances import kms_plan

    uses = {
        step: getattr(config, f"{step}_instance_type")
        for step in ("preparation", "training", "inference")
        if step in config.steps
    }
    if "tuning" in config.steps:
        uses["tuning"] = config.training_instance_type
    if not config.endpoint_serverless_memory_mb:
        uses["endpoint"] = config.endpoint_instance_type
    return [kms_plan(config.kms_key_id, uses)]


def check_backend(config: Config) -> list[Problem]:
    """A BACKEND of the team's own (a dotted module name) must import and define BACKEND; the
    built-in ones are imported only when a run uses them (the SageMaker SDK costs seconds)."""
    if "." not in config.backend:
        return []
    from ml_exp.backends import backend_for

    try:
        backend_for(config.backend, config.experiment_dir)
    except ValueError as exc:
        return [Problem("BACKEND", str(exc).removeprefix(f"BACKEND = {config.backend}: "))]
    except Exception as exc:  # noqa: BLE001 - the team's module failed to import: say how
        return [Problem("BACKEND", f"importing {config.backend} raised {type(exc).__name__}: {exc}")]
    return []


def check_model_keys(config: Config) -> list[Problem]:
    """Two model names with one folder name (``org/tiny`` and ``org--tiny``) would share every
    folder of the run: the second would fail as "already exists", or read the first's results."""
    from ml_exp.storage.layout import model_key

    first: dict[str, str] = {}
    problems = []
    for name in config.model_names:
        key = model_key(name)
        if key in first:
            problems.append(
                Problem(
                    "MODEL_NAMES",
                    f"{first[key]!r} and {name!r} both map to the folder name {key!r} in a run; "
                    "list only one of them, or rename one (e.g. a local copy under another name)",
                )
            )
        first.setdefault(key, name)
    return problems


def check_tuning(config: Config) -> list[Problem]:
    """TUNING_SPACE, term by term (when tuning is on or a space is written)."""
    if not config.tuning_space:
        return []
    from ml_exp.config.search_space import SearchSpaceError, parse_space

    try:
        parse_space(config.tuning_space)
    except SearchSpaceError as exc:
        return [Problem("TUNING_SPACE", line) for line in str(exc).splitlines()]
    return []


def check_documents(config: Config) -> list[Problem]:
    """DOCUMENT_STRATEGY = chunks or head_tail: each model's processor must return overflowing
    tokens and offsets (a fast tokenizer). Loads the processors, so only with those strategies."""
    if config.document_strategy == TRUNCATE:
        return []
    from ml_exp.core.errors import ProblemsFound
    from ml_exp.experiment.context import Context
    from ml_exp.experiment.functions import load_functions
    from ml_exp.toolkit.collate import tokenizer_of

    try:
        udfs = load_functions(config.experiment_dir, config.udf_module)
    except ProblemsFound:
        return []  # check_experiment_functions reported it
    ctx, problems = Context(config=config), []
    for name in config.model_names:
        try:
            processor = udfs.load_processor(name, ctx)
        except Exception as exc:  # noqa: BLE001 - the user's function: say what it raised
            problems.append(
                Problem(
                    f"load_processor({name!r})",
                    f"raised {type(exc).__name__}: {exc} (validate loads each processor "
                    f"to check DOCUMENT_STRATEGY = {config.document_strategy}); fix load_processor",
                )
            )
            continue
        tokenizer = tokenizer_of(processor)  # a multimodal processor: the tokenizer it holds
        if not getattr(tokenizer, "is_fast", False):
            held = "" if tokenizer is processor else f" holding a {type(tokenizer).__name__}"
            advice = (
                "return a fast tokenizer (AutoTokenizer.from_pretrained(name, use_fast=True))"
                if tokenizer is processor
                else "give the processor a fast tokenizer (AutoProcessor.from_pretrained(name, use_fast=True))"
            )
            problems.append(
                Problem(
                    "DOCUMENT_STRATEGY",
                    f"= {config.document_strategy} needs a processor that returns overflowing tokens "
                    f"and their offsets (a fast tokenizer), but load_processor({name!r}) returned a "
                    f"{type(processor).__name__}{held}; {advice} or use DOCUMENT_STRATEGY = truncate",
                )
            )
    return problems


def check_tracking(config: Config, env: Mapping[str, str]) -> list[Problem]:
    if config.wandb_mode == "online" and not env.get("WANDB_API_KEY") and not _wandb_logged_in():
        return [
            Problem(
                "WANDB_MODE",
                "is online but no W&B key is set; export WANDB_API_KEY (or run `wandb login`), or use WANDB_MODE = "
                "offline",
            )
        ]
    return []


def _wandb_logged_in() -> bool:
    """`wandb login` stores the key in ~/.netrc."""
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_store(config: Config, new_run: bool = True) -> list[Problem]:
    from ml_exp.storage.store import Store, StoreError

    store = Store.for_config(config)
    try:
        store.check_access()
        if new_run and config.run_num is not None and store.run_exists(config.run_num):
            return [
                Problem(
                    "RUN_NUM",
                    f"run_{config.run_num} already exists in {store.root} and is never overwritten; use RUN_NUM = "
                    f"auto, a free number, or `exp run --run {config.run_num}` to continue it",
                )
            ]
    except StoreError as exc:
        return [Problem("STORAGE_URI", str(exc))]
    return []


def check_data_from(config: Config) -> list[Problem]:
    """DATA_FROM names a run complete through preparation, whose data reconciliation copies."""
    if not config.data_from:
        return []
    from ml_exp.storage.sources import checked_source
    from ml_exp.storage.store import StoreError

    if not config.run_reconciliation:
        return [Problem("DATA_FROM", "is set, so RUN_RECONCILIATION must be true: that step copies the data")]
    try:
        checked_source(config.data_from, config.storage_uri)
    except StoreError as exc:
        return [Problem("DATA_FROM", str(exc))]
    return []

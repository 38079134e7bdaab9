"""A run's model, ready to serve: where its files are and what the predictor must know about it.

A bundle is the trained model folder (``models/<model>/``: safetensors, config, tokenizer,
labels.json), the processor that encoded the run's data (``data/prepared/<model>/processor``:
the predictor encodes with it, as preparation did) and :data:`~ml_exp.storage.layout.SERVING_INFO`:
the labels, the fields of the records, the run's settings and its identity (experiment, run,
model, git commit, template version). The run's settings matter: a prediction must use the
settings the model was trained with (``MAX_LENGTH``...), not today's settings.ini.

``exp predict`` / ``exp serve`` read a bundle straight from the run (file:// storage: no copy);
``exp deploy`` packs the same files as ``serving/<model>/model.tar.gz`` in the run, which
SageMaker unpacks in ``/opt/ml/model`` where :meth:`Bundle.from_folder` reads it back.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_exp import __version__
from ml_exp.config import KNOWN_KEYS, SETTINGS_FILE
from ml_exp.core.errors import StepError
from ml_exp.core.redact import redact, redact_text
from ml_exp.storage.layout import (
    COMPARISON,
    COMPLETE,
    LABELS,
    MODEL_ARCHIVE,
    MODEL_LABELS,
    PROCESSOR,
    RECONCILED,
    RECORD_FIELDS,
    SERVING_INFO,
    model_dir,
    model_key,
    prepared_dir,
    serving_dir,
)
from ml_exp.storage.store import Run

# The experiment's code in model.tar.gz (the CPU serving image's ML_EXP_EXPERIMENT_DIR is /opt/ml/model/code).
CODE = "code"
CODE_FILES = ("settings.ini", "requirements-extra.txt")


@dataclass(frozen=True)
class Bundle:
    """``model``: the folder of the trained model; ``processor``: the folder of the saved
    processor (None when preparation could not save it); ``info``: SERVING_INFO's content."""

    model: Path
    processor: Path | None
    info: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        return list(self.info["labels"])

    @property
    def fields(self) -> dict[str, str]:
        """Content field -> its Arrow type in the reconciled records (``string``, ``int64``...)."""
        return dict(self.info["fields"])

    @property
    def settings(self) -> dict[str, str]:
        """The run's settings (known keys only: a renamed setting of an old run is left out)."""
        return {
            key: "" if value is None else str(value)
            for key, value in self.info["settings"].items()
            if key in KNOWN_KEYS
        }

    @classmethod
    def from_folder(cls, folder: Path) -> Bundle:
        """A bundle unpacked in ``folder`` (SageMaker's /opt/ml/model)."""
        info_file = folder / SERVING_INFO
        if not info_file.is_file():
            raise StepError(
                f"{folder} holds no {SERVING_INFO}: it is not a model packed by exp deploy "
                f"(found: {sorted(p.name for p in folder.iterdir()) if folder.is_dir() else 'no such folder'})."
            )
        processor = folder / PROCESSOR
        return cls(folder, processor if processor.is_dir() else None, json.loads(info_file.read_text()))

    def pack(self, archive: Path, code: Path | None = None) -> Path:
        """``model.tar.gz`` with the model's files at its root, processor/ and SERVING_INFO, and
        the experiment's code (:func:`code_files` of the folder ``code``) in code/: the CPU
        serving image holds no experiment, so its predictor reads the five functions from there."""
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(self.model.iterdir()):
                if path.name not in (COMPLETE, SERVING_INFO, PROCESSOR, CODE):
                    tar.add(path, arcname=path.name)
            for path in code_files(code) if code is not None else []:
                if path.name == SETTINGS_FILE and len(path.parts) == 1:  # a URL in it may hold credentials
                    _add_bytes(tar, f"{CODE}/{path.as_posix()}", redact_text((code / path).read_text("utf-8")).encode())
                else:
                    tar.add(code / path, arcname=f"{CODE}/{path.as_posix()}", recursive=False)
            if self.processor is not None:
                tar.add(self.processor, arcname=PROCESSOR)
            _add_bytes(tar, SERVING_INFO, json.dumps(redact(self.info), indent=2).encode())
        return archive


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))


def code_files(experiment_dir: Path) -> list[Path]:
    """What the predictor needs of an experiment's folder, relative to it: settings.ini, the
    requirements, the Python modules at its top and the packages below it (folders with an
    __init__.py), not its tests, storage, data or hidden folders."""
    top = [p for p in experiment_dir.iterdir() if p.is_file() and (p.suffix == ".py" or p.name in CODE_FILES)]
    packages = [
        p
        for p in experiment_dir.iterdir()
        if p.is_dir() and (p / "__init__.py").is_file() and not p.name.startswith(".") and p.name != "tests"
    ]
    found = top + [f for package in packages for f in package.rglob("*.py") if "__pycache__" not in f.parts]
    return sorted(f.relative_to(experiment_dir) for f in found)


def best_model(run: Run) -> str:
    """The run's best model on its comparison metric (comparison.json, written by inference)."""
    if not run.exists(COMPARISON):
        raise StepError(
            f"run_{run.num} has no {COMPARISON} (its inference step has not completed), so it has no best "
            "model yet; name the model with --model, or finish the run with exp run --run "
            f"{run.num}."
        )
    return str(run.read_json(COMPARISON)["best_model"])


def from_run(run: Run, model_name: str | None, scratch: Path) -> Bundle:
    """The bundle of ``model_name`` (default: the run's best) read from the run's storage;
    files on S3 are downloaded under ``scratch``, local ones are used where they are."""
    manifest = run.read_manifest()
    names = list(str(manifest.get("settings", {}).get("MODEL_NAMES") or "").split(","))
    model_name = model_name or best_model(run)
    if not run.is_complete(model_dir(model_name)):
        known = ", ".join(n.strip() for n in names if n.strip()) or "none"
        raise StepError(
            f"run_{run.num} has no trained model {model_name!r} ({run.path(model_dir(model_name))} is missing "
            f"or incomplete); the run's models: {known}."
        )
    trained = run.local_input(model_dir(model_name), scratch)
    processor = _processor(run, model_name, scratch)
    info = {
        "experiment": manifest.get("experiment", run.experiment_name),
        "run": run.num,
        "model": model_name,
        "model_key": model_key(model_name),
        "labels": _labels(run, trained),
        "fields": record_fields(run),
        "settings": dict(manifest.get("settings", {})),
        "git": manifest.get("git"),
        "template_version": (manifest.get("template") or {}).get("version"),
        "run_uri": run.uri,
        "ml_exp": __version__,
    }
    return Bundle(trained, processor, info)


def _labels(run: Run, trained: Path) -> list[str]:
    saved = trained / MODEL_LABELS
    labels = json.loads(saved.read_text()) if saved.is_file() else run.read_json(LABELS)
    return [str(label) for label in labels]


def _processor(run: Run, model_name: str, scratch: Path) -> Path | None:
    relpath = f"{prepared_dir(model_name)}/{PROCESSOR}"
    if not run.is_complete(prepared_dir(model_name)) or not run.listdir(relpath):
        return None  # preparation could not save it (no save_pretrained): encode gets None, as training did
    local = run.local_dir(relpath)
    if local is not None:
        return local
    destination = scratch / relpath  # just the processor's files, not the encoded splits next to it
    run.download(relpath, str(destination))
    return destination


def record_fields(run: Run) -> dict[str, str]:
    """The content fields of the run's reconciled records (what ``encode`` reads) and their types."""
    import pyarrow.parquet as pq

    shards = sorted(name for name in run.listdir(RECONCILED) if name.endswith(".parquet"))
    if not shards:
        raise StepError(
            f"run_{run.num} has no reconciled records ({run.path(RECONCILED)}): the predictor cannot know "
            "which fields a record has."
        )
    with run.open(f"{RECONCILED}/{shards[0]}") as f:
        schema = pq.read_schema(f)
    return {name: str(schema.field(name).type) for name in schema.names if name not in RECORD_FIELDS}


def archive(run: Run, bundle: Bundle, code: Path | None = None) -> str:
    """``serving/<model>/model.tar.gz`` in the run, with the experiment's code from the folder
    ``code`` (packed once, by the first deployment; a run's outputs are never rewritten),
    returned as its URL."""
    folder = serving_dir(bundle.info["model"])
    if not run.is_complete(folder):
        with tempfile.TemporaryDirectory(prefix="ml-exp-serving-") as scratch:
            out = Path(scratch) / "out"
            out.mkdir()
            bundle.pack(out / MODEL_ARCHIVE, code)
            run.put_dir(str(out), folder, overwrite=True)  # an incomplete folder is an interrupted attempt
    return run.path(folder, MODEL_ARCHIVE)


def unpack(archive_file: Path, folder: Path) -> Path:
    """What SageMaker does with model data: extract ``model.tar.gz`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_file, "r:gz") as tar:
        tar.extractall(folder, filter="data")
    return folder


def copy_folder(bundle: Bundle, folder: Path) -> Path:
    """The bundle as the folder SageMaker would unpack (tests and ``exp serve --bundle``)."""
    with tempfile.TemporaryDirectory() as scratch:
        return unpack(bundle.pack(Path(scratch) / MODEL_ARCHIVE), folder)

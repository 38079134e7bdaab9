"""A run's model predicting on this machine: ``exp predict`` (JSON Lines in, JSON Lines out) and
``exp serve`` load it from the run's storage, as an endpoint's container loads its bundle."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from ml_exp.config import Config, load_config
from ml_exp.storage.store import Run, Store

# Records predicted together by `exp predict` (bounded memory for files of any size).
PREDICT_CHUNK = 256


def open_run(experiment_dir: Path, run_num: int) -> tuple[Config, Run]:
    config = load_config(experiment_dir)
    return config, Store.for_config(config).open_run(run_num)


def load_predictor(experiment_dir: Path, run_num: int, model_name: str | None, scratch: Path) -> Any:
    """The predictor of run ``run_num``'s model (default: its best), from its storage."""
    from ml_exp.serving.bundle import from_run
    from ml_exp.serving.predictor import Predictor

    config, run = open_run(experiment_dir, run_num)
    return Predictor(from_run(run, model_name, scratch), config.experiment_dir)


def predict_lines(predictor: Any, lines: Iterable[str], out: TextIO, source: str) -> int:
    """Predict the JSON Lines records of ``lines``, writing a JSON line per record to ``out``
    (chunk by chunk); RequestError naming the line of the first bad record. Returns the count."""
    from ml_exp.serving.predictor import RequestError

    chunk: list[Any] = []
    count = 0

    def flush() -> None:
        nonlocal count
        out.writelines(json.dumps(p) + "\n" for p in predictor.predict(chunk, checked=True))
        count += len(chunk)
        chunk.clear()

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RequestError(f"{source} line {number} is not JSON: {exc.msg} (column {exc.colno})") from None
        predictor.check([record], where=f"{source} line", start=number)
        chunk.append(record)
        if len(chunk) >= PREDICT_CHUNK:
            flush()
    if chunk:
        flush()
    if count == 0:
        raise RequestError(f"{source} holds no records (one JSON object per line)")
    return count

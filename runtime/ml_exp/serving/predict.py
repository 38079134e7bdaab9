"""A run's model predicting on this machine: ``exp predict`` (JSON Lines in, JSON Lines out) and
``exp serve`` load it from the run's storage, as an endpoint's container loads its bundle."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from ml_exp.config import Config, load_config
from ml_exp.core.errors import UserError
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


def parse_record(line: str | bytes, name: str) -> Any:
    """The JSON value of one record's text; RequestError naming it (``name``) when the bytes are not
    UTF-8, not JSON, or beyond what a record can hold (an integer of thousands of digits, nesting
    deeper than Python's recursion limit)."""
    from ml_exp.serving.predictor import RequestError

    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(
                f"{name} is not UTF-8 text (byte {exc.start + 1}: {line[exc.start : exc.start + 1]!r}); "
                "save the file as UTF-8"
            ) from None
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise RequestError(f"{name} is not JSON: {exc.msg} (column {exc.colno})") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise RequestError(f"{name} holds a number too long to read: {exc}") from None
    except RecursionError:
        raise RequestError(f"{name} is nested too deeply to read") from None


def records_of(lines: Iterable[bytes], source: str) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) of each non-blank line of ``lines`` (bytes, as read)."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield number, parse_record(line, f"{source} line {number}")


def check_lines(predictor: Any, lines: Iterable[bytes], source: str) -> int:
    """Every record of ``lines`` parsed and checked (nothing predicted); the count of records.
    RequestError naming the line of the first bad record, or saying there is none."""
    from ml_exp.serving.predictor import RequestError

    count = 0
    for number, record in records_of(lines, source):
        predictor.check([record], where=f"{source} line", start=number)
        count += 1
    if count == 0:
        raise RequestError(f"{source} holds no records (one JSON object per line)")
    return count


def predict_lines(predictor: Any, lines: Iterable[bytes], out: TextIO, source: str) -> int:
    """Predict the JSON Lines records of ``lines`` (bytes), writing a JSON line per record to
    ``out`` (chunk by chunk); RequestError naming the line of the first bad record. Returns the
    count. Check the lines first (:func:`check_lines`) to refuse bad input before any output."""
    from ml_exp.serving.predictor import RequestError

    chunk: list[Any] = []
    count = 0

    def flush() -> None:
        nonlocal count
        try:
            predictions = predictor.predict(chunk, checked=True)
        except UserError as exc:  # encode refused a record of this chunk: say which lines, and what was written
            exc.message = f"{source} lines {first}-{number}: {exc.message}"
            exc.args = (exc.message,)
            raise
        out.writelines(json.dumps(p) + "\n" for p in predictions)
        count += len(chunk)
        chunk.clear()

    first = number = 0
    for number, record in records_of(lines, source):
        predictor.check([record], where=f"{source} line", start=number)
        if not chunk:
            first = number
        chunk.append(record)
        if len(chunk) >= PREDICT_CHUNK:
            flush()
    if chunk:
        flush()
    if count == 0:
        raise RequestError(f"{source} holds no records (one JSON object per line)")
    return count

"""A model's prepared data (``data/prepared/<model>/``): every split's encoded rows, written once.

Preparation encodes all splits in one ``datasets.map`` (:mod:`ml_exp.steps.encode_splits`) whose
output file *is* the prepared data: ``encoded*.arrow`` (one file per encoding worker) holds the
rows of every split, split after split, and ``splits.json`` says which rows each split is.
``datasets.save_to_disk`` would read every row back and write it a second time (the bare
``map`` + ``save_to_disk`` script pays that, docs/benchmarks.md). :func:`load_prepared` maps the
files back (no copy) as a ``DatasetDict``; a folder written by ``save_to_disk`` (runs prepared
before this format, or by hand) loads as well.

    from ml_exp.toolkit.prepared import load_prepared

    splits = load_prepared("<storage>/<experiment>/run_3/data/prepared/<model>")
    splits["test"][0]
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SPLITS_FILE = "splits.json"  # {"files": [...], "splits": {name: [first row, row past the last]}, "drop": [...]}
ENCODED_FILE = "encoded.arrow"  # the map's output; with workers: encoded_<rank>_of_<workers>.arrow
FORMAT = 1


def write_index(
    folder: str | Path, files: Sequence[str], rows: Mapping[str, tuple[int, int]], drop: Sequence[str] = ()
) -> None:
    """``splits.json`` of ``folder`` (atomically): the encoded ``files`` (names inside ``folder``,
    in row order), each split's row range over their rows, and columns the loader leaves out."""
    folder = Path(folder)
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the encoded file(s) {', '.join(missing)} are not in {folder}")
    index = {
        "format": FORMAT,
        "files": list(files),
        "splits": {name: [int(start), int(end)] for name, (start, end) in rows.items()},
        "drop": list(drop),
    }
    descriptor, temporary = tempfile.mkstemp(prefix=f".{SPLITS_FILE}.", dir=folder)
    with os.fdopen(descriptor, "w") as out:
        json.dump(index, out, indent=1)
    os.replace(temporary, folder / SPLITS_FILE)


def load_prepared(folder: str | Path) -> Any:
    """The prepared splits in ``folder`` as a ``datasets.DatasetDict``, memory-mapped."""
    import datasets

    folder = Path(folder)
    if not (folder / SPLITS_FILE).is_file():
        return datasets.load_from_disk(str(folder))  # save_to_disk's layout
    path = folder / SPLITS_FILE
    try:
        index = json.loads(path.read_text())
        files, rows, drop = index["files"], index["splits"], index.get("drop", [])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not an index of prepared splits ({exc}); prepare the data again") from exc
    if index.get("format", FORMAT) > FORMAT:
        raise ValueError(f"{path} has format {index['format']}, newer than this ml-exp reads ({FORMAT}); upgrade")
    if not files:
        raise ValueError(f"{path} names no encoded file; prepare the data again")
    parts = [datasets.Dataset.from_file(str(folder / name)) for name in files]
    whole = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    whole = whole.remove_columns([c for c in drop if c in whole.column_names])
    for name, (start, end) in rows.items():
        if not 0 <= start <= end <= len(whole):
            raise ValueError(f"{path}: split {name!r} rows {start}-{end} are outside the {len(whole)} encoded rows")
    # contiguous ranges: datasets slices the table (no index mapping)
    return datasets.DatasetDict({name: whole.select(range(start, end)) for name, (start, end) in rows.items()})

"""Reading wandb's offline run files back in tests (wandb 0.31 no longer ships a reader).

A ``run-<id>.wandb`` file is a 7-byte header (``:W&B``, magic, version) followed by
LevelDB-log framing: 32 KiB blocks of records, each with a 7-byte header (CRC, length, type:
1 full, 2 first, 3 middle, 4 last); a record's payload is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    out, chunks, position = [], [], HEADER
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:  # the rest of a block too small for a header is padding
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + HEADER])
        if (kind == 0 and length == 0) or position + HEADER + length > len(data):  # a file cut short by a kill
            break
        payload = data[position + HEADER:position + HEADER + length]
        position += HEADER + length
        if kind in (FULL, FIRST):
            chunks = [payload]
        else:
            chunks.append(payload)
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            out.append(record)
    return out


@dataclass
class OfflineRun:
    """What one offline attempt of a wandb run wrote: its id, history rows (step -> values), summary.
    wandb buffers: an attempt killed with SIGKILL may have written none of its records."""

    folder: Path
    run_id: str = ""
    config: dict = field(default_factory=dict)
    history: list[tuple[int, dict]] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)  # name, type, aliases, entries (path, ref, local_path)
    finished: bool = False  # its exit record is written

    @classmethod
    def read(cls, folder: Path) -> OfflineRun:
        (path,) = folder.glob("run-*.wandb")
        run = cls(folder, run_id=path.name[len("run-"):-len(".wandb")])  # also when a kill left no record
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.run_id = record.run.run_id
                run.config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            elif kind == "config":
                run.config.update({item.key: json.loads(item.value_json) for item in record.config.update})
            elif kind == "history":
                values = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                run.history.append((record.history.step.num, values))
            elif kind == "artifact":
                a = record.artifact
                run.artifacts.append({"name": a.name, "type": a.type, "aliases": list(a.aliases),
                                      "entries": [{"path": e.path, "ref": e.ref, "local_path": e.local_path} for e in a.manifest.contents]})
            elif kind == "exit":
                run.finished = True
            elif kind == "summary":
                run.summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update})
        return run


def offline_runs(wandb_dir: Path, finished: int = 0, timeout: float = 30) -> list[OfflineRun]:
    """Every offline attempt under ``wandb_dir``, oldest first (by the time in the folder's name).
    ``finished``: wait until at least that many have their exit record written (wandb's service
    process writes them after ``finish()`` returns)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [OfflineRun.read(folder) for folder in sorted(wandb_dir.glob("offline-run-*"), key=_started)]
        if sum(run.finished for run in runs) >= finished or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def _started(folder: Path) -> tuple[str, int]:
    """offline-run-<YYYYmmdd_HHMMSS>-<id>[-<n>]: by the time, then by wandb's -<n> for the same second."""
    stamp = folder.name.split("-")[2]
    tail = folder.name.rsplit("-", 1)[-1]
    return stamp, int(tail) if tail.isdigit() and len(tail) < 3 else 0

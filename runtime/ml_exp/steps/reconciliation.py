"""Reconciliation: stream the user's ``reconcile(ctx)`` records into parquet shards in the run.

Memory stays flat: records are checked one by one and written in shards of ``SHARD_ROWS``;
only the ids (for uniqueness) and the per-label counts are kept.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import math
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from numbers import Number, Real
from pathlib import Path
from typing import Any

from ml_exp.core.console import interactive
from ml_exp.core.errors import StepError
from ml_exp.core.names import MULTI_LABEL, SINGLE_LABEL
from ml_exp.experiment.context import Context
from ml_exp.experiment.functions import Functions, user_error, user_frames
from ml_exp.storage.layout import RECONCILED, RECORD_FIELDS, SPLITS

SHARD_ROWS = 100_000
# Fewer examples than this and a label cannot appear in every split.
MIN_PER_LABEL = 3
# multi_label: how the counts name the records whose label list is empty
NO_LABEL = "(none)"


def run_reconciliation(ctx: Context, udfs: Functions, sample_per_label: int | None = None) -> dict[str, Any]:
    """Write ``data/reconciled/part-*.parquet``; return counts for the manifest.

    ``sample_per_label`` keeps at most that many records of each label (``exp run --smoke``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    try:
        records = udfs.reconcile(ctx)
        iterator = iter(records if records is not None else ())
    except Exception as exc:
        raise StepError(user_error("reconcile", exc, ctx.experiment_dir)) from exc
    if isinstance(records, (str, bytes, Mapping)):
        raise StepError(f"reconcile returned a {type(records).__name__}; yield or return an iterable of record dicts")

    multi_label = getattr(ctx.config, "problem_type", SINGLE_LABEL) == MULTI_LABEL
    kept = 0  # records written
    counts: Counter[str] = Counter()  # records per label (multi_label: per label they carry, NO_LABEL for [])
    seen_ids: set[str] = set()
    text_fields: set[str] = set()  # content fields whose first value is text: text in every record
    fields: list[str] | None = None
    buffer: list[dict[str, Any]] = []
    shards: list[Path] = []
    position = 0
    digest = hashlib.sha256()
    schema: list[Any] = []  # fixed by the first shard, so that every shard agrees

    with (
        tempfile.TemporaryDirectory(prefix="ml-exp-reconciliation-", dir=ctx.run.scratch_area()) as scratch,
        Progress(
            SpinnerColumn(),
            TextColumn("reconciliation: {task.completed:,} records"),
            TimeElapsedColumn(),
            transient=True,
            disable=not interactive(),
        ) as progress,
    ):
        task = progress.add_task("reconcile", total=None)

        def flush() -> None:
            if not buffer:
                return
            path = Path(scratch) / f"part-{len(shards):05d}.parquet"
            try:
                if not schema:
                    schema.append(_schema(fields or [], buffer, multi_label))
                table = pa.Table.from_pylist(buffer, schema=schema[0])
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise StepError(
                    f"reconcile: records #{position - len(buffer) + 1}..#{position} do not match the types of the "
                    f"first records ({exc}); give each field one type"
                ) from exc
            pq.write_table(table, path)
            digest.update(path.read_bytes())
            shards.append(path)
            buffer.clear()

        while True:
            try:
                record = next(iterator)
            except StopIteration:
                break
            except Exception as exc:
                raise StepError(
                    f"reconcile raised {type(exc).__name__} after record #{position}: "
                    f"{exc}{user_frames(exc, ctx.experiment_dir)}"
                ) from exc
            position += 1
            fields = _check(record, position, fields, seen_ids, text_fields, multi_label)
            label = [str(v) for v in record["label"]] if multi_label else str(record["label"])
            kept_for = (label or [NO_LABEL]) if multi_label else [label]
            if sample_per_label is not None and all(counts[name] >= sample_per_label for name in kept_for):
                continue
            counts.update(kept_for)
            kept += 1
            buffer.append({**record, "id": str(record["id"]), "label": label})
            progress.update(task, completed=position)
            if len(buffer) >= SHARD_ROWS:
                flush()
        flush()
        if not counts:
            raise StepError("reconcile yielded no records; it must yield labelled record dicts")
        ctx.run.put_dir(scratch, RECONCILED, move=True)

    few = {label: n for label, n in counts.items() if n < MIN_PER_LABEL and label != NO_LABEL}
    for label, n in sorted(few.items()):
        ctx.log.warning("label %r has only %d record(s): too few to appear in every split", label, n)
    return {
        "records": kept,
        "records_read": position,
        "counts": dict(sorted(counts.items())),
        "fields": fields,
        "shards": len(shards),
        "fingerprint": digest.hexdigest(),
        "labels_with_too_few_records": sorted(few),
    }


def _check(
    record: Any,
    position: int,
    fields: list[str] | None,
    seen_ids: set[str],
    text_fields: set[str],
    multi_label: bool = False,
) -> list[str]:
    """Raise StepError naming the record when it breaks the contract; return the content fields."""
    where = f"reconcile: record #{position}"
    if not isinstance(record, Mapping):
        raise StepError(
            f"{where} is a {type(record).__name__}, not a dict; yield dicts with an 'id', content fields and a 'label'"
        )
    record_id = record.get("id")
    if record_id is None or _is_nan(record_id) or str(record_id).strip() == "":
        raise StepError(
            f"{where} has no 'id'{' (it is NaN)' if _is_nan(record_id) else ''}; give every record a unique id"
        )
    where = f"{where} (id={record_id!r})"
    if str(record_id) in seen_ids:  # compared as stored: 7 and "7" are the same id
        raise StepError(
            f"{where} repeats an id already seen (ids are stored as text, so 7 and '7' are the same); ids must be "
            "unique"
        )
    seen_ids.add(str(record_id))
    label = record.get("label")
    if multi_label:
        _check_label_list(label, where)
    elif label is None or _is_nan(label) or str(label).strip() == "":
        raise StepError(
            f"{where} has no 'label' ({'NaN, a missing value' if _is_nan(label) else 'or an empty one'}); every record "
            "needs its class"
        )
    elif isinstance(label, (list, dict, set, tuple)):
        raise StepError(
            f"{where} has a {type(label).__name__} label {_shown(label)}; a label is one class name "
            "(PROBLEM_TYPE = single_label). For records of several labels set PROBLEM_TYPE = multi_label"
        )
    split = record.get("split")
    if split is not None and split not in SPLITS:
        raise StepError(f"{where} has split={split!r}; use one of {', '.join(SPLITS)} or leave it out")
    content = sorted(k for k in record if k not in RECORD_FIELDS)
    for name in content:
        value = record[name]
        unstorable = _unstorable(value)
        if unstorable is not None:
            raise StepError(f"{where}: field {name!r} {unstorable}")
        if _is_nan(value):
            raise StepError(
                f"{where} has {name}=nan (a missing value); give it a value (e.g. '' for empty text) or skip the record"
            )
        if fields is not None and name in text_fields and not isinstance(value, str):
            raise StepError(
                f"{where} has {name}={value!r} where text is expected (the first record's {name} is text); "
                "give every record text there (e.g. '' for an empty one) or skip the record"
            )
    if fields is None:
        if not content:
            raise StepError(f"{where} has no content fields besides id/label; add the raw content (e.g. 'text')")
        text_fields.update(name for name in content if isinstance(record[name], str))
        return content
    missing = sorted(set(fields) - set(content))
    if missing:
        raise StepError(
            f"{where} lacks field(s) {', '.join(missing)} that the first record has; every record needs the same "
            "content fields"
        )
    extra = sorted(set(content) - set(fields))
    if extra:
        raise StepError(
            f"{where} has field(s) {', '.join(extra)} that the first record does not; every record needs the same "
            "content fields"
        )
    return fields


def _check_label_list(label: Any, where: str) -> None:
    """PROBLEM_TYPE = multi_label: a list (or tuple) of distinct, non-empty class names; [] = none."""
    if not isinstance(label, (list, tuple)):
        got = "no 'label'" if label is None else f"label {_shown(label)} (a {type(label).__name__})"
        raise StepError(
            f"{where} has {got}; with PROBLEM_TYPE = multi_label a label is a list of class names, e.g. "
            "['contract', 'policy'] (or [] for none): yield [label] for a record of one label"
        )
    for item in label:
        if not isinstance(item, str) or not item.strip():
            raise StepError(
                f"{where} has {item!r} in its label list {_shown(label)}; every item must be a class name (non-empty "
                "text)"
            )
    repeated = sorted({item for item in label if label.count(item) > 1})
    if repeated:
        raise StepError(
            f"{where} has label(s) {', '.join(map(repr, repeated))} more than once in {_shown(label)}; list each "
            "label once"
        )


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# What a record's field may hold: what parquet stores as it is (nested in lists and dicts too).
# (numbers include numpy's scalars; dates and decimals are parquet types too)
STORABLE = (str, bytes, bool, Number, type(None), datetime.date, datetime.time, datetime.timedelta, decimal.Decimal)
MAX_DEPTH = 8


def _unstorable(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` cannot be stored in a record ("holds a PIL.Image.Image; ..."), None when it can."""
    if isinstance(value, STORABLE):
        return None
    if isinstance(value, (list, tuple)) and depth < MAX_DEPTH:
        return next((why for why in (_unstorable(v, depth + 1) for v in value) if why is not None), None)
    if isinstance(value, Mapping) and depth < MAX_DEPTH:
        if not all(isinstance(k, str) for k in value):
            return "holds a dict with non-text keys; give its keys as strings"
        return next((why for why in (_unstorable(v, depth + 1) for v in value.values()) if why is not None), None)
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__qualname__
    if name.startswith("PIL."):
        advice = "yield the image's bytes (PNG/JPEG: the file's bytes, or image.save(io.BytesIO(), 'PNG')) or its path"
    elif name.startswith(("numpy.", "torch.", "pandas.")) or hasattr(value, "tolist"):
        advice = "yield value.tolist() (a list of numbers, e.g. boxes as [[x0, y0, x1, y1], ...])"
    elif isinstance(value, (bytearray, memoryview)):
        advice = "yield bytes(value)"
    elif hasattr(value, "__fspath__"):
        advice = "yield str(path)"
    else:
        advice = "yield text, numbers, bytes, or lists/dicts of them"
    return f"holds a {name}, which cannot be stored in a record; {advice}"


def _is_nan(value: Any) -> bool:
    """A float NaN (numpy's too): what pandas and CSV readers give for a missing value."""
    return isinstance(value, Real) and not isinstance(value, int) and math.isnan(value)


def _schema(fields: Iterable[str], rows: list[dict[str, Any]], multi_label: bool = False):
    """One schema for every shard: id and label strings (a list of them in multi_label), split
    optional, content inferred."""
    import pyarrow as pa

    inferred = pa.Table.from_pylist(rows).schema
    label = pa.list_(pa.string()) if multi_label else pa.string()
    columns = [pa.field("id", pa.string()), pa.field("label", label)]
    columns += [inferred.field(name) for name in fields]
    columns.append(pa.field("split", pa.string()))
    return pa.schema(columns)

"""Preparation's fast paths give what the plain ones gave: offsets checked and located with
NumPy (the plain loop still names the bad record), truncate's whole lengths from the
tokenizer's own encodings, and every split encoded in one ``map`` and cut apart exactly.
The speed itself is measured by the bench (docs/benchmarks.md), not here."""

from __future__ import annotations

import random
import re
from types import SimpleNamespace

import datasets
import pyarrow as pa
import pytest
from ml_exp.core.errors import StepError
from ml_exp.steps.encode_splits import OWNER, encode_splits, as_arrow_table
from ml_exp.toolkit import tokenizer_encode
from ml_exp.toolkit.documents import Windowing, _span, _spans, check_encoded, offset_pairs, to_rows

from tests import test_long_documents

tokenizer = test_long_documents.tokenizer  # the demo's tiny BERT tokenizer (a module fixture)


def random_offsets(rng: random.Random) -> list[list[tuple[int, int]]]:
    rows = []
    for _ in range(rng.randrange(0, 6)):
        row = []
        for _ in range(rng.randrange(0, 6)):
            start = rng.randrange(0, 20)
            row.append((0, 0) if rng.random() < 0.2 else (start, start + rng.choice([0, 0, 1, 3])))
        rows.append(row)
    return rows


def test_spans_with_numpy_equal_the_pair_by_pair_spans():
    rng = random.Random(7)
    for _ in range(400):
        rows = random_offsets(rng)
        assert _spans(rows) == [_span(row) for row in rows], rows


def test_offsets_that_are_not_integer_pairs_are_left_to_the_plain_check():
    assert offset_pairs([[(0, 1), (1, 2)], []])[1].tolist() == [2, 0]
    for bad in ([[(0, 1.5)]], [[(0, 1, 2)]], [[(True, False)]], ["ab"], [[(0, 2**70)]], [[(0, 1)], [(0,)]]):
        assert offset_pairs(bad) is None, bad


@pytest.mark.parametrize(
    "pairs, says",
    [
        ([(0, 3), (5, 4)], "holds (5, 4)"),
        ([(0, 3), (-1, 2)], "holds (-1, 2)"),
        ([(0, 3), (1.0, 2.0)], "holds (1.0, 2.0)"),
        ([(0, 3), (0, 10_000)], "holds (0, 10000)"),
    ],
)
def test_a_bad_offset_is_named_with_its_record(pairs, says):
    batch = {"id": ["a", "b"], "text": ["one two", "three four"]}
    output = {
        "input_ids": [[1, 2], [1, 2]],
        "offset_mapping": [[(0, 3), (4, 7)], pairs],
        "overflow_to_sample_mapping": [0, 1],
    }
    with pytest.raises(StepError, match=re.escape(f"record 'b' {says}")):
        check_encoded("m", batch, output)


def test_the_tokenizers_offsets_pass_and_give_the_same_windows(tokenizer):
    texts = ["contract invoice policy audit " * 40, "the company board", "page section amounts " * 25]
    batch = {"id": ["x", "y", "z"], "text": texts, "label": [0, 1, 2]}
    ctx = SimpleNamespace(config=SimpleNamespace(max_length=24, document_strategy="chunks", chunk_stride=4))
    output = tokenizer_encode(batch, tokenizer, ctx)
    check_encoded("m", batch, output)
    rows = to_rows(batch, output, Windowing(stride=4, special_tokens=2))
    expected = [_span(row) for row in output["offset_mapping"]]
    assert list(zip(rows["window_start"], rows["window_end"])) == expected
    text_of = dict(zip(batch["id"], texts))
    for record, start, end in zip(rows["id"], rows["window_start"], rows["window_end"]):
        assert 0 <= start < end and text_of[record][start:end].strip()


@pytest.mark.parametrize("words", [1, 30, 400])
def test_truncate_reads_whole_lengths_from_the_encodings(tokenizer, words):
    text = " ".join(["contract", "invoice", "policy", "audit"] * words)
    batch = {"id": ["a", "b", "c"], "text": [text, "board", ""]}
    ctx = SimpleNamespace(config=SimpleNamespace(max_length=16, document_strategy="truncate"))
    output = tokenizer_encode(batch, tokenizer, ctx)
    whole = tokenizer([text, "board", ""], add_special_tokens=False)["input_ids"]
    assert output["document_tokens"] == [len(ids) for ids in whole]
    assert [len(ids) for ids in output["input_ids"]] == [min(len(ids) + 2, 16) for ids in whole]


@pytest.mark.parametrize("workers", [None, 2])
def test_one_map_encodes_every_split_and_cuts_them_apart_exactly(workers):
    # record i becomes i % 3 + 1 windows; training records keep only their first window
    def encode(batch, training):
        rows = {"input_ids": [], "window": [], "id": [], OWNER: []}
        for index, (record, thin) in enumerate(zip(batch["id"], training)):
            for window in range(1 if thin else record % 3 + 1):
                rows["input_ids"].append([record, window])
                rows["window"].append(window)
                rows["id"].append(record)
                rows[OWNER].append(index)
        return rows

    whole = datasets.Dataset.from_dict({"id": list(range(40))})
    splits = {"train": whole.select(range(0, 40, 2)), "validation": whole.select(range(1, 40, 4)),
              "test": whole.select(range(3, 40, 4))}  # fmt: skip
    encoded = encode_splits(splits, encode, "train", workers=workers, batch_size=7, desc="test")
    assert list(encoded) == ["train", "validation", "test"]
    assert encoded["train"]["id"][:] == list(range(0, 40, 2))  # one window each
    for name in ("validation", "test"):
        expected = [record for record in splits[name]["id"] for _ in range(record % 3 + 1)]
        assert encoded[name]["id"][:] == expected
        assert sorted(encoded[name].column_names) == ["id", "input_ids", "window"]


def test_what_arrow_cannot_read_is_left_to_datasets():
    big = {"input_ids": [[1], [2]], "big": [[2**70], [1]]}  # beyond int64
    assert as_arrow_table(big) is big
    objects = {"input_ids": [[1]], "thing": [object()]}
    assert as_arrow_table(objects) is objects
    assert isinstance(as_arrow_table({"input_ids": [[1]], "id": ["a"]}), pa.Table)


@pytest.mark.parametrize(
    ("columns", "made_here"),
    [
        (
            {
                "input_ids": [[101, 7, 102], [101, 102]],
                "attention_mask": [[1, 1, 1], [1, 1]],
                "token_type_ids": [[0] * 3, [0] * 2],
            },
            True,
        ),
        ({"input_ids": [[1, 2**40], [3]], "token_type_ids": [[0, 300], [2]], "special_tokens_mask": [[1, 0], [1]]}, True),
        ({"input_ids": [[1, 2], None], "window": [0, 1], "label": [[0.0, 1.0], [1.0, 0.0]], "other": [[1, 2], [3]]}, True),
        (
            {
                "bbox": [[[0, 0, 1, 1]], [[1, 1, 2, 2]]],
                "mixed": [[1], [2.5]],
                "flags": [[True], [False]],
                "empty": [[], []],
            },
            False,  # nested lists: datasets converts them
        ),
        ({"input_ids": [[], []], "attention_mask": [[None], [1]]}, False),  # nothing but empty lists and None
    ],
)
def test_columns_made_arrow_here_keep_the_types_and_values_datasets_gives(columns, made_here):
    # the same rows written by datasets from Python lists, and with the integer lists made Arrow first
    source = datasets.Dataset.from_dict({"i": [0]})

    def rows(_batch):
        return {name: list(values) for name, values in columns.items()}

    assert isinstance(as_arrow_table(rows(None)), pa.Table) is made_here
    plain = source.map(rows, batched=True, remove_columns=["i"])
    fast = source.map(lambda batch: as_arrow_table(rows(batch)), batched=True, remove_columns=["i"])
    assert fast.features == plain.features
    assert fast.data.table.equals(plain.data.table)


def test_characters_are_counted_in_the_selected_records_only():
    from ml_exp.steps.columns import split_characters as _characters

    whole = datasets.Dataset.from_dict({"text": ["abcd"] * 100, "n": [1] * 100, "title": [None, "xy"] * 50})
    assert _characters(whole, ["text", "n", "title"]) == 500
    assert _characters(whole.select([5, 3, 1]), ["text", "n", "title"]) == 18  # a stratified split's kind
    assert _characters(whole.select([]), ["text"]) == 0


@pytest.mark.parametrize(
    ("wall", "cpu", "cores", "expected"),
    [
        (0.5, 0.5, 4, None),  # too little to pay a pool's start
        (20.0, 20.0, 4, 4),  # a single-threaded encode (Python, layout): the pool saves 3/4
        (20.0, 38.0, 2, None),  # a fast tokenizer already on both cores: a pool saves 1 s, costs 2
        (20.0, 2.0, 4, 4),  # an encode that waits (reads files): the pool waits in parallel
        (20.0, 20.0, 1, None),  # one core: nothing to share
        (100.0, 100.0, 64, 8),  # capped
    ],
)
def test_a_pool_is_started_only_where_it_saves_more_than_it_costs(monkeypatch, wall, cpu, cores, expected):
    from ml_exp.steps import preparation

    monkeypatch.setattr(preparation.os, "cpu_count", lambda: cores)
    assert preparation._workers(wall, cpu) == expected


def test_a_selections_column_is_taken_with_arrow_as_datasets_gathers_it():
    from ml_exp.steps.columns import split_column as _column
    from ml_exp.steps.preparation import label_counts

    whole = datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(50)], "label": [i % 3 for i in range(50)]})
    whole = whole.cast_column("label", datasets.ClassLabel(names=["a", "b", "c"]))
    order = random.Random(3).sample(range(50), 20)
    for part in (whole, whole.select(order), whole.select(range(10, 30)), whole.select(order).select([4, 0, 7])):
        assert _column(part, "id").to_pylist() == part["id"][:]
        assert label_counts(part, ["a", "b", "c"]) == {
            name: part["label"][:].count(index) for index, name in enumerate(["a", "b", "c"])
        }


def fingerprint_row_by_row(split) -> str:
    """split_fingerprint's definition, the plain way (what it computed before it read batches)."""
    import hashlib
    import json

    names = split.features["label"].names
    digest = hashlib.sha256()
    for index in sorted(range(len(split)), key=split["id"][:].__getitem__):
        row = split[index]
        row["label"] = names[row["label"]]
        digest.update(json.dumps(row, sort_keys=True, default=repr).encode() + b"\n")
    return digest.hexdigest()


def test_split_fingerprints_keep_their_values_for_any_ids():
    from ml_exp.steps.preparation import split_fingerprint

    rng = random.Random(0)
    texts = [rng.choice("aZé0_-ß中😀 ~") * rng.randrange(1, 4) + str(i) for i in range(300)]
    numbers = [rng.randrange(-(10**9), 10**9) for _ in range(300)]
    for ids in (texts, numbers, sorted(numbers)):  # sorted: the order is one contiguous range
        whole = datasets.Dataset.from_dict(
            {
                "id": ids,
                "text": ["t"] * 299 + [None],
                "label": [i % 3 for i in range(300)],
                "meta": [{"page": i, "tags": ["x"] * (i % 3)} for i in range(300)],
                "score": [i / 7 for i in range(300)],
            }
        )
        whole = whole.cast_column("label", datasets.ClassLabel(names=["a", "b", "c"]))
        chosen = whole.select(rng.sample(range(300), 90))
        joined = datasets.concatenate_datasets([chosen, whole.select(range(5))])  # pinned records join a split
        for part in (whole, chosen, chosen.select([5, 1, 40]), joined, whole.select(range(100, 200))):
            assert split_fingerprint(part) == fingerprint_row_by_row(part)


@pytest.mark.parametrize("rows_per_document", [(1,), (1, 3, 7, 1, 2)])
def test_documents_read_once_equal_the_per_row_definition(rows_per_document):
    """coverage.Documents (Arrow, per document) against the plain per-row reading it replaced, on a
    split cut from a bigger table (a contiguous select, several chunks), lengths known or not."""
    import numpy as np
    import pyarrow as pa

    from ml_exp.steps.coverage import Documents

    rng = random.Random(3)
    window, length, seen = [], [], []
    for d in range(600):
        n = rows_per_document[d % len(rows_per_document)]
        whole = rng.randint(1, 900)
        for w in range(n):
            window.append(w)
            length.append(whole if d % 5 else -1)
            seen.append(rng.randint(0, 60))
    batches = [
        pa.record_batch(
            {"window": window[i : i + 97], "document_tokens": length[i : i + 97], "tokens_seen": seen[i : i + 97]}
        )
        for i in range(0, len(window), 97)
    ]
    table = datasets.Dataset(datasets.table.InMemoryTable(pa.Table.from_batches(batches)))
    start = window.index(0, 50)
    split = table.select(range(start, len(window) - 40 + window[len(window) - 40 :].index(0)))
    docs = Documents(split)
    w, length_, s = (np.asarray(split[c]) for c in ("window", "document_tokens", "tokens_seen"))
    starts = np.flatnonzero(w == 0)
    assert docs.rows == len(w)
    assert docs.windows.tolist() == np.diff(np.append(starts, len(w))).tolist()
    assert docs.lengths.tolist() == length_[starts].tolist() and docs.first_seen.tolist() == s[starts].tolist()
    assert docs.seen.tolist() == np.add.reduceat(s, starts).tolist()
    shuffled = Documents(
        table.select(starts_of := [i for i, v in enumerate(window) if v == 0][::-1])
    )  # an index mapping
    assert shuffled.lengths.tolist() == [length[i] for i in starts_of] and shuffled.windows.tolist() == [1] * len(
        starts_of
    )
    empty = Documents(split.select([]))
    assert (empty.rows, len(empty.windows), len(empty.lengths), len(empty.seen)) == (0, 0, 0, 0)


def test_reconciled_shards_read_as_from_parquet_reads_them(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ml_exp.steps.columns import read_records

    schema = pa.schema([("id", pa.string()), ("label", pa.list_(pa.string())), ("text", pa.string()),
                        ("meta", pa.struct([("page", pa.int64())])), ("split", pa.string())])  # fmt: skip
    shards = []
    for shard in range(3):
        rows = [{"id": f"{shard}-{i}", "label": ["a"] * (i % 3), "text": None if i == 4 else "t" * i,
                 "meta": {"page": i}, "split": None} for i in range(7)]  # fmt: skip
        shards.append(str(tmp_path / f"part-{shard:05d}.parquet"))
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), shards[-1], row_group_size=3)
    plain = datasets.Dataset.from_parquet(shards, cache_dir=str(tmp_path / "plain"))
    read = read_records(shards, str(tmp_path / "read"))
    assert read.features == plain.features and read.data.table.equals(plain.data.table)
    assert read.cache_files[0]["filename"].startswith(str(tmp_path / "read"))  # memory-mapped, in the folder given

    # a shard of another schema (not written by one reconciliation): from_parquet's reconciling of them
    other = str(tmp_path / "part-00003.parquet")
    pages = pa.array([{"page": 1}], pa.struct([("page", pa.int32())]))
    pq.write_table(pa.table({"id": ["x"], "label": [["b"]], "text": ["t"], "meta": pages, "split": ["test"]}), other)
    mixed = read_records([*shards, other], str(tmp_path / "mixed"))
    assert len(mixed) == 22 and mixed["split"][-1] == "test" and mixed["meta"][-1] == {"page": 1}
    assert mixed.cache_files[0]["filename"].startswith(str(tmp_path / "mixed" / "cache"))  # from_parquet's


def _encode_labels(batch, training):
    """One row per record, what preparation's encode gives: ids, masks, the record's id and a
    multi-hot float target (multi_label) or its class id."""
    rows = {"input_ids": [], "attention_mask": [], "id": [], "label": [], OWNER: []}
    for index, (record, label) in enumerate(zip(batch["id"], batch["label"])):
        rows["input_ids"].append([101, index, 102])
        rows["attention_mask"].append([1, 1, 1])
        rows["id"].append(record)
        rows["label"].append([float(i in label) for i in range(3)] if isinstance(label, list) else label)
        rows[OWNER].append(index)
    return rows


@pytest.mark.parametrize("multi_label", [False, True])
def test_encoded_splits_equal_what_datasets_makes_of_the_lists(monkeypatch, multi_label):
    from ml_exp.steps import encode_splits as module

    names = ["a", "b", "c"]
    labels = [[i % 3, (i + 1) % 3] if multi_label else i % 3 for i in range(30)]
    feature = datasets.List(datasets.ClassLabel(names=names)) if multi_label else datasets.ClassLabel(names=names)
    whole = datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(30)], "label": labels}).cast_column("label", feature)
    splits = {"train": whole.select(range(0, 30, 2)), "validation": whole.select(range(1, 30, 4)),
              "test": whole.select(range(3, 30, 4))}  # fmt: skip
    columns = ["attention_mask", "id", "input_ids", "label"]
    fast = encode_splits(splits, _encode_labels, "train", workers=None, batch_size=4, desc="t", columns=columns)
    monkeypatch.setattr(module, "as_arrow_table", lambda rows, features=None: rows)  # datasets converts the lists
    plain = encode_splits(splits, _encode_labels, "train", workers=None, batch_size=4, desc="t", columns=columns)
    for name in splits:
        assert fast[name].features == plain[name].features
        assert fast[name].data.table.equals(plain[name].data.table)
    assert fast["train"].features["label"] == feature  # the records' labels, as datasets keeps them


def test_a_batch_of_other_columns_is_refused_as_datasets_refuses_it():
    def encode(batch, training):
        rows = _encode_labels(batch, training)
        if batch["id"][0] != "r0":  # later batches lose a column
            del rows["attention_mask"]
        return rows

    whole = datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(6)], "label": [0, 1] * 3})
    splits = {"train": whole.select(range(4)), "validation": whole.select([4]), "test": whole.select([5])}
    columns = ["attention_mask", "id", "input_ids", "label"]
    with pytest.raises(Exception, match="(?i)column|schema|arrays"):
        encode_splits(splits, encode, "train", workers=None, batch_size=2, desc="t", columns=columns)

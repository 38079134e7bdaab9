"""Long documents, piece by piece (fast): what tokenizer_encode makes of a long text under each
DOCUMENT_STRATEGY, how windows become rows and rows become one prediction per document, and the
settings refused before any compute. The end-to-end runs are in test_long_documents_e2e.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ml_exp.config import load_config
from ml_exp.core.errors import ProblemsFound
from ml_exp.experiment.context import Context
from ml_exp.toolkit import tokenizer_encode
from ml_exp.core.errors import StepError
from ml_exp.toolkit.documents import Windowing, combine, document_starts, evenly_spaced, to_rows
from ml_exp.toolkit.documents import check_encoded
from tests.bake import bake

TEMPLATE = Path(__file__).resolve().parents[1] / "{{cookiecutter.experiment_name}}"


@pytest.fixture(scope="module")
def tokenizer():
    sys.path.insert(0, str(TEMPLATE))
    try:
        import demo_documents

        return demo_documents.tiny_bert_tokenizer()
    finally:
        sys.path.remove(str(TEMPLATE))


def words(n: int, start: int = 0) -> str:
    """``n`` distinct known words; word i is the i-th of a fixed list, so positions are checkable."""
    vocabulary = ["contract", "invoice", "policy", "audit", "the", "company", "board", "page", "section", "amounts"]
    return " ".join(vocabulary[(start + i) % len(vocabulary)] for i in range(n))


def test_chunks_cover_the_whole_document_in_overlapping_windows(tokenizer):
    text = words(100)
    out = tokenizer_encode({"id": ["a", "b"], "text": [text, "invoice"]}, tokenizer, None, max_length=16, strategy="chunks", stride=4)
    owners = out["overflow_to_sample_mapping"]
    assert owners[-1] == 1 and owners.count(1) == 1 and owners == sorted(owners)
    windows = [ids[1:-1] for ids, owner in zip(out["input_ids"], owners) if owner == 0]
    assert all(len(window) == 14 for window in windows[:-1])  # 16 tokens less [CLS] and [SEP]
    for previous, current in zip(windows, windows[1:]):
        assert current[:4] == previous[-4:]  # neighbours share CHUNK_STRIDE tokens
    unique = windows[0] + [token for window in windows[1:] for token in window[4:]]
    assert unique == tokenizer(text, add_special_tokens=False)["input_ids"]  # every token seen, in order
    assert out["document_tokens"][:len(windows)] == [100] * len(windows) and out["document_tokens"][-1] == 1
    first, last = out["offset_mapping"][0], out["offset_mapping"][len(windows) - 1]
    assert first[1][0] == 0 and last[-2][1] == len(text)  # spans in the text (special tokens at (0, 0))


def test_head_tail_keeps_a_quarter_head_and_three_quarters_tail(tokenizer):
    text = words(100)
    out = tokenizer_encode({"text": [text]}, tokenizer, None, max_length=18, strategy="head_tail")
    ids = out["input_ids"][0]
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 18 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids[1:5] == whole[:4] and ids[5:-1] == whole[-12:]  # 16 tokens of room: 4 head, 12 tail
    assert out["document_tokens"] == [100] and len(out["attention_mask"][0]) == 18
    short = tokenizer_encode({"text": ["invoice policy"]}, tokenizer, None, max_length=18, strategy="head_tail")
    assert short["input_ids"][0] == tokenizer("invoice policy")["input_ids"]


def test_truncate_keeps_one_row_per_record_and_says_the_whole_length(tokenizer):
    out = tokenizer_encode({"text": [words(100), "invoice"]}, tokenizer, None, max_length=16, strategy="truncate")
    assert [len(ids) for ids in out["input_ids"]] == [16, 3]
    assert out["document_tokens"] == [100, 1] and "overflow_to_sample_mapping" not in out


def test_a_slow_processor_is_refused_for_chunks_naming_the_setting(tokenizer):
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="DOCUMENT_STRATEGY = chunks needs a fast tokenizer"):
        tokenizer_encode({"text": ["a"]}, Slow(), None, max_length=8, strategy="chunks", stride=2)


def test_rows_keep_windows_together_and_spread_max_chunks_over_the_document(tokenizer):
    batch = {"id": ["long", "short"], "text": [words(200), "invoice"], "label": [2, 0]}
    encoded = tokenizer_encode(batch, tokenizer, None, max_length=16, strategy="chunks", stride=4)
    count = encoded["overflow_to_sample_mapping"].count(0)
    everything = to_rows(batch, encoded, Windowing(stride=4, max_chunks=3, special_tokens=2))
    assert everything["window"] == [*range(count), 0] and everything["id"] == ["long"] * count + ["short"]
    assert sum(everything["tokens_seen"][:count]) == 200 and everything["document_tokens"][:count] == [200] * count
    training = to_rows(batch, encoded, Windowing(stride=4, max_chunks=3, special_tokens=2), training=True)
    assert count == 20  # 14 tokens, then 10 new ones a window: 1 + ceil(186 / 10)
    assert training["window"] == [0, 10, 19, 0]  # first, middle, last
    assert training["label"] == [2, 2, 2, 0] and "overflow_to_sample_mapping" not in training and "offset_mapping" not in training
    starts, ends = training["window_start"], training["window_end"]
    assert starts[0] == 0 and ends[2] == len(batch["text"][0]) and all(s < e for s, e in zip(starts, ends))
    assert evenly_spaced(10, 4) == [0, 3, 6, 9] and evenly_spaced(3, 5) == [0, 1, 2] and evenly_spaced(7, 0) == list(range(7))


def test_documents_are_combined_by_mean_or_max_with_the_deciding_window():
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.9, 0.1]])
    starts = document_starts([0, 1, 2, 0])
    assert starts.tolist() == [0, 3]
    mean, deciding = combine(probs, starts, "mean")
    np.testing.assert_allclose(mean, [[13 / 30, 17 / 30], [0.9, 0.1]], rtol=1e-6)
    assert deciding.tolist() == [1, 0]  # window 1 gives class 1 its highest probability
    top, deciding = combine(probs, starts, "max")
    np.testing.assert_allclose(top, [[0.7 / 1.5, 0.8 / 1.5], [0.9, 0.1]], rtol=1e-6)
    assert deciding.tolist() == [1, 0]


@pytest.mark.parametrize(("output", "message"), [
    ({"input_ids": [[1], [2], [3]]}, "has 3 rows for a batch of 2 records"),
    ({"input_ids": [[1], [2], [3]], "overflow_to_sample_mapping": [0, 1, 0]}, "non-decreasing"),
    ({"input_ids": [[1], [2]], "overflow_to_sample_mapping": [0, 0]}, r"records \[1\] of the batch have no row"),
    ({"input_ids": [[1], [2], [3]], "overflow_to_sample_mapping": [0, 1]}, r"has 3 rows for a batch of 2 records \(2 rows in overflow"),
])
def test_bad_window_mappings_are_refused_naming_the_column(output, message):
    with pytest.raises(StepError, match=message):
        check_encoded("m", {"id": ["a", "b"], "text": ["x", "y"]}, output)


@pytest.mark.parametrize(("output", "message"), [
    ({"input_ids": [[1], []]}, "record 'b' has an empty input_ids row"),
    ({"input_ids": [[1], [2]], "document_tokens": [3, "many"]}, "document_tokens of record 'b' is 'many'"),
    ({"input_ids": [[1], [2]], "document_tokens": [3, -1]}, "document_tokens of record 'b' is -1"),
    ({"input_ids": [[1], [2]], "offset_mapping": [[(0, 1)], 7]}, "offset_mapping of record 'b' is not a list"),
    ({"input_ids": [[1], [2]], "offset_mapping": [[(0, 1)], [(0,)]]}, r"offset_mapping of record 'b' holds \(0,\)"),
    ({"input_ids": [[1], [2]], "offset_mapping": [[(0, 1)], [("0", 1)]]}, "offset_mapping of record 'b' holds"),
    ({"input_ids": [[1], [2]], "offset_mapping": [[(2, 1)], [(0, 1)]]}, "offset_mapping of record 'a' holds"),
    ({"input_ids": [[1], [2]], "offset_mapping": [[(0, 1)], [(1_000_001_407, 1_000_001_408)]]}, "within the record's text"),
])
def test_malformed_window_columns_are_refused_naming_the_record(output, message):
    """Columns the runtime reads itself (evidence spans, lengths): tracebacks before, now named."""
    with pytest.raises(StepError, match=message):
        check_encoded("m", {"id": ["a", "b"], "text": ["x", "y"]}, output)


def test_a_custom_encode_with_overflow_mapping_becomes_rows():
    batch = {"id": ["a", "b"], "text": ["x y z", "w"], "label": [1, 0]}
    output = {"input_ids": [[5, 6], [6, 7], [8]], "attention_mask": [[1, 1], [1, 1], [1]], "overflow_to_sample_mapping": [0, 0, 1]}
    assert check_encoded("m", batch, output) == ["attention_mask", "input_ids", "overflow_to_sample_mapping"]
    rows = to_rows(batch, output, Windowing(stride=1))
    assert rows["id"] == ["a", "a", "b"] and rows["window"] == [0, 1, 0] and rows["window_start"] == [-1, -1, -1]
    assert rows["document_tokens"] == [3, 3, 1]  # 2 + (2 - 1 shared), then 1


def settings(tmp_path: Path, **values: str) -> Path:
    lines = ["[settings]", "EXPERIMENT_NAME = EXP-1-x", "MODEL_NAMES = m", "WANDB_MODE = disabled"]
    lines += [f"{key.upper()} = {value}" for key, value in values.items()]
    (tmp_path / "settings.ini").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.parametrize(("values", "key", "message"), [
    ({"document_strategy": "chunks", "max_length": "64", "chunk_stride": "64"}, "CHUNK_STRIDE", "must be smaller than MAX_LENGTH"),
    ({"document_strategy": "chunks", "max_length": "64", "chunk_stride": "62"}, "CHUNK_STRIDE", "must be smaller than MAX_LENGTH - 2 (62)"),
    ({"chunk_stride": "-1"}, "CHUNK_STRIDE", "too small"),
    ({"max_chunks": "-2"}, "MAX_CHUNKS", "too small"),
    ({"document_strategy": "sliding"}, "DOCUMENT_STRATEGY", "chunks"),
    ({"chunk_aggregation": "median"}, "CHUNK_AGGREGATION", "mean"),
    ({"chunk_training": "document"}, "CHUNK_TRAINING", "needs DOCUMENT_STRATEGY = chunks (it is truncate)"),
    ({"chunk_training": "pages"}, "CHUNK_TRAINING", "windows"),
    ({"document_strategy": "chunks", "chunk_grad_windows": "2"}, "CHUNK_GRAD_WINDOWS", "used only by CHUNK_TRAINING = document"),
    ({"chunk_window_epochs": "-1"}, "CHUNK_WINDOW_EPOCHS", "too small"),
])
def test_bad_document_settings_are_refused_naming_the_key(tmp_path, values, key, message):
    with pytest.raises(ProblemsFound) as caught:
        load_config(settings(tmp_path, **values), environ={})
    assert any(p.where == key and message in p.message for p in caught.value.problems), caught.value.problems


def test_a_stride_as_long_as_max_length_is_fine_when_not_chunking(tmp_path):
    config = load_config(settings(tmp_path, max_length="64", chunk_stride="64"), environ={})
    assert config.document_strategy == "truncate"


def test_validate_refuses_chunks_with_a_processor_that_cannot_overflow(tmp_path, monkeypatch):
    from ml_exp.pipeline.validate import validate

    project = bake(tmp_path, ticket="EXP-71", model_slug="chunks")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    source = (project / "experiment.py").read_text()
    (project / "experiment.py").write_text(source.replace("    if model_name in demo_documents.TINY_BERTS:\n        return demo_documents.tiny_bert_tokenizer()",
                                                           "    if model_name in demo_documents.TINY_BERTS:\n        return {'vocabulary': {}}", 1))
    report = validate(project, environ={"DOCUMENT_STRATEGY": "chunks", "CHUNK_STRIDE": "8", "WANDB_MODE": "disabled"}, check_storage=False)
    assert [p.where for p in report.problems] == ["DOCUMENT_STRATEGY"]
    assert "load_processor('tiny-bert') returned a dict" in report.problems[0].message
    assert validate(project, environ={"DOCUMENT_STRATEGY": "truncate", "WANDB_MODE": "disabled"}, check_storage=False).ok
    # only preparation tokenizes with load_processor: a run of later steps neither loads nor checks it
    later = validate(project, environ={"DOCUMENT_STRATEGY": "chunks", "CHUNK_STRIDE": "8", "WANDB_MODE": "disabled"},
                     check_storage=False, steps=["training", "inference"])
    assert later.ok, later.problems
    assert [p.where for p in validate(project, environ={"DOCUMENT_STRATEGY": "chunks", "CHUNK_STRIDE": "8", "WANDB_MODE": "disabled"},
                                      check_storage=False, steps=["preparation"]).problems] == ["DOCUMENT_STRATEGY"]


def test_the_predictor_combines_a_records_windows_as_inference_does(tokenizer):
    from ml_exp.serving.predictor import Windows

    text = words(60)
    encoded = tokenizer_encode({"text": [text, "invoice"]}, tokenizer, None, max_length=16, strategy="chunks", stride=4)
    windows = Windows("mean")
    rows, owners, split = windows.split(encoded, 2)
    assert owners == list(encoded["overflow_to_sample_mapping"]) and "offset_mapping" not in rows
    count = owners.count(0)
    probs = np.full((len(owners), 2), 0.5)
    probs[count - 1] = [0.1, 0.9]  # the last window of the long record decides it
    scores, evidence = windows.combine(probs, owners, 2, split)
    assert scores.shape == (2, 2) and scores[0].argmax() == 1 and scores[1].tolist() == [0.5, 0.5]
    assert evidence[0]["window"] == count - 1 and evidence[0]["windows"] == count and evidence[0]["end"] == len(text)
    assert evidence[1] == {"window": 0, "windows": 1, "start": 0, "end": len("invoice")}
    whole = tokenizer_encode({"text": ["invoice"]}, tokenizer, None, max_length=16, strategy="truncate")
    _, owners, split = windows.split(whole, 1)
    assert owners == [0] and windows.combine(np.array([[0.2, 0.8]]), owners, 1, split)[1] == [None]

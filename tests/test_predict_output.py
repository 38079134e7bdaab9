"""`exp predict`'s input and output, as a careless or hostile user gives them: nothing lost, a bad
record named (file and line, never `--run`), never a traceback.

The command runs in-process (typer's runner) with the real record checks and the real output
handling; only the model is a stand-in (`exp predict` on a real model: tests/test_serving.py).
"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from ml_exp.commands import app
from ml_exp.serving import predict as predict_module
from ml_exp.serving.predictor import Predictor, RequestError
from ml_exp.toolkit.decisions import Decisions

LABELS = ["a", "b"]


class StandIn(Predictor):
    """The real record checks; a prediction per record without a model. ``fail_on``: the text whose
    record makes encode fail (as a user's encode may, for a record the checks let through)."""

    def __init__(self, fail_on: str = "boom"):
        self.fields, self.labels, self.fail_on = {"text": "string"}, LABELS, fail_on
        self.info = {"experiment": "EXP-1", "run": 1, "model": "tiny"}
        self.decisions = Decisions(LABELS)  # single-label, uncalibrated

    def predict(self, records, checked=False):
        if any(r["text"] == self.fail_on for r in records):
            raise RequestError("encode could not encode the records: ValueError: no")
        return [{"id": r.get("id"), "prediction": "a", "scores": {"a": 0.9, "b": 0.1}} for r in records]


@pytest.fixture
def predict(monkeypatch, tmp_path):
    monkeypatch.setattr(predict_module, "load_predictor", lambda *args: StandIn())
    monkeypatch.chdir(tmp_path)

    def run(*args: str, input: bytes | None = None):
        result = CliRunner().invoke(app, ["predict", "--run", "1", *args], input=input)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result

    return run


def lines(*records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


GOOD = [{"id": i, "text": f"record {i}"} for i in range(300)]


def test_the_input_is_never_the_output(predict, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(lines(*GOOD))
    os.symlink(source, tmp_path / "link.jsonl")
    for output in ("in.jsonl", str(source), "./in.jsonl", "link.jsonl"):
        result = predict("in.jsonl", "-o", output)
        assert result.exit_code == 1 and "is also the input" in result.output, result.output
        assert source.read_bytes() == lines(*GOOD)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"id": 299, "text": 5}, "in.jsonl line 300: field 'text' must be a string, not a JSON number"),
        (b"not json", "in.jsonl line 300 is not JSON"),
        (b'{"text": "caf\xe9"}', "in.jsonl line 300 is not UTF-8 text"),
        (b'{"id": ' + b"7" * 5000 + b', "text": "x"}', "in.jsonl line 300 holds a number too long to read"),
        (b'{"text": "x", "label": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "in.jsonl line 300 is nested too deeply"),
        (
            {"text": "x", "label": {"a": 1}},
            "in.jsonl line 300: field 'label' must be a label (a string), not a JSON object",
        ),
        ({"text": "\ud800"}, "in.jsonl line 300: field 'text' holds a lone surrogate"),
        ({"text": "\u200b\x00\ufeff "}, "in.jsonl line 300 has empty text"),
        ({"text": None}, "in.jsonl line 300 has empty text"),
    ],
)
def test_one_bad_line_writes_nothing_and_blames_the_input(predict, tmp_path, bad, message):
    (tmp_path / "in.jsonl").write_bytes(lines(*GOOD[:299], bad))
    (tmp_path / "out.jsonl").write_text("yesterday's predictions\n")
    result = predict("in.jsonl", "-o", "out.jsonl")
    assert result.exit_code == 1 and message in result.output, result.output
    assert "--run" not in result.output and "INPUT" in result.output and "nothing was run or written" in result.output
    assert (tmp_path / "out.jsonl").read_text() == "yesterday's predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temporary file left
    # to stdout: nothing printed either (every record is checked before the first is predicted)
    result = predict("in.jsonl")
    assert result.exit_code == 1 and message in result.output and '"prediction"' not in result.output


def test_a_record_encode_refuses_late_leaves_the_output_as_it_was(predict, tmp_path):
    (tmp_path / "in.jsonl").write_bytes(lines(*GOOD[:280], {"id": 280, "text": "boom"}, *GOOD[281:]))
    (tmp_path / "out.jsonl").write_text("yesterday's predictions\n")
    result = predict("in.jsonl", "-o", "out.jsonl")
    assert result.exit_code == 1 and "in.jsonl lines 257-300: encode could not encode" in result.output, result.output
    assert "nothing was written to out.jsonl" in result.output
    assert (tmp_path / "out.jsonl").read_text() == "yesterday's predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def test_output_into_a_new_folder_or_onto_a_folder(predict, tmp_path):
    (tmp_path / "in.jsonl").write_bytes(lines(*GOOD[:3]))
    result = predict("in.jsonl", "-o", "new/deeper/out.jsonl")
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["id"] for x in (tmp_path / "new/deeper/out.jsonl").read_text().splitlines()] == [0, 1, 2]
    (tmp_path / "folder").mkdir()
    result = predict("in.jsonl", "-o", "folder")
    assert result.exit_code == 1 and "folder is a folder; name a file" in result.output, result.output
    assert list((tmp_path / "folder").iterdir()) == []


def test_stdin_is_checked_whole_before_predicting(predict):
    result = predict("-", input=lines(*GOOD[:3]))
    assert result.exit_code == 0 and [json.loads(x)["id"] for x in result.stdout.splitlines()] == [0, 1, 2]
    result = predict("-", input=lines(*GOOD[:3], b"\xff"))
    assert (
        result.exit_code == 1 and "stdin line 4 is not UTF-8" in result.output and '"prediction"' not in result.output
    )

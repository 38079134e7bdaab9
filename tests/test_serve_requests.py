"""`exp serve`'s request handling, fast: bodies parsed as JSON allows (JSON Lines split on \\n only,
Python's own limits said as a 4xx), the queue (small requests first, dropped work, bounded, a
stalled model seen by /ping), and the port checked before the model loads."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ml_exp.serving.batcher import Batcher, Busy, Expired, MAX_LARGE_WAITING
from ml_exp.serving.predictor import RequestError, Work
from ml_exp.serving.server import parse
from tests.bake import bake

JSONL = "application/jsonlines"


def test_json_lines_keep_raw_line_separators_inside_strings():
    texts = ["a\u2028b", "c\u2029d", "e\u0085f", "g\x1ch", "i\x0bj"]
    body = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\r\n" for t in texts).encode()
    records, shape = parse(body, JSONL)
    assert shape == "lines" and [r["text"] for r in records] == texts


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"text": "x", "id": ' + b"7" * 5000 + b"}", "a number of more than 4,300 digits"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
@pytest.mark.parametrize("content_type", ["application/json", JSONL])
def test_a_huge_number_or_deep_nesting_is_a_400(body, message, content_type):
    with pytest.raises(RequestError) as caught:
        parse(body, content_type)
    assert caught.value.status == 400 and message in caught.value.message


@pytest.mark.parametrize(
    "body, kind", [(b"null", "null"), (b"42", "number"), (b'"text"', "string"), (b"true", "boolean")]
)
def test_a_body_that_is_no_record_is_named_as_json_names_it(body, kind):
    with pytest.raises(RequestError) as caught:
        parse(body, "application/json")
    assert f"the body is a JSON {kind};" in caught.value.message and "NoneType" not in caught.value.message


class SlowModel:
    """A predictor (begin/advance/end, as the batcher drives one) that takes ``seconds`` a window
    and says which windows each turn scored; a record makes ``record["windows"]`` windows (default 1)."""

    def __init__(self, seconds: float):
        self.seconds, self.batches, self.release = seconds, [], threading.Event()
        self.release.set()

    def begin(self, records, checked=False):
        ids, owners = [], []
        for index, record in enumerate(records):
            count = record.get("windows", 1)
            ids += [record["id"]] if count == 1 else [f"{record['id']}/{w}" for w in range(count)]
            owners += [index] * count
        return Work(records, {"id": ids}, owners, None)

    def advance(self, work, windows):
        self.release.wait()
        part = work.windows["id"][work.scored : work.scored + windows]
        self.batches.append(part)
        time.sleep(self.seconds * len(part))
        work.parts.append(part)
        work.scored += len(part)

    def end(self, work):
        return [{"id": r["id"], "windows": work.owners.count(i)} for i, r in enumerate(work.records)]

    def predict(self, records, checked=False):
        work = self.begin(records)
        while not work.done():
            self.advance(work, work.total)
        return self.end(work)


def test_small_requests_go_before_a_waiting_large_one_and_dropped_work_is_not_scored():
    model = SlowModel(0.01)
    model.release.clear()  # hold the thread until everything is queued
    batcher = Batcher(model, max_records=4, timeout_s=30)
    first = batcher.submit([{"id": "first"}])
    time.sleep(0.2)
    large = batcher.submit([{"id": f"L{i}"} for i in range(6)], large=True)
    gone = batcher.submit([{"id": "gone"}])
    late = batcher.submit([{"id": "late"}], deadline=time.monotonic() - 1)
    small = [batcher.submit([{"id": f"s{i}"}]) for i in range(3)]
    gone.cancel()
    model.release.set()
    assert [j.future.result(10)[0]["id"] for j in small] == ["s0", "s1", "s2"]
    assert [p["id"] for p in large.future.result(10)] == [f"L{i}" for i in range(6)] and first.future.result(1)
    with pytest.raises(Expired):
        late.future.result(10)
    assert model.batches == [["first"], ["s0", "s1", "s2"], ["L0", "L1", "L2", "L3"], ["L4", "L5"]]


def test_a_small_request_goes_between_the_parts_of_a_large_one():
    model = SlowModel(0.05)
    batcher = Batcher(model, max_records=4, timeout_s=30)
    large = batcher.submit([{"id": f"L{i}"} for i in range(12)], large=True)
    time.sleep(0.05)  # the first part is being scored
    small = batcher.submit([{"id": "small"}])
    small.future.result(10)
    large.future.result(10)
    assert model.batches.index(["small"]) == 1, model.batches


def test_a_large_request_whose_client_went_away_stops_between_parts():
    model = SlowModel(0.05)
    batcher = Batcher(model, max_records=4, timeout_s=30)
    large = batcher.submit([{"id": f"L{i}"} for i in range(40)], large=True)
    time.sleep(0.1)
    large.cancel()
    time.sleep(0.5)
    assert len(model.batches) <= 2, model.batches


def test_a_small_request_goes_between_the_windows_of_one_long_document():
    model = SlowModel(0.01)
    batcher = Batcher(model, max_records=4, timeout_s=30)
    document = batcher.submit([{"id": "doc", "windows": 60}], large=True)
    time.sleep(0.05)  # its first windows are being scored
    small = batcher.submit([{"id": "small"}])
    assert small.future.result(10) == [{"id": "small", "windows": 1}]
    assert document.future.result(10) == [{"id": "doc", "windows": 60}]
    turn = model.batches.index(["small"])
    assert 1 <= turn <= 3 and len(model.batches) == 16, model.batches  # 15 turns of 4 windows, the small one between


def test_a_long_document_whose_client_went_away_stops_between_turns_of_windows():
    model = SlowModel(0.02)
    batcher = Batcher(model, max_records=4, timeout_s=30)
    document = batcher.submit([{"id": "doc", "windows": 400}], large=True)
    time.sleep(0.1)
    document.cancel()
    time.sleep(0.3)
    scored = sum(map(len, model.batches))
    time.sleep(0.3)
    assert scored == sum(map(len, model.batches)) and scored < 40, scored


def test_a_document_that_cannot_be_scored_within_the_timeout_is_refused_before_it_is_scored():
    model = SlowModel(0.01)  # ~100 windows/s
    batcher = Batcher(model, max_records=4, timeout_s=1)
    batcher.submit([{"id": "warm-up", "windows": 8}]).future.result(10)  # the speed is measured
    assert 50 < batcher.speed < 130, batcher.speed
    huge = batcher.submit([{"id": "huge", "windows": 500}], large=True)
    with pytest.raises(RequestError) as caught:
        huge.future.result(10)
    assert caught.value.status == 413 and "500 windows" in caught.value.message
    assert "SERVE_TIMEOUT_S = 1 s" in caught.value.message and "MAX_CHUNKS" in caught.value.message
    late = batcher.submit([{"id": "late", "windows": 60}], deadline=time.monotonic() + 0.3, large=True)
    with pytest.raises(Expired):  # it alone would fit in the timeout; not in what is left of its deadline
        late.future.result(10)
    fits = batcher.submit([{"id": "fits", "windows": 40}], large=True)
    assert fits.future.result(10) == [{"id": "fits", "windows": 40}]
    assert not any(str(w).startswith(("huge", "late")) for turn in model.batches for w in turn), model.batches


def test_the_queue_is_bounded_and_a_stalled_model_is_reported():
    model = SlowModel(0)
    model.release.clear()
    batcher = Batcher(model, max_records=4, timeout_s=0.5)
    batcher.submit([{"id": "stuck"}])
    time.sleep(0.1)
    for i in range(MAX_LARGE_WAITING):
        batcher.submit([{"id": i}], large=True)
    with pytest.raises(Busy):
        batcher.submit([{"id": "one more"}], large=True)
    assert batcher.stalled() is None
    time.sleep(0.7)
    assert "one batch has been running" in batcher.stalled()
    model.release.set()
    deadline = time.monotonic() + 5
    while batcher.stalled() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batcher.stalled() is None


def test_serve_on_a_busy_port_fails_before_loading_the_model_naming_the_port(tmp_path):
    project = bake(tmp_path, ticket="EXP-121", model_slug="port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exp = str(Path(sys.executable).with_name("exp"))
        # no run exists: reaching the model would fail with another message
        done = subprocess.run(
            [exp, "serve", "--run", "1", "--port", str(port)], cwd=project, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and "--port" in done.stderr and "serving" not in done.stderr
    bad = subprocess.run(
        [exp, "serve", "--run", "1", "--port", str(port)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "SERVE_TIMEOUT_S": "0"},
    )
    assert bad.returncode == 1 and "SERVE_TIMEOUT_S" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr

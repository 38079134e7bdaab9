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
from ml_exp.serving.predictor import RequestError
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
    """A predictor that takes ``seconds`` a record and says which batches it saw."""

    def __init__(self, seconds: float):
        self.seconds, self.batches, self.release = seconds, [], threading.Event()
        self.release.set()

    def predict(self, records, checked=False):
        self.release.wait()
        self.batches.append([r["id"] for r in records])
        time.sleep(self.seconds * len(records))
        return [{"id": r["id"]} for r in records]


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

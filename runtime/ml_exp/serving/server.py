"""``exp serve`` and the endpoint's container: the predictor behind SageMaker's serving contract.

- ``GET /ping``: 200 once the model is loaded (SageMaker's health check), with what is served;
- ``POST /invocations``: records in, predictions out. ``application/json``: one record (an
  object) -> one prediction; a list -> a list; ``{"instances": [...]}`` -> ``{"predictions":
  [...]}``. ``application/jsonlines`` (also ``application/x-jsonlines``, ``application/jsonl``,
  ``application/x-ndjson``): a record per line -> a prediction per line. The ``Accept`` header
  may ask for the other format.

Bad requests get a 4xx and ``{"error": "<what is wrong>"}`` (not JSON, a missing field, empty
text, too large, ...); the server keeps serving. A starlette app on uvicorn (both imported only
when serving). Requests that arrive together are scored together (:class:`Batcher`): one
forward pass over many small requests is what makes a CPU or a GPU fast, and the results are
those of each request alone (the same encode and forward; only the padding differs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any

from ml_exp.serving.predictor import Predictor, RequestError

JSON = "application/json"
JSON_LINES = ("application/jsonlines", "application/x-jsonlines", "application/jsonl", "application/x-ndjson")
# SageMaker real-time endpoints take at most 6 MB a request: the same limit here, so that what
# works on `exp serve` works on the endpoint (a 300-page document is about 1 MB of text).
MAX_BYTES = 6 * 1024 * 1024
MAX_RECORDS = 1000
PORT = 8080  # SageMaker's


class Batcher:
    """One thread runs the predictor; requests queue up and are scored in batches of at most
    ``max_records`` records (what is waiting when the thread is free: no added delay)."""

    def __init__(self, predictor: Predictor, max_records: int = 16):
        self.predictor, self.max_records = predictor, max_records
        self.jobs: queue.Queue[tuple[list, Future]] = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="ml-exp-predictor", daemon=True)
        self.thread.start()

    def submit(self, records: list) -> Future:
        future: Future = Future()
        self.jobs.put((records, future))
        return future

    def _work(self) -> None:
        while True:
            jobs = [self.jobs.get()]
            size = len(jobs[0][0])
            while size < self.max_records:
                try:
                    jobs.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
                size += len(jobs[-1][0])
            self._run(jobs)

    def _run(self, jobs: list[tuple[list, Future]]) -> None:
        if len(jobs) > 1:
            try:
                predictions = self.predictor.predict([r for records, _ in jobs for r in records], checked=True)
            except Exception:  # noqa: BLE001 - one bad request must not fail the others: retry each alone
                predictions = None
            if predictions is not None:
                start = 0
                for records, future in jobs:
                    future.set_result(predictions[start : start + len(records)])
                    start += len(records)
                return
        for records, future in jobs:
            try:
                future.set_result(self.predictor.predict(records, checked=True))
            except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
                future.set_exception(exc)


def parse(body: bytes, content_type: str, max_records: int = MAX_RECORDS) -> tuple[list, str]:
    """The records of a request and its shape (``object``, ``list``, ``instances``, ``lines``)."""
    media = content_type.split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if media in JSON_LINES:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise RequestError(f"line {number} is not JSON: {exc.msg} (column {exc.colno})") from None
        shape = "lines"
    elif media == JSON or media.endswith("+json"):
        if not text.strip():
            raise RequestError("the body is empty; send a record (a JSON object) or a list of records")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestError(
                f"the body is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}); "
                f"for one record per line send Content-Type {JSON_LINES[0]}"
            ) from None
        if isinstance(data, dict) and "instances" in data:
            records, shape = data["instances"], "instances"
            if not isinstance(records, list):
                raise RequestError("'instances' must be a list of records")
        elif isinstance(data, list):
            records, shape = data, "list"
        elif isinstance(data, dict):
            records, shape = [data], "object"
        else:
            raise RequestError(
                f"the body is a JSON {type(data).__name__}; send a record (an object) or a list of records"
            )
    else:
        raise RequestError(
            f"Content-Type {content_type or '(none)'} is not supported; use {JSON} or {JSON_LINES[0]}", status=415
        )
    if len(records) > max_records:
        raise RequestError(f"{len(records)} records in one request; at most {max_records} (split it)", status=413)
    return records, shape


def render(predictions: list, shape: str, accept: str) -> tuple[bytes, str]:
    media = accept.split(",")[0].split(";")[0].strip().lower()
    lines = media in JSON_LINES or (shape == "lines" and media not in (JSON,))
    if lines:
        return "".join(json.dumps(p) + "\n" for p in predictions).encode(), JSON_LINES[0]
    data: Any = {"instances": {"predictions": predictions}, "object": predictions[0]}.get(shape, predictions)
    return json.dumps(data).encode(), JSON


def create_app(
    predictor: Predictor, max_bytes: int = MAX_BYTES, max_records: int = MAX_RECORDS, batch_records: int | None = None
):
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    # batches of PER_DEVICE_EVAL_BATCH_SIZE (the inference step's): bigger ones make the clients wait together and
    # leave the model idle while they all send their next requests
    batcher = Batcher(predictor, batch_records or predictor.batch_size)
    log = logging.getLogger("ml_exp.serving")

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def ping(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", **predictor.info, "labels": predictor.labels, "fields": list(predictor.fields)}
        )

    async def invocations(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return error(
                f"the body is {int(declared):,} bytes; at most {max_bytes:,} (split the records over requests)", 413
            )
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_bytes:
                    return error(
                        f"the body is over {max_bytes:,} bytes; at most {max_bytes:,} (split the records over "
                        "requests)",
                        413,
                    )
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            records, shape = parse(bytes(body), request.headers.get("content-type", ""), max_records)
            predictor.check(records)
            predictions = await asyncio.wrap_future(batcher.submit(records))
        except RequestError as exc:
            return error(exc.message, exc.status)
        except Exception as exc:  # noqa: BLE001 - the server stays up; the client gets the reason
            log.exception("invocation failed")
            return error(f"{type(exc).__name__}: {exc}", 500)
        content, media = render(predictions, shape, request.headers.get("accept", ""))
        return Response(content, media_type=media)

    return Starlette(
        routes=[Route("/ping", ping, methods=["GET"]), Route("/invocations", invocations, methods=["POST"])]
    )


def serve(predictor: Predictor, host: str = "127.0.0.1", port: int = PORT, announce: Any = None) -> None:
    """Run the app on uvicorn until interrupted (Ctrl-C or SIGTERM: a clean stop)."""
    import uvicorn

    app = create_app(predictor)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    if announce is not None:
        info = predictor.info
        announce(
            f"serving {info['experiment']} run_{info['run']} model {info['model']} on http://{host}:{port} "
            "(GET /ping, POST /invocations); Ctrl-C stops it"
        )
    uvicorn.Server(config).run()

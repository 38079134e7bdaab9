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
import socket
import sys
import time
from typing import Any

from ml_exp.serving.batcher import LARGE_BYTES, Batcher, Busy, Expired
from ml_exp.serving.predictor import Predictor, RequestError, json_type

JSON = "application/json"
JSON_LINES = ("application/jsonlines", "application/x-jsonlines", "application/jsonl", "application/x-ndjson")
# SageMaker real-time endpoints take at most 6 MB a request: the same limit here, so that what
# works on `exp serve` works on the endpoint (a 300-page document is about 1 MB of text).
MAX_BYTES = 6 * 1024 * 1024
MAX_RECORDS = 1000
RETRY_AFTER_S = 5
PORT = 8080  # SageMaker's


def loads(text: str, what: str) -> Any:
    """``json.loads``, with what Python refuses besides syntax said as a request error."""
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestError(f"{what} is nested too deeply (arrays or objects within each other)") from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise RequestError(
            f"{what} holds a number of more than {sys.get_int_max_str_digits():,} digits; send it as a string"
        ) from None


def parse(body: bytes, content_type: str, max_records: int = MAX_RECORDS) -> tuple[list, str]:
    """The records of a request and its shape (``object``, ``list``, ``instances``, ``lines``)."""
    media = content_type.split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if media in JSON_LINES:
        records = []
        # on \n only (\r\n leaves a \r, which JSON takes as space): str.splitlines() would also split
        # inside a string at U+2028, U+2029, U+0085..., which JSON allows there raw
        for number, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    records.append(loads(line, f"line {number}"))
                except json.JSONDecodeError as exc:
                    raise RequestError(f"line {number} is not JSON: {exc.msg} (column {exc.colno})") from None
        shape = "lines"
    elif media == JSON or media.endswith("+json"):
        if not text.strip():
            raise RequestError("the body is empty; send a record (a JSON object) or a list of records")
        try:
            data = loads(text, "the body")
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
            raise RequestError(f"the body is a JSON {json_type(data)}; send a record (an object) or a list of records")
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
    predictor: Predictor,
    max_bytes: int = MAX_BYTES,
    max_records: int = MAX_RECORDS,
    batch_records: int | None = None,
    timeout_s: float = 50.0,
):
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    # batches of PER_DEVICE_EVAL_BATCH_SIZE (the inference step's): bigger ones make the clients wait together and
    # leave the model idle while they all send their next requests
    batcher = Batcher(predictor, batch_records or predictor.batch_size, timeout_s)
    log = logging.getLogger("ml_exp.serving")

    def error(message: str, status: int, retry: bool = False) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if retry else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def too_slow() -> JSONResponse:
        return error(
            f"not answered within SERVE_TIMEOUT_S = {timeout_s:g} s (the server is busy, or the request is too "
            "large to score in that time: split it, or raise SERVE_TIMEOUT_S)",
            503,
            retry=True,
        )

    async def ping(request: Request) -> Response:
        stalled = batcher.stalled()
        if stalled:  # a health check sees a server that cannot keep up
            return JSONResponse({"status": "overloaded", "error": f"the model cannot keep up: {stalled}"}, 503)
        return JSONResponse(
            {"status": "ok", **predictor.info, "labels": predictor.labels, "fields": list(predictor.fields)}
        )

    async def read(request: Request) -> bytes | JSONResponse:
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
        return bytes(body)

    async def gone(request: Request) -> None:
        """Returns when the client disconnects (the body is read: what comes next is that)."""
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def invocations(request: Request) -> Response:
        deadline = time.monotonic() + timeout_s
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return error(
                f"the body is {int(declared):,} bytes; at most {max_bytes:,} (split the records over requests)", 413
            )
        try:  # a client that sends slowly holds a connection, never the server
            body = await asyncio.wait_for(read(request), timeout_s)
        except asyncio.TimeoutError:
            return error(f"the body did not arrive within SERVE_TIMEOUT_S = {timeout_s:g} s", 408)
        if isinstance(body, Response):
            return body
        try:
            records, shape = parse(body, request.headers.get("content-type", ""), max_records)
            predictor.check(records)
            job = batcher.submit(records, deadline, large=len(body) > LARGE_BYTES)
        except RequestError as exc:
            return error(exc.message, exc.status)
        except Busy as exc:
            return error(f"the server is busy ({exc}); retry later", 503, retry=True)
        answer = asyncio.wrap_future(job.future)
        watcher = asyncio.ensure_future(gone(request))
        try:
            await asyncio.wait(
                {answer, watcher}, timeout=max(deadline - time.monotonic(), 0), return_when="FIRST_COMPLETED"
            )
        finally:
            watcher.cancel()
        if not answer.done():  # the client has gone, or the deadline passed: drop the work
            job.cancel()
            if watcher.done() and not watcher.cancelled():
                log.info("client disconnected; its request is dropped")
            return too_slow()
        try:
            predictions = answer.result()
            content, media = render(predictions, shape, request.headers.get("accept", ""))
        except Expired:
            return too_slow()
        except RequestError as exc:
            return error(exc.message, exc.status)
        except RecursionError:  # an echoed label nested too deeply to write back
            return error("a record's label is nested too deeply to be written back as JSON", 400)
        except Exception as exc:  # noqa: BLE001 - the server stays up; the client gets the reason
            log.exception("invocation failed")
            return error(f"{type(exc).__name__}: {exc}", 500)
        return Response(content, media_type=media)

    return Starlette(
        routes=[Route("/ping", ping, methods=["GET"]), Route("/invocations", invocations, methods=["POST"])]
    )


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads (a busy port fails at once: UserError);
    uvicorn listens on it once it starts."""
    from ml_exp.core.errors import UserError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}: {exc.strerror or exc}; check --host") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart right after a stop
        sock.bind((host, port))  # not listening yet: a client during the model's load is refused, not left hanging
    except OSError as exc:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server uses the port?); "
            "choose another with --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int = PORT,
    announce: Any = None,
    sock: socket.socket | None = None,
    timeout_s: float = 50.0,
) -> None:
    """Run the app on uvicorn until interrupted (Ctrl-C or SIGTERM: a clean stop), on ``sock``
    (see :func:`listen`) or a socket bound here; ``announce`` once it accepts connections."""
    import uvicorn

    sock = sock or listen(host, port)
    app = create_app(predictor, timeout_s=timeout_s)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list | None = None) -> None:
            await super().startup(sockets)
            if announce is not None and self.started:
                info = predictor.info
                announce(
                    f"serving {info['experiment']} run_{info['run']} model {info['model']} on http://{host}:{port} "
                    f"(GET /ping, POST /invocations; SERVE_TIMEOUT_S = {timeout_s:g}); Ctrl-C stops it"
                )

    Server(config).run(sockets=[sock])


def serve_timeout(experiment_dir: Any, environ: Any = None) -> float:
    """SERVE_TIMEOUT_S where the server runs (the environment, else the experiment's settings.ini,
    else its default), not the run's: how long to wait is the server's business, not the model's."""
    import os

    from ml_exp.config.settings import SETTINGS, read_settings_file
    from ml_exp.core.errors import UserError

    env = os.environ if environ is None else environ
    text = env.get("SERVE_TIMEOUT_S") or read_settings_file(experiment_dir)["SERVE_TIMEOUT_S"]
    setting = next(s for s in SETTINGS if s.key == "SERVE_TIMEOUT_S")
    try:
        return float(setting.parse(text))
    except ValueError as exc:
        raise UserError(f"SERVE_TIMEOUT_S = {text!r}: {exc}") from None

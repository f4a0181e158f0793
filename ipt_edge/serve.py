"""`ipt-edge serve`'s HTTP app: a bundle's tasks behind a small JSON API (the serve extra: starlette,
uvicorn, prometheus-client). docs/serving.md is the reference; the CLI side is ipt_edge/cli/serve.py.

    POST /v1/predict   {"texts": [...], "tasks": ...}  ->  {"results": [one `predict --json` record per text]}
    GET  /v1/tasks     names, labels, input kind and token budget of each task
    GET  /healthz      the process is up;   GET /readyz   the bundle is loaded, checked and warmed up
    GET  /metrics      Prometheus;          GET /openapi.json   this API, as OpenAPI 3.1

A request is read and checked on the event loop, queued (ipt_edge/serve_batching.py: one worker
merges concurrent requests into one Bundle call), and answered when its rows come back. Every
error is JSON: {"error": message, "field": ..., "index": ..., "expected": ...}.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from ipt_edge import __version__
from ipt_edge.bundle import Bundle, Predictions, TaskProbabilities
from ipt_edge.serve_batching import Batcher, Job
from ipt_edge.serve_openapi import openapi_document
from ipt_edge.task import Task
from ipt_edge.tokenizer import Text

log = logging.getLogger("ipt_edge.serve")

OPEN_PATHS = ("/healthz", "/readyz")  # probes answer without the API key
PATHS = ("/v1/predict", "/v1/tasks", "/metrics", "/openapi.json", *OPEN_PATHS)  # metrics' path label
RETRY_AFTER_S = 1  # what a 503 tells the client to wait: about one batch drains the queue's head
_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON can write a lone surrogate ("\ud800"); UTF-8 cannot
TEXT = "a non-empty string, or [text, text_pair] for a pair task"


@dataclass
class Limits:
    max_texts: int  # texts per request (413 beyond)
    max_body: int  # bytes per request body (413 beyond)


class RequestError(Exception):
    """A request the server will not answer; becomes a JSON error naming what is wrong."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        index: int | None = None,
        expected: str = "",
    ):
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": message}
        self.body.update({k: v for k, v in (("field", field), ("index", index)) if v is not None})
        if expected:
            self.body["expected"] = expected


@dataclass
class Asked:
    """A checked request: each text, and the tasks that answer it."""

    texts: list[Text]
    tasks: list[list[str]]

    @property
    def rows(self) -> tuple[list[Text], list[str]]:
        """One row per text and task, text by text: what Bundle.run takes."""
        pairs = [(text, task) for text, tasks in zip(self.texts, self.tasks, strict=True) for task in tasks]
        return [text for text, _ in pairs], [task for _, task in pairs]


# ---- reading a request --------------------------------------------------------------------------


def parse_predict(body: bytes, tasks: dict[str, Task], limits: Limits) -> Asked:
    """The body of POST /v1/predict, checked; any problem is a RequestError naming the field."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise RequestError(400, f"the body is not JSON ({error})", "body", expected="a JSON object") from None
    if not isinstance(request, dict):
        raise RequestError(400, "the body is not a JSON object", "body", expected='{"texts": [...]}')
    for key in request:
        if key not in ("texts", "tasks"):
            raise RequestError(
                400, f"unknown field {key!r}", key, expected='"texts" and, optionally, "tasks"'
            )
    if "texts" not in request:
        raise RequestError(400, 'missing field "texts"', "texts", expected="a list of texts")
    texts = request["texts"]
    if not isinstance(texts, list) or not texts:
        raise RequestError(400, '"texts" is not a non-empty list', "texts", expected="a list of texts")
    if len(texts) > limits.max_texts:
        raise RequestError(
            413,
            f"{len(texts)} texts, more than {limits.max_texts} per request",
            "texts",
            expected=f"at most {limits.max_texts} texts per request (--max-texts)",
        )
    checked = [_text(text, index) for index, text in enumerate(texts)]
    named = _task_names(request.get("tasks"), checked, tasks)
    for index, (text, names) in enumerate(zip(checked, named, strict=True)):
        for name in names:
            if tasks[name].text_pair != isinstance(text, tuple):
                takes = "[text, text_pair] pairs" if tasks[name].text_pair else "single texts"
                raise RequestError(
                    400, f"texts[{index}]: task {name!r} takes {takes}", "texts", index, expected=takes
                )
    return Asked(checked, named)


def _text(text: Any, index: int) -> Text:
    parts = text if isinstance(text, list) and len(text) == 2 else [text]
    for part in parts:
        if not isinstance(part, str) or not part or part.isspace():
            raise RequestError(400, f"texts[{index}] is empty or not text", "texts", index, expected=TEXT)
        if _SURROGATE.search(part):
            raise RequestError(
                400, f"texts[{index}] holds a lone surrogate (not valid UTF-8)", "texts", index, expected=TEXT
            )
    return (parts[0], parts[1]) if len(parts) == 2 else parts[0]


def _task_names(given: Any, texts: list[Text], tasks: dict[str, Task]) -> list[list[str]]:
    """Each text's tasks: "tasks" absent (each text: every task that reads its kind), one name (every
    text), or one entry per text, each a name or a list of names."""
    everyone = ", ".join(sorted(tasks))
    if given is None:
        named = []
        for index, text in enumerate(texts):
            kind = [name for name in sorted(tasks) if tasks[name].text_pair == isinstance(text, tuple)]
            if not kind:
                has = "a pair task" if isinstance(text, tuple) else "a single-text task"
                raise RequestError(
                    400, f"texts[{index}]: the bundle has no {has}", "texts", index, expected=TEXT
                )
            named.append(kind)
        return named
    shape = f"a task name, or a list with one entry per text ({len(texts)}), each a name or a list of names; tasks: {everyone}"
    if isinstance(given, str):
        entries: list = [given] * len(texts)
    elif isinstance(given, list) and len(given) == len(texts):
        entries = given
    else:
        raise RequestError(400, f'"tasks" does not fit {len(texts)} text(s)', "tasks", expected=shape)
    named = []
    for index, entry in enumerate(entries):
        names = [entry] if isinstance(entry, str) else entry
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise RequestError(
                400, f"tasks[{index}] is not a task name or a list of names", "tasks", index, expected=shape
            )
        for name in names:
            if name not in tasks:
                raise RequestError(
                    400, f"no task {name!r} in the bundle", "tasks", index, expected=f"one of: {everyone}"
                )
        named.append(list(dict.fromkeys(names)))
    return named


def records(asked: Asked, predictions: Predictions) -> list[dict[str, Any]]:
    """Each text's `predict --json` record (TaskProbabilities.record), with "truncated"."""
    probabilities = predictions.probabilities
    out, row = [], 0
    for text, names in zip(asked.texts, asked.tasks, strict=True):
        rows = range(row, row + len(names))
        answers = TaskProbabilities(
            [text],
            {name: predictions.label_names[r] for name, r in zip(names, rows, strict=True)},
            {name: probabilities[r][None, :] for name, r in zip(names, rows, strict=True)},
            np.array([predictions.truncated[list(rows)].any()]),
        )
        out.append({**answers.record(0), "truncated": bool(answers.truncated[0])})
        row += len(names)
    return out


async def read_body(request: Request, max_body: int) -> bytes:
    """The body, refused (413) as soon as it is known to be larger than max_body: by its
    Content-Length, or while it streams in (a chunked body has none)."""
    too_large = RequestError(
        413,
        f"the body is more than {max_body} bytes",
        "body",
        expected=f"at most {max_body} bytes (--max-body)",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


# ---- the app --------------------------------------------------------------------------------------


class Metrics:
    """What /metrics shows, in a registry of its own (the process's memory and CPU included)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "ipt_edge_requests",
            "HTTP requests answered, by path and status",
            ["path", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ipt_edge_request_seconds",
            "Time from a request's arrival to its answer, by path",
            ["path"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "ipt_edge_batch_rows",
            "Rows (a text for a task) per model call: the dynamic batches' sizes",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.queue_rows = Gauge("ipt_edge_queue_rows", "Rows waiting for the model", registry=self.registry)
        self.in_flight = Gauge(
            "ipt_edge_predict_in_flight",
            "Predict requests received and not yet answered",
            registry=self.registry,
        )
        self.texts = Counter("ipt_edge_texts", "Texts answered", registry=self.registry)
        self.truncated = Counter(
            "ipt_edge_truncated_texts", "Texts cut to their task's token budget", registry=self.registry
        )


@dataclass
class Server:
    """What the routes share: the bundle, its tasks, the batcher, the limits and the metrics."""

    bundle: Bundle
    tasks: dict[str, Task]
    batcher: Batcher
    limits: Limits
    metrics: Metrics
    ready: bool = False

    async def predict(self, request: Request) -> Response:
        with self.batcher.arriving() as submit:
            asked = parse_predict(await read_body(request, self.limits.max_body), self.tasks, self.limits)
            texts, tasks = asked.rows
            loop = asyncio.get_running_loop()
            answer: asyncio.Future = loop.create_future()

            def done(result: Predictions | Exception) -> None:  # on the worker thread
                loop.call_soon_threadsafe(_settle, answer, result)

            job = Job(texts, tasks, done)
            if not submit(job):
                raise RequestError(
                    503, f"the queue is full ({self.batcher.queued} rows waiting); retry in {RETRY_AFTER_S} s"
                )
        request.state.texts = len(asked.texts)
        result = await answer
        if isinstance(result, (ValueError, TypeError)):  # an input the checks above let through
            raise RequestError(400, str(result), "texts")
        if isinstance(result, Exception):
            log.error("the model failed on a request of %d texts: %r", len(asked.texts), result)
            raise RequestError(500, f"the model failed on this request ({type(result).__name__})")
        answered = records(asked, result)
        self.metrics.texts.inc(len(answered))
        self.metrics.truncated.inc(sum(record["truncated"] for record in answered))
        return json_response({"results": answered})

    async def task_list(self, request: Request) -> Response:
        return json_response({"tasks": [_describe(task) for task in self.tasks.values()]})

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if not self.ready:
            return json_response({"status": "not ready"}, 503)
        return json_response({"status": "ready", "tasks": list(self.tasks)})

    async def metrics_page(self, request: Request) -> Response:
        self.metrics.queue_rows.set(self.batcher.queued)
        return Response(generate_latest(self.metrics.registry), headers={"content-type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(list(self.tasks), __version__))


def _settle(answer: asyncio.Future, result: Predictions | Exception) -> None:
    if not answer.done():
        answer.set_result(result)


def _describe(task: Task) -> dict[str, Any]:
    return {
        "name": task.name,
        "labels": task.labels,
        "input": "text_pair" if task.text_pair else "text",
        "max_tokens": task.info.max_length,
    }


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(content, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return Response(body, status, headers, media_type="application/json")


def create_app(
    bundle: Bundle,
    limits: Limits,
    max_batch: int,
    batch_size: int,
    max_wait: float,
    max_queue: int,
    api_key: str | None = None,
    workers: int = 1,
) -> Guard:
    """The ASGI app: the routes behind the API key check, the request log and the metrics."""
    metrics = Metrics()
    tasks = {name: bundle.task(name) for name in bundle.tasks}
    batcher = Batcher(bundle, max_batch, batch_size, max_wait, max_queue, metrics.batch_rows.observe, workers)
    server = Server(bundle, tasks, batcher, limits, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.ready = True
        yield
        server.ready = False
        await asyncio.to_thread(batcher.close)  # uvicorn has answered every request by now

    async def request_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestError)
        headers = {"retry-after": str(RETRY_AFTER_S)} if error.status == 503 else None
        return json_response(error.body, error.status, headers)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)  # 404, 405: JSON as well
        return json_response(
            {"error": f"{request.method} {request.url.path}: {error.detail}"}, error.status_code
        )

    routes = [
        Route("/v1/predict", server.predict, methods=["POST"]),
        Route("/v1/tasks", server.task_list, methods=["GET"]),
        Route("/healthz", server.healthz, methods=["GET"]),
        Route("/readyz", server.readyz, methods=["GET"]),
        Route("/metrics", server.metrics_page, methods=["GET"]),
        Route("/openapi.json", server.openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={RequestError: request_error, HTTPException: http_error},
    )
    return Guard(app, metrics, api_key)


class Guard:
    """Around every HTTP request: the API key check (all but the probes), one log line and the
    metrics. Plain ASGI, not a starlette middleware: it costs a few microseconds a request."""

    def __init__(self, app: Starlette, metrics: Metrics, api_key: str | None):
        self.app = app
        self.metrics = metrics
        self.key = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500
        path = scope["path"] if scope["path"] in PATHS else "other"
        predicting = path == "/v1/predict"
        if predicting:
            self.metrics.in_flight.inc()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.key and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
                await _unauthorized(sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            if predicting:
                self.metrics.in_flight.dec()
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(elapsed)
            texts = scope.get("state", {}).get("texts")
            client = scope.get("client") or ("-", 0)
            log.info(
                "%s %s %s %d %.1f ms%s",
                client[0],
                scope["method"],
                scope["path"] if path != "other" else ascii(scope["path"][:200]),  # no line breaks or escapes
                status,
                elapsed * 1000,
                f" {texts} texts" if texts is not None else "",
            )

    def _authorized(self, scope: Scope) -> bool:
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        assert self.key is not None
        return hmac.compare_digest(given, self.key)  # constant time: the key cannot be guessed byte by byte


async def _unauthorized(send: Send) -> None:
    body = b'{"error": "missing or wrong API key", "field": "authorization", "expected": "Authorization: Bearer <key>"}'
    headers = [
        (b"content-type", b"application/json"),
        (b"www-authenticate", b"Bearer"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""`ipt-edge serve`: a bundle's tasks over HTTP on this machine, with dynamic batching (the app is
ipt_edge/serve.py; docs/serving.md documents the API). Needs the serve extra.

Start-up order: check the options, take the port (a taken one fails now, not after a slow load),
load and check the bundle, run each task once, then answer. SIGTERM or Ctrl-C stop taking
connections, answer every request already accepted, and exit 0.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ipt_edge.cli.app import (
    BatchSizeOption,
    BundleOption,
    PrecisionOption,
    ProviderOption,
    ThreadsOption,
    app,
    fail,
    open_bundle,
)

if TYPE_CHECKING:
    from ipt_edge.bundle import Bundle
    from ipt_edge.serve import Guard

BACKLOG = 2048  # connections the kernel holds while the server is busy (uvicorn's default)


@app.command()
def serve(
    bundle: BundleOption = Path("bundle"),
    host: Annotated[
        str, typer.Option(help="Address to listen on. Any but loopback (127.0.0.1, ::1) needs --api-key.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port; 0 takes a free one (the log names it).")
    ] = 8080,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="IPT_EDGE_API_KEY",
            help="Require `Authorization: Bearer KEY` on every path but /healthz and /readyz. Prefer the "
            "env var: an argument shows in `ps`.",
            show_default=False,
        ),
    ] = None,
    provider: ProviderOption = "cpu",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Model calls run at once, each by a worker thread of its own, with --threads each (by "
            "default the cores shared out). On 2 cores, 2 workers of 1 thread served 32 clients no faster "
            "than 1 worker of 2 and one client slower (docs/serving.md, 'Workers').",
        ),
    ] = 1,
    threads: ThreadsOption = None,
    precision: PrecisionOption = "fp32",
    max_batch: Annotated[
        int, typer.Option(min=1, help="Rows (a text for a task) merged into one Bundle call, at most.")
    ] = 64,
    batch_size: BatchSizeOption = 8,
    spin: Annotated[
        bool,
        typer.Option(
            help="Let ONNX Runtime's backbone threads spin between calls. Off by default here: a spinning "
            "pool takes the cores the server's event loop needs to read and answer requests."
        ),
    ] = False,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            min=0,
            help="How long a batch with room waits for requests already arriving. A lone request never waits.",
        ),
    ] = 5.0,
    max_queue: Annotated[
        int,
        typer.Option(
            min=1, help="Rows waiting for the model, at most; a request beyond gets 503 + Retry-After."
        ),
    ] = 1024,
    max_texts: Annotated[int, typer.Option(min=1, help="Texts per request, at most (413 beyond).")] = 256,
    max_body: Annotated[
        int, typer.Option(min=1, help="Bytes per request body, at most (413 beyond).")
    ] = 1_048_576,
    log_level: Annotated[
        str, typer.Option(help="info: one line per request (never its texts); warning: problems only.")
    ] = "info",
) -> None:
    """Serve a bundle's tasks over HTTP: POST /v1/predict, GET /v1/tasks, /healthz, /readyz, /metrics.

    Try it: `ipt-edge serve -b bundle`, then
    `curl -s localhost:8080/v1/predict -d '{"texts": ["a gripping film"]}'`.

    The body is {"texts": [...], "tasks": ...}. A text is a string, or ["text", "pair"] for a pair
    task. "tasks" is one name for every text, or a list with one entry per text (a name or a list
    of names); left out, each text is answered by every task of its kind. The answer holds one
    `predict --json` record per text, with "truncated": true where a text was cut to its task's
    token budget. Bad input gets 400 naming the field and index; too many texts or bytes 413; a
    full queue 503 with Retry-After.

    Concurrent requests are merged into one Bundle call (up to --max-batch rows, a row being a
    text for a task), mixing tasks; its rows are sorted by length into model batches of
    --batch-size, which keeps padding low. A lone request never waits for others.

    Listens on 127.0.0.1 only, unless --host says otherwise, which needs --api-key. SIGTERM or
    Ctrl-C: stop taking connections, answer every accepted request, exit 0. docs/serving.md has
    the details.
    """
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        fail(f"serve needs the serve extra ({error.name} is missing): pip install 'ipt-edge[serve]'")
    level = getattr(logging, log_level.upper(), None)
    if log_level.lower() not in ("debug", "info", "warning", "error") or not isinstance(level, int):
        fail(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    api_key = api_key or None  # an empty IPT_EDGE_API_KEY is no key
    if not _loopback(host) and not api_key:
        fail(
            f"--host {host} lets other machines connect: give --api-key (or set IPT_EDGE_API_KEY), "
            "or serve on 127.0.0.1"
        )
    listening = _listen(host, port)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("uvicorn.error").addFilter(_no_upgrade_advice)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers > 1 and threads is None and not os.environ.get("IPT_EDGE_THREADS", "").strip():
        threads = max(1, cores // workers)  # the cores shared out, not each worker all of them
    loaded, tasks = open_bundle(bundle, None, False, provider, threads, precision, spin=spin)
    _warm_up(loaded)

    from ipt_edge.serve import Limits, create_app

    asgi = create_app(
        loaded,
        Limits(max_texts, max_body),
        max_batch,
        batch_size,
        max_wait_ms / 1000,
        max_queue,
        api_key,
        workers,
    )
    where = listening.getsockname()
    logging.getLogger("ipt_edge.serve").info(
        "serving %d task(s) of %s on http://%s:%d (%d worker(s) x %s thread(s); Ctrl-C or SIGTERM to stop)",
        len(tasks),
        bundle,
        f"[{where[0]}]" if ":" in where[0] else where[0],
        where[1],
        workers,
        threads or "ONNX Runtime's default",
    )
    _run(asgi, listening)


def _run(asgi: Guard, listening: socket.socket) -> None:
    """uvicorn on the socket taken already, until SIGTERM or Ctrl-C and every answer is sent."""
    import uvicorn

    config = uvicorn.Config(
        asgi,
        log_config=None,  # the root logger serve() set up: one format for uvicorn's lines and ours
        access_log=False,  # ipt_edge.serve logs each request itself, with its status and time
        lifespan="on",
        # h11 even where httptools is installed: one parser, the one tested. httptools garbles a
        # request that asks to upgrade to HTTP/2 (Java's HttpClient does, by default).
        http="h11",
        ws="none",  # no WebSocket routes: an upgrade request is answered as plain HTTP/1.1
        timeout_graceful_shutdown=None,  # every accepted request is answered, however long it takes
        backlog=BACKLOG,
    )
    server = uvicorn.Server(config)

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    # uvicorn handles SIGTERM/SIGINT while it serves (a graceful stop), then restores the handlers
    # it found and raises the signal again. Found: this one, so that a stop ends in exit 0, not in
    # the CLI's 143/130 for an interrupted command; it also catches a signal sent before uvicorn's.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.run(sockets=[listening])


def _no_upgrade_advice(record: logging.LogRecord) -> bool:
    """Drop uvicorn's two warnings on a request that asks to upgrade to HTTP/2 (Java's HttpClient
    sends one on each new connection): it is answered as HTTP/1.1, as it should be, and the advice
    to install a WebSocket library is not for this server."""
    return not record.getMessage().startswith(
        ("Unsupported upgrade request", "No supported WebSocket library")
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to any address
        return False


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; a taken port or an unknown address is a clear exit 2."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it
        # a keep-alive client waits ~40 ms for each answer (Nagle's algorithm and delayed ACKs)
        listening = socket.socket(family, kind, proto)
        if os.name == "posix":  # a restart need not wait out TIME_WAIT (on Windows it means more)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
        listening.listen(BACKLOG)
        return listening
    except socket.gaierror as error:
        fail(f"--host {host}: not an address of this machine ({error.strerror})")
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            fail(
                f"port {port} on {host} is already in use (another server?): stop it, or pick another "
                "--port (0 takes any free one)"
            )
        if error.errno == errno.EACCES:
            fail(f"port {port} on {host} needs privileges this user lacks: pick a --port above 1023")
        fail(f"cannot listen on {host}:{port}: {error.strerror or error}")


def _warm_up(bundle: Bundle) -> None:
    """Run each task once: its graphs are opened and checked, and the first request is not slow."""
    for name in bundle.tasks:
        text = ("warm up", "warm up") if bundle.task(name).text_pair else "warm up"
        bundle.predict([text], name)

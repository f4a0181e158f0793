"""`ipt-edge serve` under load (issue #32): the real server in its own process, driven by many
concurrent keep-alive HTTP clients sending one SST-2 test text per request, against Bundle.predict
in-process on the same texts.

    python benchmarks/serve.py                # the full run; appended to docs/serve.jsonl, then the table
    python benchmarks/serve.py --seconds 3 --total-requests 3000 --overload-seconds 3 --results /tmp/s.jsonl
    python benchmarks/serve.py table          # every run of --results

One run, in order:
1. in-process, in a child process with the server's threads: Bundle.predict on all the texts at
   the server's --batch-size and at Bundle's default 32 (texts/s; the faster is the comparison);
   on calls of 32 texts in arrival order (what a server could reach, HTTP costing nothing, with
   32 clients' texts in flight: the texts of each call sorted by length among 32, not 2,000); then
   one text at a time (p50, p99 ms);
2. the server (`ipt-edge serve`, its defaults but --threads and --serve-args), given 1,000
   requests, then 1, 8, 32 and 128 clients for --seconds each (closed loop: a client sends its
   next request when its answer is in): requests/s, p50 and p99 ms; at 32 clients also the
   server's CPU milliseconds a request, its event loop's (HTTP, JSON, checks, the log line) apart
   from its other threads' (the batcher's model calls, ONNX Runtime's pool). Then more at 32 clients up to
   --total-requests (100,000): the server's RSS after the first 1,000 and after them all;
3. overload: requests sent open loop at 4x the rate of 32 clients for --overload-seconds, whatever
   the answers: how many got 200, 503 (with Retry-After), anything else or a wrong label (failed:
   should be 0), and the RSS's peak; then SIGTERM, and the exit code (should be 0).

The targets (issue #32): 32 clients >= 0.85x in-process texts/s; p50 at 1 client <= in-process
one-text p50 + 3 ms; RSS after 100,000 requests within 20 MB of RSS after 1,000. Every answer's
label is checked against in-process's. The client is asyncio on raw sockets, so that the load
generator costs the machine little next to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import re
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TASK = "sst2-sentiment"  # the bundle's task: models/sst2-sentiment exported (README's first command)
CLIENTS = (1, 8, 32, 128)
WARM_REQUESTS = 1_000  # the first RSS reading is taken after these


def read_texts(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as file:
        return [row["sentence"] for row in csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- 1. in-process ----------------------------------------------------------------------------


def in_process(args: argparse.Namespace) -> dict:
    """Bundle.predict in this process: all texts at once (the median of 3 runs) at the server's
    --batch-size and at Bundle's default 32, then one text at a time."""
    from ipt_edge import Bundle

    texts = read_texts(args.texts)
    bundle = Bundle.load(args.bundle, threads=args.threads)
    bundle.predict(texts[:64], TASK, batch_size=args.batch_size)  # warm up

    def texts_per_second(calls_of: int, batch_size: int) -> float:
        """The median of 3 passes over the texts, given to Bundle.predict `calls_of` at a time."""
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            for start in range(0, len(texts), calls_of):
                bundle.predict(texts[start : start + calls_of], TASK, batch_size=batch_size)
            runs.append(len(texts) / (time.perf_counter() - started))
        return round(statistics.median(runs), 1)

    rates = {str(size): texts_per_second(len(texts), size) for size in sorted({args.batch_size, 32})}
    # What a batching server could reach with no HTTP cost at all when 32 clients each have one
    # text in flight: calls of 32 texts in arrival order, each sorted into model batches of the
    # server's --batch-size (the texts of all 2,000 at once sort into batches of nearly one length).
    arrival = texts_per_second(32, args.batch_size)
    one = []
    for text in texts[: args.one_text_calls]:
        started = time.perf_counter()
        bundle.predict([text], TASK)
        one.append(time.perf_counter() - started)
    return {
        "texts_per_second": max(rates.values()),  # the comparison is with the faster batch size
        "texts_per_second_by_batch_size": rates,
        "arrival_calls_of_32_texts_per_second": arrival,
        "one_text_p50_ms": round(1000 * percentile(one, 0.5), 2),
        "one_text_p99_ms": round(1000 * percentile(one, 0.99), 2),
        "labels": bundle.predict(texts, TASK, batch_size=args.batch_size),
    }


# ---- the client ---------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection: POST /v1/predict, read the status and the JSON."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, host)

    async def post(self, body: bytes) -> tuple[int, dict, bytes]:
        head = (
            f"POST /v1/predict HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split(" ")[1]), headers, payload

    def close(self) -> None:
        self.writer.close()


@dataclass
class Load:
    """The texts as request bodies, and each text's in-process label."""

    host: str
    port: int
    bodies: list[bytes]
    labels: list[str]
    sent: int = 0  # requests sent so far, every phase together

    def wrong(self, index: int, status: int, payload: bytes) -> bool:
        """Not a 200 with the in-process label."""
        if status != 200:
            return True
        answer = json.loads(payload)["results"][0]["tasks"][TASK]["label"]
        return answer != self.labels[index % len(self.labels)]


async def closed_loop(
    load: Load, clients: int, seconds: float | None = None, requests: int | None = None
) -> dict:
    """`clients` connections, each sending its next request when its answer is in, for `seconds`
    or until `requests` have been sent. Requests/s and latency count the 200s only; a 503 (the
    queue full, not expected here at the default --max-queue) is counted apart."""
    latencies: list[float] = []
    counts = {"refused_503": 0, "failed": 0}
    stop_at = time.perf_counter() + seconds if seconds is not None else float("inf")
    budget = load.sent + requests if requests is not None else None

    async def client() -> None:
        connection = await Connection.open(load.host, load.port)
        try:
            while time.perf_counter() < stop_at and (budget is None or load.sent < budget):
                index = load.sent
                load.sent += 1
                started = time.perf_counter()
                status, _, payload = await connection.post(load.bodies[index % len(load.bodies)])
                if status == 503:
                    counts["refused_503"] += 1
                elif load.wrong(index, status, payload):
                    counts["failed"] += 1
                else:
                    latencies.append(time.perf_counter() - started)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * percentile(latencies, 0.5), 2) if latencies else None,
        "p99_ms": round(1000 * percentile(latencies, 0.99), 2) if latencies else None,
        **counts,
    }


async def open_loop(load: Load, rate: float, seconds: float, pid: int) -> dict:
    """Requests sent at `rate` per second for `seconds`, each on an idle connection or a new one,
    whatever the answers; every answer is awaited (the queue drains) before this returns.

    As any HTTP client does, a request whose reused keep-alive connection turns out closed by the
    server (its idle timeout) before any answer is sent again once on a new connection, and counted
    as `stale_retried`. `failed` is then a wrong label, a status other than 200 or 503, or an error
    on a fresh connection; `errors` names each error's kind."""
    idle: list[Connection] = []
    counts = {"ok": 0, "refused_503": 0, "failed": 0, "stale_retried": 0}
    errors: dict[str, int] = {}
    peak = rss_mb(pid)

    async def one(index: int) -> None:
        body = load.bodies[index % len(load.bodies)]
        connection = idle.pop() if idle else None
        try:
            if connection is not None:
                try:
                    status, headers, payload = await connection.post(body)
                except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError):
                    connection.close()
                    counts["stale_retried"] += 1
                    connection = None
            if connection is None:
                connection = await Connection.open(load.host, load.port)
                status, headers, payload = await connection.post(body)
        except (OSError, asyncio.IncompleteReadError) as error:
            counts["failed"] += 1
            errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
            return
        if status == 503 and headers.get("retry-after"):
            counts["refused_503"] += 1
        elif load.wrong(index, status, payload):
            counts["failed"] += 1
        else:
            counts["ok"] += 1
        idle.append(connection)

    async def watch_memory() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch_memory())
    started, pending = time.perf_counter(), []
    total = int(rate * seconds)
    for k in range(total):
        delay = started + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(one(load.sent)))
        load.sent += 1
    offered = total / (time.perf_counter() - started)
    await asyncio.gather(*pending)
    watcher.cancel()
    for connection in idle:
        connection.close()
    return {"target_rate": round(rate, 1), "offered_rate": round(offered, 1), "sent": total, **counts,
            "errors": errors, "rss_peak_mb": round(peak, 1)}  # fmt: skip


# ---- 2. and 3. the server -----------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def cpu_seconds(pid: int) -> np.ndarray:
    """CPU seconds (user + system) the server has spent: [its main thread (uvicorn's event loop:
    HTTP, JSON, checks, logging), every other thread (the batcher and ONNX Runtime's)]."""
    spent = np.zeros(2)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a thread that ended meanwhile
            continue
        spent[0 if task.name == str(pid) else 1] += (int(fields[11]) + int(fields[12])) / os.sysconf(
            "SC_CLK_TCK"
        )
    return spent


def start_server(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str, int]:
    command = [sys.executable, "-m", "ipt_edge", "serve", "-b", str(args.bundle), "--port", "0",
               "--batch-size", str(args.batch_size), *shlex.split(args.serve_args)]  # fmt: skip
    command += ["--threads", str(args.threads)] if args.threads else []
    with log.open("wb") as stderr:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 120
    while not (found := re.search(r" on http://([\d.]+):(\d+) ", log.read_text())):
        if server.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return server, found.group(1), int(found.group(2))


async def drive(args: argparse.Namespace, load: Load, pid: int) -> dict:
    record: dict = {}
    await closed_loop(load, 32, requests=WARM_REQUESTS)
    record["rss_mb_after_1000"] = round(rss_mb(pid), 1)
    phases = []
    for clients in CLIENTS:
        before = cpu_seconds(pid)
        phases.append(await closed_loop(load, clients, seconds=args.seconds))
        spent = cpu_seconds(pid) - before
        if clients == 32 and phases[-1]["requests"]:
            record["cpu_ms_per_request_at_32"] = {
                "event_loop": round(1000 * spent[0] / phases[-1]["requests"], 2),
                "other_threads": round(1000 * spent[1] / phases[-1]["requests"], 2),
            }
        print(f"  {clients} clients: {phases[-1]}", flush=True)
    record["clients"] = phases
    if load.sent < args.total_requests:
        await closed_loop(load, 32, requests=args.total_requests - load.sent)
    record["total_requests"] = load.sent
    record["rss_mb_after_total"] = round(rss_mb(pid), 1)
    print(f"  RSS {record['rss_mb_after_1000']} MB after 1,000 requests, {record['rss_mb_after_total']} MB "
          f"after {load.sent:,}", flush=True)  # fmt: skip
    sustained = next(p for p in phases if p["clients"] == 32)["requests_per_second"]
    record["rss_mb_before_overload"] = round(rss_mb(pid), 1)
    record["overload"] = await open_loop(load, 4 * sustained, args.overload_seconds, pid)
    record["rss_mb_after_overload"] = round(rss_mb(pid), 1)
    print(f"  overload: {record['overload']}", flush=True)
    return record


def run(args: argparse.Namespace) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # the overload's connections; the server inherits it
    limit = 65536 if hard == resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    texts = read_texts(args.texts)
    command = [sys.executable, __file__, "in-process", "--bundle", str(args.bundle), "--texts", str(args.texts),
               "--batch-size", str(args.batch_size), "--one-text-calls", str(args.one_text_calls)]  # fmt: skip
    command += ["--threads", str(args.threads)] if args.threads else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"in-process run failed:\n{done.stderr[-3000:]}")
    inproc = json.loads(done.stdout)
    labels = inproc.pop("labels")
    print(f"in-process: {inproc}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        server, host, port = start_server(args, Path(scratch) / "server.log")
        try:
            load = Load(host, port, [json.dumps({"texts": [t]}).encode() for t in texts], labels)
            measured = asyncio.run(drive(args, load, server.pid))
            server.send_signal(signal.SIGTERM)
            exit_code = server.wait(120)
        finally:
            if server.poll() is None:
                server.kill()
    at_32 = next(p for p in measured["clients"] if p["clients"] == 32)["requests_per_second"]
    record = {
        "date": time.strftime("%Y-%m-%d"), "commit": commit(), "cpu": cpu_name(), "cores": os.cpu_count(),
        "threads": args.threads, "batch_size": args.batch_size, "serve_args": args.serve_args,
        "texts": len(texts), "seconds": args.seconds, "in_process": inproc, **measured,
        "ratio_at_32": round(at_32 / inproc["texts_per_second"], 3),
        "ratio_at_32_to_arrival_calls": round(at_32 / inproc["arrival_calls_of_32_texts_per_second"], 3),
        "exit_code": exit_code,
    }  # fmt: skip
    with args.results.open("a") as out:
        out.write(json.dumps(record) + "\n")
    table(args.results)


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def cpu_name() -> str:
    found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    return found.group(1).strip() if found else platform.processor()


def table(results: Path) -> None:
    """One row per run: throughput by clients, latency at 1 client, RSS, overload."""
    runs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    print("| date | commit | cores × threads, options | in-process texts/s | req/s at 1 / 8 / 32 / 128 clients "
          "| × in-process at 32 (≥ 0.85); × its calls of 32 in arrival order | CPU ms a request at 32: event loop / model | p50 / p99 ms at 1 client (in-process one text p50 + 3) "
          "| RSS MB after 1k / all requests | overload: offered req/s, 200 / 503 / failed, RSS peak MB | exit |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        by = {p["clients"]: p for p in r["clients"]}
        one, inproc, over = by[1], r["in_process"], r["overload"]
        rates = " / ".join(f"{by[c]['requests_per_second']:,.0f}" for c in CLIENTS)
        given = " ".join(([f"--batch-size {r['batch_size']}"] if r.get("batch_size", 8) != 8 else [])
                         + ([r["serve_args"]] if r.get("serve_args") else []))  # fmt: skip
        options = f" `{given}`" if given else ""
        stale = f" ({over['stale_retried']} stale retried)" if "stale_retried" in over else ""
        arrival = f"; {r['ratio_at_32_to_arrival_calls']:.2f}" if "ratio_at_32_to_arrival_calls" in r else ""
        split = r.get("cpu_ms_per_request_at_32")
        cpu = f"{split['event_loop']:.2f} / {split['other_threads']:.2f}" if split else "–"
        print(f"| {r['date']} | {r['commit']} | {r['cores']} × {r['threads'] or 'all'}{options} | {inproc['texts_per_second']:,.0f} "
              f"| {rates} | {r['ratio_at_32']:.2f}{arrival} | {cpu} "
              f"| {one['p50_ms']:.1f} / {one['p99_ms']:.1f} ({inproc['one_text_p50_ms'] + 3:.1f}) "
              f"| {r['rss_mb_after_1000']:.0f} / {r['rss_mb_after_total']:.0f} ({r['total_requests']:,}) "
              f"| {over['offered_rate']:,.0f}, {over['ok']:,} / {over['refused_503']:,} / {over['failed']}{stale}, "
              f"{over['rss_peak_mb']:.0f} | {r['exit_code']} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", nargs="?", default="run", choices=["run", "table", "in-process"])
    parser.add_argument(
        "--bundle", type=Path, default=Path("bundle"), help="a bundle with task sst2-sentiment"
    )
    parser.add_argument(
        "--texts", type=Path, default=Path("work/sst2/test.tsv"), help="a TSV with `sentence`"
    )
    parser.add_argument(
        "--threads", type=int, help="ONNX Runtime threads, server and in-process (default: all)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="the server's --batch-size, and in-process's"
    )
    parser.add_argument(
        "--serve-args", default="", help='more `ipt-edge serve` options, e.g. "--max-batch 32"'
    )
    parser.add_argument("--seconds", type=float, default=20, help="each closed-loop phase")
    parser.add_argument("--total-requests", type=int, default=100_000, help="the second RSS reading's")
    parser.add_argument("--overload-seconds", type=float, default=20)
    parser.add_argument("--one-text-calls", type=int, default=500, help="in-process one-text latency calls")
    parser.add_argument("--results", type=Path, default=Path("docs/serve.jsonl"))
    args = parser.parse_args()
    if args.action == "in-process":
        print(json.dumps(in_process(args)))
    elif args.action == "table":
        if not args.results.is_file():
            sys.exit(f"{args.results}: no runs yet")
        table(args.results)
    else:
        if not (args.bundle / "manifest.json").is_file():
            sys.exit(
                f"{args.bundle}: no bundle; export one: ipt-edge export models/sst2-sentiment -o {args.bundle}"
            )
        run(args)


if __name__ == "__main__":
    main()

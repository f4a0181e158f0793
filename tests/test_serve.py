"""`ipt-edge serve`: a local HTTP classifier. Its batcher merges whatever requests are waiting into
one Bundle call (tested in-process on a stand-in bundle, step by step); the server itself is
started as a real process on a free port and talked to over HTTP: it answers as Bundle does, names
each bad input, refuses what it cannot hold, and stops without losing an accepted request.

The HTTP tests need the serve extra (`pip install ".[serve]"`) and skip without it; the batcher's
do not."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipt_edge import Bundle, Predictions
from ipt_edge.serve_batching import Batcher, Job

from .tiny import FILLER, MULTI_BUNDLE, PAIR_BUNDLE, SENTIMENT_BUNDLE, sentiment_rows

WAIT_S = 60  # the longest any step may take before the test calls it hung (never a timing check)
LONG_TEXT = " ".join(FILLER * 10) + " good"  # well past the tiny tasks' 64-token budget


# ---- the batcher, on a stand-in bundle ----------------------------------------------------------


class StandIn:
    """Records each run's texts; the first run waits for `release` (so that others queue behind
    it); a text "bad" makes a run fail."""

    def __init__(self) -> None:
        self.runs: list[list[str]] = []
        self.running = threading.Event()
        self.release = threading.Event()

    def run(self, texts, tasks, batch_size=32) -> Predictions:
        self.runs.append(list(texts))
        self.running.set()
        assert self.release.wait(WAIT_S)
        if "bad" in texts:
            raise ValueError("text is bad")
        n = len(texts)
        return Predictions(list(tasks), [np.zeros(2)] * n, [["a", "b"]] * n, np.zeros(n, dtype=bool))


class Answers:
    """The done callbacks of a test's jobs, and what each was given."""

    def __init__(self) -> None:
        self.given: dict[str, Predictions | Exception] = {}
        self.lock = threading.Lock()
        self.all_in = threading.Condition(self.lock)

    def job(self, name: str, *texts: str) -> Job:
        def done(result: Predictions | Exception) -> None:
            with self.lock:
                self.given[name] = result
                self.all_in.notify_all()

        return Job(list(texts), ["task"] * len(texts), done)

    def wait_for(self, *names: str) -> None:
        with self.lock:
            assert self.all_in.wait_for(lambda: all(n in self.given for n in names), WAIT_S), self.given


@contextmanager
def batcher(
    max_batch: int = 32, max_wait: float = WAIT_S, max_queue: int = 100
) -> Iterator[tuple[Batcher, StandIn]]:
    """max_wait is a minute by default: a test that waited for it would hang, not pass slowly."""
    bundle = StandIn()
    made = Batcher(bundle, max_batch, 8, max_wait, max_queue)
    try:
        yield made, bundle
    finally:
        bundle.release.set()
        made.close()


def test_a_lone_request_is_run_at_once_not_after_max_wait():
    answers = Answers()
    with batcher() as (queue, bundle):
        bundle.release.set()
        assert queue.submit(answers.job("one", "a text"))
        answers.wait_for("one")  # a minute's max_wait: had it waited, this would time out
    assert bundle.runs == [["a text"]]


def test_requests_that_wait_while_the_model_runs_share_the_next_call():
    answers = Answers()
    with batcher() as (queue, bundle):
        queue.submit(answers.job("first", "t1"))
        assert bundle.running.wait(WAIT_S)  # the model is busy with the first ...
        for name in ("a", "b", "c"):
            queue.submit(answers.job(name, name))  # ... so these queue up
        bundle.release.set()
        answers.wait_for("first", "a", "b", "c")
    assert bundle.runs == [["t1"], ["a", "b", "c"]]


def test_a_call_holds_at_most_max_batch_rows_and_never_splits_a_request():
    answers = Answers()
    with batcher(max_batch=4) as (queue, bundle):
        queue.submit(answers.job("first", "t1"))
        assert bundle.running.wait(WAIT_S)
        queue.submit(answers.job("a", "a1", "a2"))
        queue.submit(answers.job("b", "b1", "b2"))
        queue.submit(answers.job("c", "c1", "c2", "c3"))
        queue.submit(answers.job("big", *[f"x{i}" for i in range(6)]))  # more than max_batch: alone
        bundle.release.set()
        answers.wait_for("first", "a", "b", "c", "big")
    assert [len(run) for run in bundle.runs] == [1, 4, 3, 6]
    sizes = [len(answers.given[name].tasks) for name in ("first", "a", "b", "c", "big")]  # each its own rows
    assert sizes == [1, 2, 2, 3, 6]


def test_a_batch_with_room_waits_for_a_request_that_is_arriving():
    answers = Answers()
    with batcher() as (queue, bundle):
        bundle.release.set()
        with queue.arriving() as submit:  # a request being read: the batch waits for it (up to max_wait)
            queue.submit(answers.job("queued", "q"))
            submit(answers.job("arrived", "r"))
        answers.wait_for("queued", "arrived")
    assert bundle.runs == [["q", "r"]]


def test_a_request_does_not_wait_for_its_own_arrival():
    answers = Answers()
    with batcher() as (queue, bundle):
        bundle.release.set()
        with queue.arriving() as submit:
            submit(answers.job("one", "a text"))
            answers.wait_for("one")  # answered while its handler is still in `arriving`
    assert bundle.runs == [["a text"]]


def test_an_arrival_that_is_never_queued_stops_holding_the_batch():
    answers = Answers()
    with batcher() as (queue, bundle):
        bundle.release.set()
        with queue.arriving():  # a request that turns out to be bad input: never queued
            queue.submit(answers.job("queued", "q"))
        answers.wait_for("queued")  # had its arrival stayed counted, this would wait out max_wait
    assert bundle.runs == [["q"]]


def test_a_full_queue_refuses_a_request_and_an_empty_one_takes_any():
    answers = Answers()
    with batcher(max_queue=2) as (queue, bundle):
        queue.submit(answers.job("first", "t1"))
        assert bundle.running.wait(WAIT_S)
        assert queue.submit(answers.job("two", "a", "b"))
        assert not queue.submit(answers.job("refused", "c"))  # 2 rows wait: full
        bundle.release.set()
        answers.wait_for("first", "two")
        assert queue.submit(answers.job("five", *"abcde"))  # more than max_queue, into an empty queue
        answers.wait_for("five")
    assert "refused" not in answers.given


def test_a_failed_call_is_retried_request_by_request_so_only_the_bad_one_fails():
    answers = Answers()
    with batcher() as (queue, bundle):
        queue.submit(answers.job("first", "t1"))
        assert bundle.running.wait(WAIT_S)
        for name in ("before", "bad", "after"):
            queue.submit(answers.job(name, name))
        bundle.release.set()
        answers.wait_for("first", "before", "bad", "after")
    assert isinstance(answers.given["bad"], ValueError)
    assert isinstance(answers.given["before"], Predictions) and isinstance(
        answers.given["after"], Predictions
    )


def test_two_workers_run_two_calls_at_once_and_close_waits_for_both():
    answers = Answers()
    bundle = StandIn()
    queue = Batcher(bundle, 32, 8, WAIT_S, 100, workers=2)
    queue.submit(answers.job("first", "t1"))
    assert bundle.running.wait(WAIT_S)  # the first worker is held inside its call ...
    queue.submit(answers.job("second", "t2"))
    deadline = time.monotonic() + WAIT_S
    while len(bundle.runs) < 2:  # ... and the second takes the next request meanwhile
        assert time.monotonic() < deadline, bundle.runs
        time.sleep(0.001)
    assert bundle.runs == [["t1"], ["t2"]] and not answers.given
    closing = threading.Thread(target=queue.close)
    closing.start()
    bundle.release.set()
    closing.join(WAIT_S)
    assert not closing.is_alive() and set(answers.given) == {"first", "second"}


def test_close_answers_every_queued_request_first():
    answers = Answers()
    bundle = StandIn()
    queue = Batcher(bundle, 32, 8, WAIT_S, 100)
    queue.submit(answers.job("first", "t1"))
    assert bundle.running.wait(WAIT_S)
    queue.submit(answers.job("queued", "q"))
    closing = threading.Thread(target=queue.close)
    closing.start()
    bundle.release.set()
    closing.join(WAIT_S)
    assert not closing.is_alive() and set(answers.given) == {"first", "queued"}
    assert not queue.submit(answers.job("late", "l"))  # closed: nothing more is taken


# ---- a real server process --------------------------------------------------------------------


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    log: Path

    def call(self, path: str, body: Any = None, headers: dict | None = None) -> tuple[int, Any, Any]:
        """(status, headers, JSON body or text) of one request; a dict or list body is sent as JSON."""
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=WAIT_S) as response:
                status, answer_headers, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, answer_headers, raw = error.code, error.headers, error.read()
        is_json = answer_headers.get("content-type", "").startswith("application/json")
        return status, answer_headers, json.loads(raw) if is_json else raw.decode()

    def predict(self, body: Any, headers: dict | None = None) -> tuple[int, Any]:
        status, _, answer = self.call("/v1/predict", body, headers)
        return status, answer

    def connection(self) -> http.client.HTTPConnection:
        host, port = self.url.removeprefix("http://").split(":")
        return http.client.HTTPConnection(host, int(port), timeout=WAIT_S)

    def metric(self, name: str) -> float:
        _, _, text = self.call("/metrics")
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert found, f"no {name} in /metrics"
        return float(found.group(1))


def serve_command(bundle: Path, *options: str) -> list[str]:
    # --threads 1: the tests share the machine's cores with each other's servers
    return [sys.executable, "-m", "ipt_edge", "serve", "-b", str(bundle), "--threads", "1", *options]


@contextmanager
def serving(bundle: Path, folder: Path, *options: str, env: dict | None = None) -> Iterator[Served]:
    """`ipt-edge serve` on a free port (--port 0; its log line names it), ready (GET /readyz)."""
    for module in ("starlette", "uvicorn", "prometheus_client"):
        pytest.importorskip(module, reason="needs the serve extra: pip install '.[serve]'")
    log = folder / "server.log"
    with log.open("wb") as stderr:  # a file, not a pipe: a pipe nobody reads would block the log
        process = subprocess.Popen(
            [*serve_command(bundle, "--port", "0"), *options],
            cwd=folder,  # not the checkout: the installed package is the one tested
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + WAIT_S
        while not (found := re.search(r" on (http://\S+) \(", log.read_text())):
            assert process.poll() is None, f"the server exited {process.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        served = Served(found.group(1), process, log)
        while True:
            try:
                if served.call("/readyz")[0] == 200:
                    break
            except OSError:  # listening, but not yet answering
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(WAIT_S)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Served]:
    """The sentiment bundle, with small limits so that the 413 tests send little."""
    with serving(
        SENTIMENT_BUNDLE, tmp_path_factory.mktemp("serve"), "--max-texts", "8", "--max-body", "4096"
    ) as s:
        yield s


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """The multi-task bundle (8 single-text tasks) plus the pair task "entail": the committed
    bundles share their tokenizer, embedding and backbone, so the tasks combine as they are."""
    path = tmp_path_factory.mktemp("bundles") / "mixed"
    shutil.copytree(MULTI_BUNDLE, path)
    shutil.copytree(PAIR_BUNDLE / "tasks" / "entail", path / "tasks" / "entail")
    manifest = json.loads((path / "manifest.json").read_text())
    pair = json.loads((PAIR_BUNDLE / "manifest.json").read_text())
    assert all(
        pair["files"][f] == manifest["files"][f] for f in ("tokenizer.json", "embed.onnx", "encoder.onnx")
    )
    manifest["tasks"]["entail"] = pair["tasks"]["entail"]
    manifest["files"].update({f: entry for f, entry in pair["files"].items() if f.startswith("tasks/")})
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def mixed_server(mixed, tmp_path_factory) -> Iterator[Served]:
    with serving(mixed, tmp_path_factory.mktemp("serve-mixed")) as s:
        yield s


def expected_record(bundle: Path, text, tasks: list[str]) -> dict:
    """What `predict --json` prints for one text asked of these tasks, run alone in-process."""
    return Bundle.load(bundle).predict_tasks([text], tasks).record(0)


def assert_same_record(answer: dict, expected: dict) -> None:
    """Equal labels and texts; probabilities equal to 1e-5 (a row's batch mates change its
    padding, which moves the last float bits, and so maybe the 6th rounded decimal)."""
    assert {k: v for k, v in answer.items() if k not in ("tasks", "truncated")} == {
        k: v for k, v in expected.items() if k != "tasks"
    }
    assert list(answer["tasks"]) == list(expected["tasks"])
    for name, task in expected["tasks"].items():
        assert answer["tasks"][name]["label"] == task["label"]
        assert list(answer["tasks"][name]["probabilities"]) == list(task["probabilities"])
        np.testing.assert_allclose(
            list(answer["tasks"][name]["probabilities"].values()),
            list(task["probabilities"].values()),
            atol=1e-5,
        )


# ---- answers --------------------------------------------------------------------------------------


def test_answers_are_predict_json_records_equal_to_the_bundles_own(server):
    texts = [text for text, _ in sentiment_rows(8, seed=3)]
    status, answer = server.predict({"texts": texts})
    assert status == 200
    assert [record["text"] for record in answer["results"]] == texts
    expected = Bundle.load(SENTIMENT_BUNDLE).predict_tasks(texts, "sentiment")
    for index, record in enumerate(answer["results"]):
        assert_same_record(record, expected.record(index))
        assert record["truncated"] is False


@pytest.mark.filterwarnings("ignore:.*were truncated")  # the in-process answer's own note
def test_a_long_text_is_truncated_as_the_cli_does_and_the_answer_says_so(server):
    status, answer = server.predict({"texts": ["the film was good", LONG_TEXT], "tasks": "sentiment"})
    assert status == 200
    assert [record["truncated"] for record in answer["results"]] == [False, True]
    assert_same_record(answer["results"][1], expected_record(SENTIMENT_BUNDLE, LONG_TEXT, ["sentiment"]))


def test_one_request_mixes_tasks_and_pair_tasks_each_text_with_its_own(mixed_server, mixed):
    texts = ["the film was good", ["the film was good", "it is good"], "a dull plot", "so boring"]
    tasks = ["prefix2", "entail", ["cnn5", "rating3", "cnn5"], "late4"]  # a repeated name counts once
    status, answer = mixed_server.predict({"texts": texts, "tasks": tasks})
    assert status == 200
    wanted = [["prefix2"], ["entail"], ["cnn5", "rating3"], ["late4"]]
    for record, text, names in zip(answer["results"], texts, wanted, strict=True):
        assert_same_record(
            record, expected_record(mixed, tuple(text) if isinstance(text, list) else text, names)
        )
    assert answer["results"][1]["text_pair"] == "it is good"


def test_without_tasks_each_text_is_answered_by_every_task_of_its_kind(mixed_server):
    status, answer = mixed_server.predict(
        {"texts": ["the film was good", ["the film was good", "it is bad"]]}
    )
    assert status == 200
    single, pair = answer["results"]
    assert sorted(single["tasks"]) == [
        "attn4",
        "cnn5",
        "late4",
        "lookup4",
        "lstm3",
        "mlp4",
        "prefix2",
        "rating3",
    ]
    assert list(pair["tasks"]) == ["entail"]
    assert list(single["tasks"]["rating3"]["probabilities"]) == ["low", "mid", "high"]


def test_tasks_lists_each_tasks_labels_and_input(mixed_server):
    status, _, answer = mixed_server.call("/v1/tasks")
    assert status == 200
    tasks = {task["name"]: task for task in answer["tasks"]}
    assert tasks["entail"] == {
        "name": "entail",
        "labels": ["differ", "same"],
        "input": "text_pair",
        "max_tokens": 64,
    }
    assert tasks["rating3"]["labels"] == ["low", "mid", "high"] and tasks["rating3"]["input"] == "text"


def test_the_openapi_document_names_every_route_and_the_bundles_tasks(server):
    status, _, document = server.call("/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/v1/predict",
        "/v1/tasks",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
    request = document["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request["properties"]["tasks"]["oneOf"][0]["enum"] == ["sentiment"]


def test_metrics_count_requests_by_status_batches_and_the_queue(server):
    server.predict({"texts": ["the film was good"]})
    server.predict({"texts": [""]})
    _, headers, text = server.call("/metrics")
    assert headers["content-type"].startswith("text/plain")
    assert re.search(r'^ipt_edge_requests_total\{path="/v1/predict",status="200"\} [1-9]', text, re.MULTILINE)
    assert re.search(r'^ipt_edge_requests_total\{path="/v1/predict",status="400"\} [1-9]', text, re.MULTILINE)
    for name in ("ipt_edge_batch_rows_count", "ipt_edge_queue_rows", "process_resident_memory_bytes"):
        assert re.search(rf"^{name} ", text, re.MULTILINE), name
    assert re.search(r'^ipt_edge_request_seconds_bucket\{le="\+Inf",path="/v1/predict"\}', text, re.MULTILINE)


def test_the_log_has_one_line_per_request_and_never_its_texts(server):
    secret = "a lovely secret plot"
    server.predict({"texts": [secret, "the cast was fine"]})
    lines = server.log.read_text().splitlines()
    assert any(
        re.search(r"INFO 127\.0\.0\.1 POST /v1/predict 200 [\d.]+ ms 2 texts$", line) for line in lines
    )
    assert not any(secret in line for line in lines)


def test_a_request_asking_to_upgrade_to_http2_is_answered_as_http11(server):
    """Java's HttpClient asks so on each new connection; the server answers over HTTP/1.1."""
    upgrade = {
        "Connection": "Upgrade, HTTP2-Settings",
        "Upgrade": "h2c",
        "HTTP2-Settings": "AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA",
        "Content-Type": "application/json",
    }
    connection = server.connection()  # http.client: urllib would send its own Connection header
    connection.request(
        "POST", "/v1/predict", body=json.dumps({"texts": ["the film was good"]}), headers=upgrade
    )
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["results"][0]["text"] == "the film was good"
    connection.close()
    assert "WebSocket" not in server.log.read_text()  # nor advice to install what it does not need


def test_an_unknown_path_is_a_json_404(server):
    status, _, answer = server.call("/v1/predcit", {"texts": ["a"]})
    assert status == 404 and "Not Found" in answer["error"]


# ---- bad input and limits -----------------------------------------------------------------------


BAD = [
    (b"{not json", "body", None, "not JSON"),
    (b'["a text"]', "body", None, "not a JSON object"),
    ({}, "texts", None, 'missing field "texts"'),
    ({"text": ["a"]}, "text", None, "unknown field 'text'"),
    ({"texts": "a text"}, "texts", None, "not a non-empty list"),
    ({"texts": []}, "texts", None, "not a non-empty list"),
    ({"texts": ["fine", ""]}, "texts", 1, "texts[1] is empty"),
    ({"texts": ["fine", "fine", "   "]}, "texts", 2, "texts[2] is empty"),
    ({"texts": ["fine", 7]}, "texts", 1, "texts[1] is empty or not text"),
    (b'{"texts": ["fine", "\\ud800"]}', "texts", 1, "lone surrogate"),
    ({"texts": [["a pair", "for a single-text bundle"]]}, "texts", 0, "no a pair task"),
    ({"texts": ["fine"], "tasks": "topic"}, "tasks", 0, "no task 'topic'"),
    ({"texts": ["a", "b"], "tasks": ["sentiment"]}, "tasks", None, "does not fit 2 text(s)"),
    ({"texts": ["a"], "tasks": [7]}, "tasks", 0, "not a task name"),
]


@pytest.mark.parametrize(("body", "field", "index", "says"), BAD)
def test_bad_input_is_a_400_naming_the_field_the_index_and_what_was_expected(
    server, body, field, index, says
):
    status, answer = server.predict(body)
    assert status == 400
    assert says in answer["error"] and answer["field"] == field and answer.get("index") == index
    assert answer.get("expected") or field == "text"


def test_a_pair_task_asked_of_a_single_text_names_it(mixed_server):
    status, answer = mixed_server.predict({"texts": ["fine", "only one"], "tasks": ["mlp4", "entail"]})
    assert (status, answer["field"], answer["index"]) == (400, "texts", 1)
    assert "task 'entail' takes [text, text_pair] pairs" in answer["error"]


def test_too_many_texts_is_a_413(server):
    status, answer = server.predict({"texts": ["fine"] * 9})  # --max-texts 8
    assert (status, answer["field"]) == (413, "texts") and "more than 8" in answer["error"]


def test_too_large_a_body_is_a_413_with_or_without_a_content_length(server):
    status, answer = server.predict({"texts": ["x" * 5000]})  # --max-body 4096
    assert (status, answer["field"]) == (413, "body")
    connection = server.connection()
    chunks = (b'{"texts": ["' if i == 0 else b"x" * 1000 for i in range(6))  # chunked: no length given
    connection.request("POST", "/v1/predict", body=chunks, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["field"] == "body"
    connection.close()


def test_a_full_queue_answers_503_with_retry_after_and_the_rest_are_answered(tmp_path):
    texts = [text for text, _ in sentiment_rows(48, seed=4)]
    with serving(SENTIMENT_BUNDLE, tmp_path, "--max-queue", "1", "--max-batch", "1") as server:
        with ThreadPoolExecutor(48) as pool:  # 48 requests at once, one row of room
            calls = list(pool.map(lambda text: server.call("/v1/predict", {"texts": [text]}), texts))
        refused = [(headers, answer) for status, headers, answer in calls if status == 503]
        assert refused, "no request was refused"
        assert all(
            headers["retry-after"] == "1" and "queue is full" in answer["error"]
            for headers, answer in refused
        )
        assert {status for status, _, _ in calls} <= {200, 503}
        expected = Bundle.load(SENTIMENT_BUNDLE).predict(texts, "sentiment")
        for (status, _, answer), label in zip(calls, expected, strict=True):
            if status == 200:
                assert answer["results"][0]["tasks"]["sentiment"]["label"] == label
        assert server.metric('ipt_edge_requests_total{path="/v1/predict",status="503"}') == len(refused)
        assert server.predict({"texts": ["still answering"]})[0] == 200


# ---- lifecycle and access ---------------------------------------------------------------------


def test_sigterm_answers_every_accepted_request_then_exits_0(tmp_path):
    texts = [LONG_TEXT] * 256  # 256 model calls each (--max-batch 1): the requests are still running
    options = ("--max-batch", "1", "--max-texts", "256", "--max-queue", "4096")  # room for all 8
    with serving(SENTIMENT_BUNDLE, tmp_path, *options) as server:
        with ThreadPoolExecutor(8) as pool:
            calls = [pool.submit(server.predict, {"texts": texts}) for _ in range(8)]
            deadline = time.monotonic() + WAIT_S
            while server.metric("ipt_edge_predict_in_flight") < 8:  # all 8 accepted, none answered
                assert time.monotonic() < deadline and not any(call.done() for call in calls)
                time.sleep(0.01)
            server.process.send_signal(signal.SIGTERM)
            answers = [call.result(WAIT_S) for call in calls]
        assert server.process.wait(WAIT_S) == 0
    assert all(status == 200 and len(answer["results"]) == 256 for status, answer in answers)
    assert "Shutting down" in server.log.read_text()


def test_an_api_key_is_needed_on_every_path_but_the_probes(tmp_path):
    key = "a-long-random-key"
    with serving(SENTIMENT_BUNDLE, tmp_path, env={"IPT_EDGE_API_KEY": key}) as server:
        body = {"texts": ["the film was good"]}
        assert server.predict(body)[0] == 401
        status, headers, answer = server.call("/v1/predict", body, {"Authorization": "Bearer wrong-key"})
        assert (status, headers["www-authenticate"], answer["field"]) == (401, "Bearer", "authorization")
        assert server.call("/metrics")[0] == 401
        assert server.predict(body, {"Authorization": f"Bearer {key}"})[0] == 200
        assert server.call("/healthz")[0] == 200 and server.call("/readyz")[0] == 200


def run_serve(folder: Path, *options: str) -> subprocess.CompletedProcess:
    pytest.importorskip("uvicorn", reason="needs the serve extra: pip install '.[serve]'")
    command = serve_command(SENTIMENT_BUNDLE, *options)
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=WAIT_S)


def test_listening_beyond_loopback_without_an_api_key_is_refused(tmp_path):
    result = run_serve(tmp_path, "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "--host 0.0.0.0 lets other machines connect: give --api-key" in result.stderr


def test_a_port_already_taken_is_a_clear_error_and_exit_2(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_serve(tmp_path, "--port", str(port))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


def test_without_the_serve_extra_it_says_what_to_install(tmp_path):
    pytest.importorskip("uvicorn", reason="hides the installed extra's uvicorn")
    hide = "import sys; sys.modules['uvicorn'] = None; from ipt_edge.cli import main; main()"
    command = [sys.executable, "-c", hide, "serve", "-b", str(SENTIMENT_BUNDLE)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode == 2
    assert "serve needs the serve extra (uvicorn is missing): pip install 'ipt-edge[serve]'" in result.stderr

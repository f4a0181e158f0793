"""`ipt-edge predict`: classify texts given as arguments or on stdin, with one task or several.

Inputs are read, answered and printed a chunk at a time, in input order, so answers stream and
memory does not grow with stdin. An input is checked once, as it is read: a bad one (not UTF-8,
blank, a pair task's line without a tab) is named on stderr and left out, the others are still
answered, and the command exits 2 at the end.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from ipt_edge.cli.app import (
    AllTasksOption,
    BatchSizeOption,
    BundleOption,
    PrecisionOption,
    ProviderOption,
    TasksOption,
    ThreadsOption,
    app,
    fail,
    open_bundle,
    report_error,
    say,
)
from ipt_edge.tables import is_utf8
from ipt_edge.tokenizer import Text

if TYPE_CHECKING:
    from ipt_edge.bundle import Bundle
    from ipt_edge.task import Task

# Inputs read, answered and printed at a time: enough rows to sort into well-filled batches, few
# enough that the first answers come soon and memory stays small.
STDIN_CHUNK = 256

T = TypeVar("T")


@dataclass
class _Input:
    place: str  # how messages name it: "stdin line 7", "text 2"
    line: str  # as given (a pair as TEXT<tab>TEXT_PAIR): what a plain answer ends with
    text: Text  # what its tasks read: the line, or (text, text_pair)
    tasks: list[Task]  # the tasks that answer it


class _BadInput(Exception):
    """An input that cannot be answered; the message names it."""


@app.command()
def predict(
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts to classify; none: one per line on stdin.")
    ] = None,
    bundle: BundleOption = Path("bundle"),
    task: TasksOption = None,
    all_tasks: AllTasksOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per text, with all probabilities.")
    ] = False,
    provider: ProviderOption = "cpu",
    threads: ThreadsOption = None,
    precision: PrecisionOption = "fp32",
    batch_size: BatchSizeOption = 32,
) -> None:
    """Classify texts: prints label, probability and text, one line each (pair tasks: TEXT<tab>PAIR).

    With several tasks (--task A --task B, --all-tasks, or no --task on a bundle of several), every
    text is answered by each of them in one pass, `A:label p<TAB>B:label p<TAB>text`. With --json,
    one object per text: {"text": ..., "tasks": {"A": {"label": ..., "probabilities": {...}}}}
    (a pair: "text" and "text_pair").

    With no --task (or --all-tasks) on a bundle of pair and single-text tasks, a line with a tab is
    answered by the pair tasks, one without by the single-text tasks.

    Answers are printed as each chunk of stdin is done, in input order. A bad input (not UTF-8,
    empty, a pair without its tab) is named on stderr and skipped; the rest are answered, then the
    command exits 2.
    """
    loaded, tasks = open_bundle(bundle, task, all_tasks, provider, threads, precision)
    pair = [t for t in tasks if t.text_pair]
    single = [t for t in tasks if not t.text_pair]
    if task and pair and single:
        fail(
            f"task {pair[0].name!r} takes text pairs and {single[0].name!r} single texts, and a line "
            "is one or the other: ask for them in separate runs, or leave out --task to answer each "
            "line with the tasks that fit it (a line with a tab: the pair tasks)"
        )
    given = bad = truncated = 0
    for chunk in _chunks(_given(texts), max(STDIN_CHUNK, batch_size)):  # at least one full batch
        inputs = []
        for place, raw in chunk:
            given += 1
            try:
                inputs.append(_checked(place, raw, pair, single))
            except _BadInput as error:
                bad += 1
                report_error(str(error))
        truncated += _answer(loaded, inputs, batch_size, as_json, named=len(tasks) > 1)
        sys.stdout.flush()  # this chunk's answers now, not when a pipe's buffer fills
    if not given:
        fail("no texts: pass them as arguments or one per line on stdin")
    if truncated:
        say(f"note: {truncated} text(s) were longer than a task's token budget and were truncated")
    if bad:
        fail(f"{bad} of {given} inputs were not answered (each is named above)")


def _given(texts: list[str] | None) -> Iterator[tuple[str, str | bytes]]:
    """Each input with the name messages give it: the arguments, else stdin's lines as read."""
    if texts:
        yield from ((f"text {number}", text) for number, text in enumerate(texts, 1))
    else:
        yield from ((f"stdin line {number}", raw) for number, raw in enumerate(sys.stdin.buffer, 1))


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _checked(place: str, raw: str | bytes, pair: list[Task], single: list[Task]) -> _Input:
    """One input, checked once: valid UTF-8, not blank, and split at its tab when pair tasks read
    it. A line with a tab goes to the pair tasks, one without to the single-text tasks; where only
    one kind was asked for, every line goes to that kind."""
    # Invalid bytes become lone surrogates, as in an argument of invalid UTF-8: one check for both.
    line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n") if isinstance(raw, bytes) else raw
    if not is_utf8(line):
        raise _BadInput(f"{place} is not valid UTF-8")
    if not line.strip():
        raise _BadInput(f"{place} is empty")
    if not pair or (single and "\t" not in line):
        return _Input(place, line, line, single)
    first, tab, second = line.partition("\t")
    if not tab or not first.strip() or not second.strip():
        raise _BadInput(f"{place}: task {pair[0].name!r} takes pairs, written TEXT<tab>TEXT_PAIR")
    return _Input(place, line, (first, second), pair)


def _answer(bundle: Bundle, inputs: list[_Input], batch_size: int, as_json: bool, named: bool) -> int:
    """Answer a chunk's inputs (each by its tasks) and print them in input order; returns how many
    of them were truncated."""
    rows_of: dict[tuple[str, ...], list[int]] = {}  # the inputs each set of tasks answers
    for index, item in enumerate(inputs):
        rows_of.setdefault(tuple(t.name for t in item.tasks), []).append(index)
    answered: list = [None] * len(inputs)
    truncated = 0
    for names, rows in rows_of.items():
        answers = bundle.predict_tasks([inputs[i].text for i in rows], names, batch_size)
        truncated += int(answers.truncated.sum())
        for k, index in enumerate(rows):
            answered[index] = (answers, k)
    for item, (answers, k) in zip(inputs, answered, strict=True):
        if as_json:
            typer.echo(json.dumps(answers.record(k), ensure_ascii=False, allow_nan=False))
        elif named:
            best = answers.best(k).items()
            typer.echo("\t".join(f"{name}:{label} {p:.4f}" for name, (label, p) in best) + f"\t{item.line}")
        else:
            ((label, p),) = answers.best(k).values()
            typer.echo(f"{label}\t{p:.4f}\t{item.line}")
    return truncated

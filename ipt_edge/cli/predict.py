"""`ipt-edge predict`: classify texts given as arguments or on stdin, with one task or several.

Inputs are read, answered and printed a chunk at a time, in input order, so answers stream and
memory does not grow with stdin. A bad input costs only itself: a line that is not UTF-8, or a
pair task's line without a tab, is named as it is read, and a text the bundle refuses (blank;
Bundle.run checks every text once) is named from the bundle's TextError; either is reported on
stderr in its place among the answers, the others are answered, and the command exits 2 at the end.
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
from ipt_edge.tokenizer import Refused, Text, TextError

if TYPE_CHECKING:
    from ipt_edge.bundle import Bundle, TaskProbabilities
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


# What becomes of an input: its answers (a call's TaskProbabilities and its row there), or the
# message that names it and says why it was not answered.
_Outcome = tuple["TaskProbabilities", int] | str


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
        inputs = [_read(place, raw, pair, single) for place, raw in chunk]
        outcomes, chunk_truncated = _answer(loaded, inputs, batch_size)
        for item, outcome in zip(inputs, outcomes, strict=True):
            if isinstance(outcome, str):
                bad += 1
                report_error(outcome)
            else:
                assert isinstance(item, _Input)
                typer.echo(_shown(item, *outcome, as_json, named=len(tasks) > 1))
        given += len(chunk)
        truncated += chunk_truncated
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


def _read(place: str, raw: str | bytes, pair: list[Task], single: list[Task]) -> _Input | str:
    """One input as its tasks read it, or the message naming why it cannot be: a line that is not
    UTF-8, or a pair task's line without its tab. A line with a tab goes to the pair tasks, one
    without to the single-text tasks; where only one kind was asked for, every line goes to it.
    What the text holds is checked by the bundle (Bundle.run), not here."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return f"{place} is not valid UTF-8"
    line = raw.rstrip("\r\n")
    if not pair or (single and "\t" not in line):
        return _Input(place, line, line, single)
    first, tab, second = line.partition("\t")
    if not tab:
        return f"{place}: task {pair[0].name!r} takes pairs, written TEXT<tab>TEXT_PAIR"
    return _Input(place, line, (first, second), pair)


def _answer(bundle: Bundle, inputs: list[_Input | str], batch_size: int) -> tuple[list[_Outcome], int]:
    """Each input's outcome, in input order, and how many of those answered were truncated. The
    inputs one set of tasks answers share one call; should the bundle refuse some of their texts,
    those are named and the others asked again (so only a chunk with a bad text pays that)."""
    outcomes: list[_Outcome] = [item if isinstance(item, str) else "" for item in inputs]
    rows_of: dict[tuple[str, ...], list[tuple[int, _Input]]] = {}  # the inputs each set of tasks answers
    for index, item in enumerate(inputs):
        if isinstance(item, _Input):
            rows_of.setdefault(tuple(t.name for t in item.tasks), []).append((index, item))
    truncated = 0
    for names, rows in rows_of.items():
        try:
            answers = bundle.predict_tasks([item.text for _, item in rows], names, batch_size)
        except TextError as error:
            for refused in error.refused:
                index, item = rows[refused.index]
                outcomes[index] = _refusal(item, refused)
            gone = {refused.index for refused in error.refused}
            rows = [row for k, row in enumerate(rows) if k not in gone]
            answers = bundle.predict_tasks([item.text for _, item in rows], names, batch_size)
        truncated += int(answers.truncated.sum())
        for k, (index, _) in enumerate(rows):
            outcomes[index] = (answers, k)
    return outcomes, truncated


def _refusal(item: _Input, refused: Refused) -> str:
    """A refused text named as predict names its inputs: "stdin line 7 is empty"; a pair's part
    as the help writes it, "stdin line 7: TEXT_PAIR is empty"."""
    if isinstance(item.text, tuple):
        return f"{item.place}: {('TEXT', 'TEXT_PAIR')[refused.part]} {refused.problem}"
    return f"{item.place} {refused.problem}"


def _shown(item: _Input, answers: TaskProbabilities, k: int, as_json: bool, named: bool) -> str:
    """An answer's line: the JSON record, or the best label(s) and probability, then the input."""
    if as_json:
        return json.dumps(answers.record(k), ensure_ascii=False, allow_nan=False)
    if named:
        best = answers.best(k).items()
        return "\t".join(f"{name}:{label} {p:.4f}" for name, (label, p) in best) + f"\t{item.line}"
    ((label, p),) = answers.best(k).values()
    return f"{label}\t{p:.4f}\t{item.line}"

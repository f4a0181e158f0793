"""`ipt-edge predict`: classify texts given as arguments or on stdin, with one task or several."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

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
    say,
)
from ipt_edge.tables import finite_or_none, is_utf8


def _stdin_lines() -> list[str]:
    lines = []
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError:
            fail(f"stdin line {number}: not valid UTF-8")
    return lines


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
    text is answered by each of them in one pass, `A:label p<TAB>B:label p<TAB>text`, or with --json one
    object per text whose "tasks" hold each task's label and probabilities.
    """
    from_stdin = not texts
    items = _stdin_lines() if from_stdin else list(texts or [])
    if not items:
        fail("no texts: pass them as arguments or one per line on stdin")
    where = [f"stdin line {i + 1}" if from_stdin else f"text {i + 1}" for i in range(len(items))]
    for place, text in zip(where, items, strict=True):
        if not is_utf8(text):  # an argument of invalid UTF-8 arrives with lone surrogates
            fail(f"{place} is not valid UTF-8")
        if not text.strip():
            fail(f"{place} is empty")
    loaded, classifiers = open_bundle(bundle, task, all_tasks, provider, threads, precision)
    pairs = {c.task.text_pair for c in classifiers}
    if len(pairs) > 1:
        fail(
            "the tasks asked for read different inputs (text pairs and single texts); ask for them separately"
        )
    inputs: list = []
    for place, text in zip(where, items, strict=True):
        if pairs == {True}:
            first, tab, second = text.partition("\t")
            if not tab or not first.strip() or not second.strip():
                fail(f"{place}: task {classifiers[0].task_name!r} takes pairs, written TEXT<tab>TEXT_PAIR")
            inputs.append((first, second))
        else:
            inputs.append(text)
    names = [c.task_name for c in classifiers]
    try:  # every task's rows in one run: they share batches and encoder calls
        result = loaded.run(inputs * len(names), [name for name in names for _ in inputs], batch_size)
    except ValueError as error:
        fail(str(error))
    if result.truncated.any():
        say(
            f"note: {int(result.truncated.reshape(len(names), len(inputs)).any(axis=0).sum())} text(s) were "
            "longer than a task's token budget and were truncated"
        )
    probabilities = result.probabilities
    for index, text in enumerate(items):
        answers = {}
        for k, classifier in enumerate(classifiers):
            row = probabilities[k * len(items) + index]
            best = int(row.argmax())
            scores = {
                label: finite_or_none(round(float(p), 6))
                for label, p in zip(classifier.labels, row, strict=True)
            }
            answers[classifier.task_name] = (classifier.labels[best], float(row[best]), scores)
        if as_json:
            if len(classifiers) == 1:
                label, _, scores = answers[names[0]]
                record = {"text": text, "label": label, "probabilities": scores}
            else:
                tasks = {
                    name: {"label": label, "probabilities": scores}
                    for name, (label, _, scores) in answers.items()
                }
                record = {"text": text, "tasks": tasks}
            typer.echo(json.dumps(record, ensure_ascii=False, allow_nan=False))
        elif len(classifiers) == 1:
            label, p, _ = answers[names[0]]
            typer.echo(f"{label}\t{p:.4f}\t{text}")
        else:
            typer.echo(
                "\t".join(f"{name}:{label} {p:.4f}" for name, (label, p, _) in answers.items()) + f"\t{text}"
            )

"""`ipt-edge predict`: classify texts given as arguments or on stdin."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ipt_edge.cli.app import (
    BatchSizeOption,
    BundleOption,
    PrecisionOption,
    ProviderOption,
    TaskOption,
    ThreadsOption,
    app,
    fail,
    open_classifier,
    say,
)
from ipt_edge.tables import finite_or_none


def _stdin_lines() -> list[str]:
    lines = []
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError:
            fail(f"stdin line {number}: not valid UTF-8")
    return lines


def _valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # an argument of invalid UTF-8 arrives with lone surrogates
    except UnicodeEncodeError:
        return False
    return True


@app.command()
def predict(
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts to classify; none: one per line on stdin.")
    ] = None,
    bundle: BundleOption = Path("bundle"),
    task: TaskOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per text, with all probabilities.")
    ] = False,
    provider: ProviderOption = "cpu",
    threads: ThreadsOption = None,
    precision: PrecisionOption = "fp32",
    batch_size: BatchSizeOption = 32,
) -> None:
    """Classify texts: prints label, probability and text, one line each (pair tasks: TEXT<tab>PAIR)."""
    from_stdin = not texts
    items = _stdin_lines() if from_stdin else list(texts or [])
    if not items:
        fail("no texts: pass them as arguments or one per line on stdin")
    inputs: list = []
    where = [f"stdin line {i + 1}" if from_stdin else f"text {i + 1}" for i in range(len(items))]
    for place, text in zip(where, items, strict=True):
        if not _valid_utf8(text):
            fail(f"{place} is not valid UTF-8")
        if not text.strip():
            fail(f"{place} is empty")
    classifier = open_classifier(bundle, task, provider, threads, precision)
    for place, text in zip(where, items, strict=True):
        if classifier.task.text_pair:
            first, tab, second = text.partition("\t")
            if not tab or not first.strip() or not second.strip():
                fail(f"{place}: task {classifier.task_name!r} takes pairs, written TEXT<tab>TEXT_PAIR")
            inputs.append((first, second))
        else:
            inputs.append(text)
    try:
        probabilities = classifier.predict_proba(inputs, batch_size=batch_size)
    except ValueError as error:
        fail(str(error))
    if classifier.last_truncated:
        say(
            f"note: {classifier.last_truncated} text(s) were longer than {classifier.task.max_length} tokens and were truncated"
        )
    for text, row in zip(items, probabilities, strict=True):
        best = int(row.argmax())
        if as_json:
            scores = {
                label: finite_or_none(round(float(p), 6))
                for label, p in zip(classifier.labels, row, strict=True)
            }
            record = {"text": text, "label": classifier.labels[best], "probabilities": scores}
            typer.echo(json.dumps(record, ensure_ascii=False, allow_nan=False))
        else:
            typer.echo(f"{classifier.labels[best]}\t{row[best]:.4f}\t{text}")

"""Progress of a long command (train, score): rich's live bar on a terminal; anywhere else (stderr
is a log file, CI, nohup, a scheduler) a plain line every `IPT_EDGE_PROGRESS_SECONDS` (default 30),
since a bar drawn to a file shows nothing until the command ends.

    with Progress("training", total=steps, unit="steps") as progress:
        progress.update(done, rows=rows, status="loss 0.4123")
        progress.line("step 100/500: dev accuracy 0.8125")   # a line that stays, in both modes
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import IO, Any

DEFAULT_SECONDS = 30.0


def _seconds_between_lines() -> float:
    value = os.environ.get("IPT_EDGE_PROGRESS_SECONDS", "").strip()
    if not value:
        return DEFAULT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"IPT_EDGE_PROGRESS_SECONDS must be a number of seconds >= 0, got {value!r}")
    return seconds


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """`total`/`update(completed)` count `unit`s (steps, bytes); `rows=` is what the plain line
    reports as done and as the rate; `status=` is free text (the current loss, say)."""

    def __init__(
        self, label: str, total: float | None = None, unit: str = "rows", stream: IO[str] | None = None
    ):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.every = _seconds_between_lines()
        self.completed, self.rows, self.status = 0.0, 0, ""
        self._bar: Any = None

    def __enter__(self) -> Progress:
        self.started = self._last_line = time.monotonic()
        if self.live:
            from rich import progress as bar
            from rich.console import Console

            self._bar = bar.Progress(
                bar.TextColumn(self.label), bar.BarColumn(), bar.TaskProgressColumn(),
                bar.TimeRemainingColumn(), bar.TextColumn("{task.fields[rows]} rows  {task.fields[status]}"),
                console=Console(file=self.stream), transient=True,
            )  # fmt: skip
            self._bar.__enter__()
            self._job = self._bar.add_task(self.label, total=self.total, rows=0, status="")
        return self

    def update(
        self,
        completed: float,
        *,
        total: float | None = None,
        rows: int | None = None,
        status: str | None = None,
    ) -> None:
        self.completed = completed
        self.total = total if total is not None else self.total
        self.rows = rows if rows is not None else self.rows
        self.status = status if status is not None else self.status
        if self._bar is not None:
            self._bar.update(
                self._job, completed=completed, total=self.total, rows=self.rows, status=self.status
            )
        elif time.monotonic() - self._last_line >= self.every:
            self._write(self.summary())

    def line(self, text: str) -> None:
        """A line that stays in the log (a dev evaluation, say)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            self._write(text)

    def summary(self) -> str:
        """`training: 1,200 rows, 240/1,000 steps (24%), 41.0 rows/s, ETA 1m35s, loss 0.4123`."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        parts = [f"{self.rows:,} rows"]
        if self.total:
            share = self.completed / self.total
            done = (
                f"{share:.0%} of the input"
                if self.unit == "bytes"
                else f"{self.completed:,.0f}/{self.total:,.0f} {self.unit}"
            )
            parts.append(done if self.unit == "bytes" else f"{done} ({share:.0%})")
        parts.append(f"{self.rows / elapsed:,.1f} rows/s")
        if self.total and self.completed:
            parts.append(f"ETA {_duration(elapsed * (self.total - self.completed) / self.completed)}")
        if self.status:
            parts.append(self.status)
        return f"{self.label}: " + ", ".join(parts)

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last_line = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

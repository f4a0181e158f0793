"""What every command shares: the typer app, common options, errors, and the exit-code contract.

Exit codes: 0 done; 2 bad input (the message names the file, line or field); 130/143 stopped by
Ctrl-C / SIGTERM (nothing half-written remains, a previous output is untouched); 1 only for a bug.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from ipt_edge import stopping
from ipt_edge.stopping import Stopped, request_stop

if TYPE_CHECKING:
    from ipt_edge.bundle import Bundle
    from ipt_edge.task import Task

app = typer.Typer(
    help="Instance-wise prompt-tuned classifiers: train on a frozen backbone, export to ONNX, run anywhere."
    "\n\nExit codes: 0 done; 2 bad input (the message names the file, line or field); 130/143 stopped by "
    "Ctrl-C/SIGTERM. An interrupted command leaves no half-written output, and a previous output untouched.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

BundleOption = Annotated[
    Path,
    typer.Option("--bundle", "-b", envvar="IPT_EDGE_BUNDLE", help="Bundle folder (or set IPT_EDGE_BUNDLE)."),
]
TasksOption = Annotated[
    list[str] | None,
    typer.Option(
        "--task", "-t", help="A task of the bundle; repeat it for several (all in one pass over the input)."
    ),
]
AllTasksOption = Annotated[bool, typer.Option("--all-tasks", help="Every task of the bundle.")]
ProviderOption = Annotated[
    str,
    typer.Option("--provider", help="cpu or cuda. cuda fails clearly when ONNX Runtime cannot use it."),
]
PrecisionOption = Annotated[
    str, typer.Option(help="fp32, or int8 where the bundle was exported with --quantize int8.")
]
ThreadsOption = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="Intra-op threads (default: IPT_EDGE_THREADS, else one per core)."),
]
BatchSizeOption = Annotated[int, typer.Option(min=1, help="Texts per model batch.")]


def _version(value: bool) -> None:
    if value:
        from ipt_edge import __version__

        typer.echo(f"ipt-edge {__version__}")
        raise typer.Exit()


@app.callback()
def callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Instance-wise prompt-tuned classifiers (the app's help text above is what --help shows)."""
    # The commands report truncation themselves, with a count; the library's warning would say it twice.
    warnings.filterwarnings("ignore", message=r".*were truncated")


def report_error(message: str) -> None:
    """Name a problem on stderr, as `fail` does, and go on (a bad input that costs only itself)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)


def fail(message: str, code: int = 2) -> NoReturn:
    report_error(message)
    raise typer.Exit(code)


def say(message: str) -> None:
    typer.echo(message, err=True)


def require_positive(**values: float | None) -> None:
    """Fail (exit 2) on a numeric option that is not > 0, naming the option."""
    for name, value in values.items():
        if value is not None and not value > 0:  # also catches NaN
            fail(f"--{name.replace('_', '-')} must be greater than 0, got {value}")


def export_side(module: str) -> ModuleType:
    """Import a module of the PyTorch side (which imports torch); say how to install it if missing."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        fail(
            f"this command needs the PyTorch side, which is not installed ({error.name} is missing): "
            "pip install 'ipt-edge[export]'"
        )


# The help's own lines are written to 100 columns; a console this wide shows them whole.
HELP_WIDTH = 120


def _width_without_a_terminal() -> None:
    """Rich sizes help (and error panels) to the first standard stream that is a terminal, and with
    none (CI logs, a file, a script's pipe) falls back to 80 columns, which breaks the help's
    100-column lines in two. There, unless the user set a width (COLUMNS, or typer's
    TERMINAL_WIDTH), it gets HELP_WIDTH: rich and click both read COLUMNS."""
    if "COLUMNS" in os.environ or "TERMINAL_WIDTH" in os.environ:
        return
    if any(os.isatty(fd) for fd in (0, 1, 2)):  # a terminal's own width is the one to use
        return
    os.environ["COLUMNS"] = str(HELP_WIDTH)


def main() -> None:
    """The `ipt-edge` entry point: the typer app, with SIGTERM handled as Ctrl-C is."""
    _width_without_a_terminal()
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    warnings.formatwarning = _one_line  # a user sees the message, never Python's file, line and source
    try:
        app()
    except Stopped as stopped:
        _exit_stopped(stopped.signum)
    except SystemExit:  # how the app always ends; a stop whose Stopped was lost still counts
        if stopping.stop_signal is not None:
            _exit_stopped(stopping.stop_signal)
        raise


def _one_line(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    return f"warning: {message}\n"


def _exit_stopped(signum: int) -> NoReturn:
    name = signal.Signals(signum).name
    typer.secho(f"stopped by {name}: nothing half-written was left behind", err=True, fg=typer.colors.RED)
    sys.exit(128 + signum)


def open_bundle(
    bundle: Path,
    tasks: list[str] | None,
    all_tasks: bool,
    provider: str,
    threads: int | None,
    precision: str,
    spin: bool = True,
) -> tuple[Bundle, list[Task]]:
    """Bundle.load and the tasks asked for (--task ..., --all-tasks; neither: every task), each
    opened and checked now; every bundle or provider problem is a clear exit 2."""
    from ipt_edge.bundle import Bundle
    from ipt_edge.errors import BundleError
    from ipt_edge.sessions import ProviderError

    if tasks and all_tasks:
        fail("give --task or --all-tasks, not both")
    try:
        loaded = Bundle.load(bundle, providers=provider, threads=threads, precision=precision, spin=spin)
        names = list(dict.fromkeys(tasks)) if tasks else loaded.tasks
        if not names:
            fail(f"{bundle}: the bundle has no tasks")
        return loaded, [loaded.task(name) for name in names]
    except (BundleError, ProviderError, ValueError) as error:
        fail(str(error))

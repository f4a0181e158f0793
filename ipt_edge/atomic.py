"""Write-then-rename helpers: an output is either the old good one or the new complete one.

A stop (SIGTERM, Ctrl-C) is honoured here too: the rename that publishes an output is refused once
one was asked, so a stopped command never leaves a new output behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import NoReturn


class Stopped(BaseException):
    """SIGTERM or Ctrl-C. A BaseException, so every `except Exception` lets it through to the
    clean-up code (temporary files removed, previous outputs untouched) on its way out."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# The signal a stop was asked with (the CLI's handler, ipt_edge/cli/app.py). Raising Stopped from
# the handler is not enough on its own: a signal that lands while Python runs a finalizer (a
# __del__, a weakref callback) has its exception printed and dropped, and the command would go on
# to finish and exit 0. commit() checks this flag, so such a command still publishes nothing.
stop_signal: int | None = None


def request_stop(signum: int, frame: object = None) -> NoReturn:
    """A signal handler: remember the stop, then raise Stopped where the program is."""
    global stop_signal
    stop_signal = signum
    raise Stopped(signum)


def commit(source: Path | str, target: Path | str) -> None:
    """os.replace(source, target), the rename that publishes an output; Stopped instead once a
    stop was asked."""
    if stop_signal is not None:
        raise Stopped(stop_signal)
    os.replace(source, target)


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_dir_beside(target: Path) -> Path:
    """A hidden, empty folder next to `target` (same filesystem, so a rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    path.chmod(0o777 & ~umask())  # mkdtemp makes 0700; a bundle is meant to be shared
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, after the bytes are on disk."""
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o666 & ~umask())
        commit(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def share_files(folder: Path) -> None:
    """Give every file under `folder` the mode a plain write would have (some writers use 0600)."""
    mode = 0o666 & ~umask()
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(mode)
        elif path.is_dir():
            path.chmod(0o777 & ~umask())

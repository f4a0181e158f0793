"""Write-then-rename helpers: an output is either the old good one or the new complete one.

A stop (SIGTERM, Ctrl-C) is honoured here too: the rename that publishes an output is refused once
one was asked, so a stopped command never leaves a new output behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ipt_edge import stopping
from ipt_edge.stopping import Stopped


def commit(source: Path | str, target: Path | str) -> None:
    """os.replace(source, target), the rename that publishes an output; Stopped instead once a
    stop was asked."""
    if stopping.stop_signal is not None:
        raise Stopped(stopping.stop_signal)
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

"""Stopping a command cleanly: SIGTERM or Ctrl-C raise `Stopped`, and the flag they leave makes
atomic.commit() refuse to publish an output, so a stopped command never leaves a new one behind."""

from __future__ import annotations

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

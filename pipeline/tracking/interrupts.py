"""Ctrl-C and SIGTERM as KeyboardInterrupt, held back while a record is being written.

An interruption that cuts a write to the SQLite store half-way leaves the database locked by
the broken transaction, and closing the run afterwards waits for that lock (up to the busy
timeout). Inside :func:`held` the signal is noted and raised when the block ends instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

RESEND_S = 0.05  # after the finaliser has returned
_depth = 0
_pending: int | None = None
_default_unraisable = sys.unraisablehook


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, as Ctrl-C is."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum

    def __reduce__(self):  # it travels back from a parallel launcher's worker
        return type(self), (self.signum,)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _depth:
        _pending = signum
        return
    raise Interrupted(signum)


def _unraisable(unraisable) -> None:
    """An interruption raised inside a finaliser or a garbage collector's callback (JAX's, which
    TensorFlow imports where JAX is installed) is ignored by Python: the signal is sent again, to
    be raised where the program goes on."""
    exc = unraisable.exc_value
    if isinstance(exc, Interrupted):  # sent from another thread: raised here, it would be lost
        again = threading.Timer(RESEND_S, os.kill, (os.getpid(), exc.signum))
        again.daemon = True
        again.start()
        return
    _default_unraisable(unraisable)


def install() -> None:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt, held back inside :func:`held`."""
    global _default_unraisable
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    if sys.unraisablehook is not _unraisable:
        _default_unraisable = sys.unraisablehook
        sys.unraisablehook = _unraisable


@contextmanager
def held() -> Iterator[None]:
    """A block (or, as `@held()`, a function) that an interruption does not cut in half: it
    is raised when the block ends."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are handled on the main thread only
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signum)

"""Ctrl-C and SIGTERM as KeyboardInterrupt, held back while a record is being written.

An interruption that cuts a write to the SQLite store half-way leaves the database locked by
the broken transaction, and closing the run afterwards waits for that lock (up to the busy
timeout). Inside :func:`held` the signal is noted and raised when the block ends instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_depth = 0
_pending: int | None = None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _depth:
        _pending = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


def install() -> None:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt, held back inside :func:`held`."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


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
            raise KeyboardInterrupt(f"signal {signum}")

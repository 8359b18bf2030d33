"""The training process's side of the recorder: it starts the recorder process and hands it
records over a pipe. Imports neither MLflow, matplotlib nor TensorFlow.

Sending never waits for the store: a record is a few bytes in the pipe, written whole. The
recorder owns the MLflow run and closes it with the status that happened; if this process dies
without a word, the recorder sees the pipe close and marks the run FAILED. If the recorder dies,
training goes on: one line says that recording stopped, and the job's files are still written.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from multiprocessing.connection import Connection

from pipeline.errors import ResumeError, StageError, TrackingError
from pipeline.tracking.interrupts import held
from pipeline.tracking.protocol import (
    RUN_RECORDS,
    CloseRun,
    FindRun,
    OpenRun,
    Reply,
    ResumeRefused,
    RunClosed,
    RunFound,
    RunOpened,
    RunSpec,
    StoreRefused,
    Sync,
    Synced,
    WatchParent,
)

log = logging.getLogger(__name__)

# How long the end of a job waits for the recorder to finish its records (large artifacts
# going to a remote server take a while; a dead recorder is noticed at once).
CLOSE_TIMEOUT_S = 600


class _Process:
    """One recorder process, reused by every job of this process (a sweep's jobs): it is
    started once, and its imports are paid once.

    A plain subprocess with one end of a socket pair, rather than multiprocessing's: a parallel
    launcher's workers (joblib's loky) may neither have multiprocessing children nor spawn them.
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.tracking.recorder", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        self.conn = Connection(ours.detach())
        self.alive = True

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Close the pipe (the recorder then exits, its records done) and wait for it."""
        self.conn.close()
        try:
            self.process.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # it ignores SIGTERM (Ctrl-C reaches the whole group)
            self.process.kill()


_shared: _Process | None = None
_jobs = itertools.count(1)  # each job's number, carried by the recorder's replies to it
# The process whose FINISHED jobs may return before their runs are closed: a sweep's own
# process, whose jobs run one after the other (the sweep waits for the recorder before it
# compares them). Jobs in a parallel launcher's workers, other processes, wait as usual.
_defer_pid: int | None = None


def defer_closing(on: bool) -> None:
    """Let FINISHED jobs of this process return while the recorder closes their runs."""
    global _defer_pid
    _defer_pid = os.getpid() if on else None


def wait_for_recorder() -> None:
    """Wait until this process's recorder has done everything sent to it so far."""
    if _shared is None or not _shared.alive or not _shared.running():
        return
    token = next(_jobs)
    try:
        with held():
            _shared.conn.send(Sync(token))
        while _shared.conn.poll(CLOSE_TIMEOUT_S):
            with held():
                reply = _shared.conn.recv()
            if reply == Synced(token):
                return
        log.warning("the recorder did not finish within %d s", CLOSE_TIMEOUT_S)
    except (EOFError, OSError):
        _shared.alive = False


def watch_parent(uri: str, run_id: str, watch: bool = True) -> None:
    """Have this process's recorder close sweep parent `run_id` FAILED if this process dies
    without closing it (SIGKILL, the out-of-memory killer); `watch=False` once it is closed."""
    if not watch and (_shared is None or not _shared.alive):
        return
    shared = _recorder_process()
    try:
        with held():
            shared.conn.send(WatchParent(uri, run_id, watch))
    except OSError:
        log.warning("the recorder is gone: sweep parent run %s is not watched", run_id)


def _stop_shared() -> None:
    # The recorder ends when its pipe closes: it has finished every job's records by then.
    if _shared is not None and _shared.alive:
        _shared.stop()


def _recorder_process() -> _Process:
    global _shared
    if _shared is None or not _shared.alive or not _shared.running():
        if _shared is None:
            atexit.register(_stop_shared)
        _shared = _Process()
    return _shared


def start_recorder() -> None:
    """Start this process's recorder now, so that its imports overlap with TensorFlow's."""
    _recorder_process()


class RecorderClient:
    """Hands one job's records to the recorder process; every method returns at once."""

    def __init__(self, enabled: bool = True) -> None:
        self._shared = _recorder_process()
        self._conn, self._process = self._shared.conn, self._shared.process
        self.enabled = enabled
        self.job = next(_jobs)
        self.lost = False
        self.closed = False
        self.run_id: str | None = None
        self._store_error: str | None = None

    def send(self, record) -> None:
        """Hand `record` (one of protocol.RUN_RECORDS) to the recorder; returns at once."""
        if not isinstance(record, RUN_RECORDS):
            raise TypeError(f"not a record for the run: {type(record).__name__}")
        self._send(record)

    def _send(self, message) -> None:
        if self.lost or self.closed:
            return
        try:
            with held():  # a message is written whole, even on Ctrl-C
                self._conn.send(message)
        except (BrokenPipeError, EOFError, OSError):
            self._lose()

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            self._shared.alive = False
            try:
                code = self._process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                code = None
            log.warning(
                "recording stopped: the recorder process ended (exit code %s); training goes "
                "on and the job's files are still written to its folder",
                code,
            )

    def open(self, spec: RunSpec) -> None:
        self._send(OpenRun(spec, self.enabled, self.job))

    def find(self, spec: RunSpec, resume: str) -> RunFound:
        """The run `resume=` names for this job (waits for the recorder's answer).

        Raises:
            ResumeError: nothing that can be resumed; says why.
        """
        self._send(FindRun(self.job, spec, resume))
        while not self.lost:
            reply = self._read_replies(timeout=CLOSE_TIMEOUT_S)
            if isinstance(reply, RunFound):
                return reply
            if isinstance(reply, ResumeRefused):
                raise ResumeError(reply.message)
            if reply is None:
                break
        raise TrackingError("the recorder process did not answer: resume= needs it")

    # --- replies ------------------------------------------------------------------------

    def _read_replies(self, timeout: float = 0.0) -> Reply | None:
        """The recorder's next reply to this job within `timeout` seconds, or None. Replies to
        an earlier job (whose run closed while this one trained) are passed over."""
        while not self.lost:
            try:
                if not self._conn.poll(timeout):
                    return None
                with held():  # a reply read half would leave the pipe out of step
                    reply = self._conn.recv()
            except (EOFError, OSError):
                self._lose()
                return None
            if isinstance(reply, Synced) or reply.job != self.job:
                continue
            if isinstance(reply, RunOpened):
                self.run_id = reply.run_id
            elif isinstance(reply, StoreRefused):
                self._store_error = reply.message
            return reply
        return None

    def check(self) -> None:
        """Raise the store's error if the recorder could not open the run (checked between
        epochs: a refused store ends the job early rather than after training)."""
        while self._read_replies() is not None:
            pass
        if self._store_error:
            raise TrackingError(self._store_error)

    def close(self, status: str, error: str | None = None, tags: Mapping[str, str] = {}) -> None:
        """End the run with `status` once every record before is in; wait for the recorder.

        Raises:
            StageError: the recorder's own part failed (e.g. drawing the report); the run is
                then FAILED with that error.
            TrackingError: the recorder could not open the run in the store.
        """
        if self.closed:  # e.g. the job's error path after a failed close
            return
        self._send(CloseRun(self.job, status, error, dict(tags)))
        self.closed = True
        if _defer_pid == os.getpid() and status == "FINISHED" and not self._store_error:
            # In a sweep, the next job trains while the recorder finishes this one's run; a
            # failure there still ends the run FAILED, and the recorder's log says why.
            return
        failure = None
        while not self.lost:
            reply = self._read_replies(timeout=CLOSE_TIMEOUT_S)
            if reply is None:
                if not self.lost:
                    log.warning("the recorder did not finish within %d s", CLOSE_TIMEOUT_S)
                    self._process.kill()
                    self._lose()
                break
            if isinstance(reply, RunClosed):
                failure = reply.failure
                break
        if self._store_error and status == "FINISHED":
            raise TrackingError(self._store_error)
        if failure and status == "FINISHED":
            stage, message = failure
            raise StageError(stage, message)

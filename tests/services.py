"""Programs the `system` tests start: free loopback ports and an MLflow server or UI that is
waited for and always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} missing)"


def _wait_for_health(what: str, url: str, proc: subprocess.Popen, log: Path, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} did not answer {url}/health within {timeout:.0f} s:\n{tail(log)}")


@contextmanager
def mlflow_service(
    command: str,
    args: Sequence[str],
    home: Path,
    timeout: float,
    env: Mapping[str, str] = {},
) -> Iterator[tuple[str, Path]]:
    """`mlflow COMMAND ARGS` (`server` or `ui`) on a free 127.0.0.1 port, started in `home` and
    waited for; yields its URL and log file; stops it, with its workers, on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = home / f"mlflow-{command}.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                command,
                *args,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean, **env},
            start_new_session=True,  # its workers share its process group: stop them together
        )
    try:
        _wait_for_health(f"mlflow {command}", url, proc, log, timeout)
        yield url, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

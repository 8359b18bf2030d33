"""The programs the `system` tests start: finding them (or failing where CI requires them),
free ports, and an MLflow server or UI waited for and stopped."""

from __future__ import annotations

import os
import shutil
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


def require_system(found: object, what: str) -> None:
    """Skip a `system` test whose program is missing, or fail it where CI requires them all
    (PIPELINE_REQUIRE_SYSTEM=1, set by .ci/run after installing them)."""
    if found:
        return
    message = f"{what} is not installed (.ci/run installs it from Debian's packages)"
    if os.environ.get("PIPELINE_REQUIRE_SYSTEM") == "1":
        pytest.fail(message)
    pytest.skip(message)


def chromium_path() -> str | None:
    """Debian's Chromium: $PIPELINE_CHROMIUM if set, else /usr/bin/chromium, else `chromium`
    or `chromium-browser` on PATH."""
    override = os.environ.get("PIPELINE_CHROMIUM")
    if override is not None:
        candidates = [override]
    else:
        on_path = [shutil.which("chromium"), shutil.which("chromium-browser")]
        candidates = ["/usr/bin/chromium", *on_path]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a program's log file, for a failure message."""
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

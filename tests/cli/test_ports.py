"""A server's port already in use: `make ui`, `make serve` and `make draw` (and
`python -m pipeline.predict --serve`) say so in one `error:` line naming the port and how to
choose another, exit non-zero, and print no address and start no server.

Each test holds a free loopback port with a listening socket of its own. Tests marked `cli`
start `make` as a user does."""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

import pipeline.cli.port as port_module
from pipeline.cli.port import check_free, in_use
from pipeline.errors import PortInUseError
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.services import free_port

HOST = "127.0.0.1"
TARGETS = [("ui", "UI_PORT"), ("serve", "SERVE_PORT"), ("draw", "DRAW_PORT")]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port with a server's listening socket on it, for the test's duration."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen()
        yield sock.getsockname()[1]


def offered(line: str, how: str) -> int:
    """The free port an error line offers after `how` (`UI_PORT=`, `--port `)."""
    match = re.search(re.escape(how) + r"(\d+)", line)
    assert match, line
    return int(match.group(1))


# --- the check --------------------------------------------------------------------------------


def test_a_listening_port_is_in_use_and_a_free_one_offered(busy_port: int) -> None:
    assert in_use(HOST, busy_port)
    with pytest.raises(PortInUseError) as caught:
        check_free(HOST, busy_port, "UI_PORT={port} make ui")
    line = str(caught.value)
    assert line.startswith(f"port {busy_port} on {HOST} is in use"), line
    assert "\n" not in line
    other = offered(line, "UI_PORT=")
    assert line.endswith(f"choose another with UI_PORT={other} make ui"), line
    assert other > busy_port and not in_use(HOST, other)


def test_a_free_port_passes() -> None:
    port = free_port()
    assert not in_use(HOST, port)
    assert check_free(HOST, port, "UI_PORT={port} make ui") is None


def test_a_listener_on_all_addresses_takes_the_loopback_port_too() -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert in_use(HOST, port)


def test_the_targets_default_ports_are_never_offered(
    busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(port_module, "DEFAULT_PORTS", frozenset({busy_port + 1}))
    with pytest.raises(PortInUseError) as caught:
        check_free(HOST, busy_port, "--port {port}")
    other = offered(str(caught.value), "--port ")
    assert other > busy_port + 1, caught.value


def test_a_port_whose_server_just_stopped_is_free() -> None:
    """Connections of a stopped server waiting out TIME_WAIT do not hold its port: a new
    server can listen on it, as both set SO_REUSEADDR (asyncio's, uvicorn's, servers do), so
    the check lets it."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((HOST, 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection((HOST, port))
        conn, _ = server.accept()
        conn.close()  # the server's end closes first: it is the one left in TIME_WAIT
        assert client.recv(1) == b""
        client.close()
    with socket.socket() as plain, pytest.raises(OSError) as caught:  # what the check is for
        plain.bind((HOST, port))
    assert caught.value.errno == errno.EADDRINUSE, caught.value
    assert not in_use(HOST, port)


def test_main_writes_one_error_line(busy_port: int, capsys: pytest.CaptureFixture) -> None:
    assert port_module.main([HOST, str(busy_port), "SERVE_PORT", "serve"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"error: port {busy_port} on {HOST} is in use"), err
    assert re.search(r"choose another with SERVE_PORT=\d+ make serve$", line), err
    assert port_module.main([HOST, str(free_port()), "SERVE_PORT", "serve"]) == 0
    assert capsys.readouterr() == ("", "")
    assert port_module.main([HOST, "port"]) == 2
    capsys.readouterr()
    for wrong in ("port", "99999", "0"):
        assert port_module.main([HOST, wrong, "UI_PORT", "ui"]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err == f"error: UI_PORT={wrong} is not a port: give one of 1-65535\n"


@pytest.mark.cli
def test_the_check_imports_neither_tensorflow_nor_mlflow(busy_port: int) -> None:
    code = (
        "import sys, pipeline.cli.port as port; "
        f"code = port.main(['{HOST}', '{busy_port}', 'UI_PORT', 'ui']); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules)); "
        "sys.exit(code)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == "[]\n", proc.stdout
    assert proc.stderr.startswith("error: "), proc.stderr


# --- the drawing page -------------------------------------------------------------------------


def test_serve_on_a_busy_port_starts_nothing(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import uvicorn

    from pipeline.serving.classifier import Classifier
    from pipeline.serving.draw import serve

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    with pytest.raises(PortInUseError) as caught:
        serve(Classifier(None, tuple("0123456789"), "runs:/<abc>/model"), HOST, busy_port)
    line = str(caught.value)
    assert line.startswith(f"port {busy_port} on {HOST} is in use"), line
    assert offered(line, "--port ") > busy_port
    assert calls == []
    assert capsys.readouterr() == ("", "")


def test_predict_serve_on_a_busy_port_is_one_error_line(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import uvicorn

    import pipeline.cli.predict as predict
    from pipeline.serving.classifier import Classifier

    classifier = Classifier(None, tuple("0123456789"), "runs:/<abc>/model")
    monkeypatch.setattr(predict, "load_classifier", lambda model: classifier)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: pytest.fail("uvicorn started"))
    code = predict.main(["--serve", "runs:/<abc>/model", "--port", str(busy_port)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"error: port {busy_port} on {HOST} is in use"), err
    assert re.search(r"choose another with --port \d+$", line), err


# --- make -------------------------------------------------------------------------------------


@pytest.mark.cli
@pytest.mark.parametrize(("target", "variable"), TARGETS)
def test_make_on_a_busy_port_is_one_error_line(busy_port: int, target: str, variable: str) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # A make of its own, not a sub-make of `make test` (which would print its directory).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    # -o: the venv is the one these tests run in; installing is not what is tested.
    command = ["make", "-o", ".venv/.installed-run", target, f"{variable}={busy_port}"]
    proc = subprocess.run(
        [*command, "MODEL=models:/no-such-model@none"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert proc.stdout == "", proc.stdout  # no address, no command echoed, nothing started
    lines = proc.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[0] == errors[0], proc.stderr
    (line,) = errors
    assert f"port {busy_port} on {HOST} is in use" in line, line
    other = offered(line, f"{variable}=")
    assert line.endswith(f"choose another with {variable}={other} make {target}"), line
    assert other != busy_port
    # After the line, only make's own note of the failed step.
    assert all(line.startswith("make: ***") for line in lines[1:]), proc.stderr

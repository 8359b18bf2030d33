"""What the tests share besides fixtures: composing the config, the pipeline in this process or
as a command, reading runs back, tiny IDX data, and the programs the `system` tests start."""

from __future__ import annotations

import gzip
import hashlib
import logging
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

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = str(PROJECT_ROOT / "conf")
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "datasets"

# What a test that trains does not need to see or keep: the progress bar (SILENT) and the
# logged model (about 0.3 s a run). Tests that load the model back use SILENT alone.
SILENT = "trainer.verbose=0"
QUIET = (SILENT, "tracking.log_model=false")
# The report's figures, each a `report.<name>` switch and a `plots/<name>.png`.
FIGURES = ("samples", "learning_curves", "predictions", "confusion_matrix", "mistakes", "weights")
# Every figure and the HTML page off (about 2 s a run), for tests that do not look at them.
NO_REPORT = tuple(f"report.{name}=false" for name in (*FIGURES, "html"))

# --- config and the pipeline ----------------------------------------------------------------


def make_config(overrides: Sequence[str] = ()):
    """Compose the project's config as `python -m pipeline <overrides>` would."""
    from hydra import compose, initialize_config_dir

    from pipeline.config.schema import register

    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_main(args: Sequence[str]) -> int:
    """`python -m pipeline ARGS` in this process; returns the exit code it would give.

    The entry point as a user calls it (its one-line errors go to stderr, captured by pytest),
    minus the process: sweeps run their jobs here with the basic launcher. Hydra's global state
    and logging, and the environment, arguments and signal handlers the entry point sets, are
    restored afterwards.
    """
    from hydra.core.global_hydra import GlobalHydra

    from pipeline.cli.train import cli as entry_point

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved_env = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", "PIPELINE_USER_FULL_ERROR")}
    argv = sys.argv
    sys.argv = ["pipeline", *args]
    try:
        entry_point()
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for sig, handler in signals.items():
            signal.signal(sig, handler)
        GlobalHydra.instance().clear()
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


def cli(args, env=None, timeout=300, cwd=PROJECT_ROOT) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` as a user runs it, in the test's environment plus `env`."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def start_pipeline(args) -> subprocess.Popen:
    """`python -m pipeline ARGS` in the background, its stderr kept for failures."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_one_line_error(out, *names):
    """Exit 1 with one `error:` line on stderr naming each of `names`, and no traceback."""
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, out.stderr
    assert errors[0].startswith("error: ")
    for name in names:
        assert name in errors[0], (name, errors[0])
    assert "Traceback" not in out.stdout + out.stderr


# --- reading runs back ----------------------------------------------------------------------


def init_store(uri):
    """Create the store's tables now: a poller and the job migrating it at once would race."""
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).search_experiments()


def runs_in(uri):
    """Every run in the store (none if the store was never created)."""
    from mlflow.tracking import MlflowClient

    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not os.path.exists(path):
        return []
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def sweep_runs(uri):
    """(parent, children) of the one sweep in the store; children sorted by run name, each
    checked to be the parent's."""
    runs = runs_in(uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    names = [(r.info.run_name, r.info.status, r.data.tags.get("mlflow.parentRunId")) for r in runs]
    assert len(parents) == 1, names
    (parent,) = parents
    assert parent.data.tags.get("sweep") == "true", parent.data.tags
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id, names
    return parent, sorted(children, key=lambda r: r.info.run_name)


def artifact_paths(client, run_id, path=None) -> list[str]:
    """Every artifact file of a run, folders walked."""
    out = []
    for f in client.list_artifacts(run_id, path):
        out.extend(artifact_paths(client, run_id, f.path) if f.is_dir else [f.path])
    return out


# --- data ---------------------------------------------------------------------------------


def real_data_dir() -> Path | None:
    """The folder holding the real mnist/ and fashion-mnist/ IDX files, if this machine has it."""
    env = os.environ.get("PIPELINE_DATA_DIR")
    for candidate in (Path(env) if env else None, SHARED_DATA):
        if candidate is not None and (candidate / "mnist").is_dir():
            return candidate.resolve()
    return None


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format (magic 0x0000080N, then the dimensions)."""
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> str:
    """Write `array` as a gzip-compressed IDX file; return the SHA-256 of the content."""
    raw = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw))
    return hashlib.sha256(raw).hexdigest()


TINY_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def tiny_arrays(n_train: int = 200, n_test: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """Learnable tiny data: class k is a bright horizontal band at rows 2k..2k+5, plus noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k : 2 * k + 6, :] = 220
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


def tiny_dataset(n_train=100, n_test=30, class_names=tuple("abcdefghij")):
    """A loaded-looking Dataset of tiny_arrays, for stage tests."""
    from pipeline.data.load import Dataset

    a = tiny_arrays(n_train=n_train, n_test=n_test)
    return Dataset(
        name="tiny",
        train_x=a["train_images"],
        train_y=a["train_labels"],
        test_x=a["test_images"],
        test_y=a["test_labels"],
        class_names=tuple(class_names),
    )


def write_tiny_dataset(root: Path, dirname: str = "mnist", **kwargs) -> dict[str, str]:
    """Write the four tiny IDX files under root/dirname; return role -> SHA-256."""
    arrays = tiny_arrays(**kwargs)
    return {role: write_idx(root / dirname / TINY_FILES[role], arrays[role]) for role in TINY_FILES}


def tiny_overrides(root: Path, digests: dict[str, str]) -> list[str]:
    return [f"dataset.path='{root}'"] + [
        f"dataset.files.{role}.sha256={digest}" for role, digest in digests.items()
    ]


# --- programs the `system` tests start ------------------------------------------------------


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

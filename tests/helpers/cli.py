"""The pipeline as a user drives it: composing its config, running `python -m pipeline` in this
process or as a command, the overrides tests pass it, and the one-line error it gives."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from tests.helpers.paths import CONF_DIR, PROJECT_ROOT

# What a test that trains does not need to see or keep: the progress bar (SILENT) and the
# logged model (about 0.3 s a run). Tests that load the model back use SILENT alone.
SILENT = "trainer.verbose=0"
QUIET = (SILENT, "tracking.log_model=false")
# The report's figures, each a `report.<name>` switch and a `plots/<name>.png`.
FIGURES = ("samples", "learning_curves", "predictions", "confusion_matrix", "mistakes", "weights")
# Every figure and the HTML page off (about 2 s a run), for tests that do not look at them.
NO_REPORT = tuple(f"report.{name}=false" for name in (*FIGURES, "html"))


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
        for handler in list(root.handlers):  # a copy: removing while iterating skips some
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

"""Entry point: ``python -m pipeline [overrides]``; ``-m`` for a sweep.

Kept thin so that ``--help`` and ``--cfg job`` answer without importing TensorFlow or MLflow.
Errors a user can fix (a bad override, bad data, an unreachable store) are reported on one
line with exit code 1 (`pipeline.cli.failure`); ``HYDRA_FULL_ERROR=1`` shows the full traceback
instead. Ctrl-C and SIGTERM end the job with exit code 130, its MLflow run marked KILLED.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pipeline.cli.failure import fail
from pipeline.config.schema import CONF_DIR, register, to_config
from pipeline.errors import PipelineError, SweepAborted
from pipeline.tracking import interrupts

log = logging.getLogger("pipeline")
# MLflow's download progress bars (the comparison reads each run's predictions) are noise on a
# terminal whose lines are the jobs' own.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one job and return its objective (validation accuracy, else test accuracy)."""
    try:
        conf = to_config(cfg)  # a bad value fails here, before TensorFlow or MLflow are imported
        from pipeline.training import engine

        engine.select(conf.trainer)  # before Keras is imported
        from pipeline.tracking.client import start_recorder

        # The recorder imports MLflow on the other core while this process imports TensorFlow.
        start_recorder()
        from pipeline.training.job import run_from_hydra

        return run_from_hydra(cfg)
    except PipelineError as exc:
        # In a sweep the other jobs go on; Hydra reports the failed ones when all are done.
        if HydraConfig.get().mode == RunMode.MULTIRUN or _full_error():
            raise
        _drop_unused_folder()
        sys.exit(fail(exc))


def _drop_unused_folder() -> None:
    """A job stopped by a mistake before it wrote anything leaves no folder: its output folder
    goes if it holds only what Hydra put there (`.hydra/` and the log), and so do the folders
    above it that this empties (`outputs/<date>/`), up to the working directory."""
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir).resolve()
    if not out.is_dir() or any(
        p.name not in (".hydra", f"{hc.job.name}.log") for p in out.iterdir()
    ):
        return
    shutil.rmtree(out, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for folder in out.parents:
        if cwd not in folder.parents:
            break
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break


def _full_error() -> bool:
    return os.environ.get("PIPELINE_USER_FULL_ERROR") == "1"


def cli() -> None:
    """Hydra's main, with a user's errors on one line and interruptions closing the runs."""
    from pipeline.tracking.sweep import close_open_parents

    # Hydra prints composition errors over several lines and exits; with its full-error mode
    # the exception reaches this function instead, which prints it on one.
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        os.environ["PIPELINE_USER_FULL_ERROR"] = "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    interrupts.install()
    try:
        main()
    except BrokenPipeError:  # `python -m pipeline --help | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        close_open_parents("KILLED")
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except SweepAborted as exc:
        close_open_parents("FAILED")
        if _full_error():
            raise exc.error from None
        sys.exit(fail(exc.error))
    except (PipelineError, HydraException, OmegaConfBaseException) as exc:
        close_open_parents("FAILED")
        if _full_error():
            raise
        sys.exit(fail(exc))
    except BaseException:
        close_open_parents("FAILED")
        raise


def exit_now(code: int | str | None) -> None:
    """Exit at once with `code`, as sys.exit would, once the exit handlers (which end the
    recorder and any open parent run) and the logs are done: tearing TensorFlow's modules
    down one by one would add most of a second to every command."""
    import atexit
    import threading

    # As the interpreter's own exit does: threads' exit hooks first (a parallel launcher's
    # worker pool shuts down there; skipped, it would wait out its idle timeout), then atexit.
    threading._shutdown()
    atexit._run_exitfuncs()
    logging.shutdown()
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code or 0)


def entry() -> None:
    """`python -m pipeline`: run the command line, then exit at once (see `exit_now`)."""
    try:
        cli()
    except SystemExit as exc:
        exit_now(exc.code)
    exit_now(0)

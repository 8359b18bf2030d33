"""Hydra callback: one MLflow parent run per multirun, its children created under it."""

from __future__ import annotations

import atexit
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Parent runs opened in this process and not yet closed, for `close_open_parents`.
_OPEN: list[MlflowSweepCallback] = []


def close_open_parents(status: str) -> None:
    """Close the parent run of a sweep that stopped early (error or interruption)."""
    for callback in list(_OPEN):
        callback.close(status)


class MlflowSweepCallback(Callback):
    """Creates the parent run when a multirun starts and closes it when the multirun ends.

    The parent's id is written to `<sweep dir>/mlflow_parent_run_id`, where each job (in this
    process or, with a parallel launcher, in another) finds it; run ids never travel through
    MLFLOW_RUN_ID.
    """

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pipeline import tracking
        from pipeline.run import PARENT_RUN_FILE

        sweep_dir = Path(config.hydra.sweep.dir)
        self.uri = OmegaConf.select(config, "tracking.uri")
        experiment = OmegaConf.select(config, "tracking.experiment") or OmegaConf.select(
            config, "dataset.name"
        )
        overrides = list(config.hydra.overrides.task)
        tags = {"sweep": "true", "overrides": " ".join(overrides), "sweep_dir": str(sweep_dir)}
        commit = tracking.git_commit()
        if commit:
            tags["git_commit"] = commit
        self.run_id = tracking.create_parent_run(
            experiment, self.uri, run_name=f"sweep {' '.join(overrides)}".strip(), tags=tags
        )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_RUN_FILE).write_text(self.run_id)
        log.info("MLflow parent run %s for the sweep in %s", self.run_id, sweep_dir)
        # A sweep that stops early never reaches on_multirun_end: the entry point closes the
        # parent then, and atexit is the last resort (e.g. when called from other code).
        _OPEN.append(self)
        atexit.register(self.close, "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._log_comparison(Path(config.hydra.sweep.dir) / "comparison")
        finally:
            self.close("FINISHED")

    def _log_comparison(self, out_dir: Path) -> None:
        """Compare the sweep's children and log the comparison to the parent run."""
        from pipeline import compare, tracking

        if self.run_id is None:
            return
        records = tracking.fetch_runs(self.uri, parent_run_id=self.run_id)
        if not records:
            log.warning("no finished child runs to compare")
            return
        paths = compare.write(compare.compare(records), out_dir)
        tracking.log_files(paths, self.run_id, "comparison")
        log.info(
            "comparison of %d runs logged to the parent run, written to %s", len(records), out_dir
        )

    def close(self, status: str) -> None:
        """End the parent run with `status` (FINISHED, FAILED or KILLED) if still open."""
        if self in _OPEN:
            _OPEN.remove(self)
        if self.run_id is None:
            return
        from pipeline import tracking

        run_id, self.run_id = self.run_id, None
        tracking.end_parent_run(self.uri, run_id, status)

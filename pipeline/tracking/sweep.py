"""Hydra callback: one MLflow parent run per multirun, its children created under it."""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from pipeline.errors import ConfigError, PipelineError, SweepAborted, TrackingError, first_line
from pipeline.tracking import client

if TYPE_CHECKING:  # tracking imports MLflow: not at start-up
    from pipeline.tracking.runs import RunRecord

log = logging.getLogger(__name__)

# Parent runs opened in this process and not yet closed, for `close_open_parents`.
_OPEN: list[MlflowSweepCallback] = []


def close_open_parents(status: str) -> None:
    """Close the parent run of a sweep that stopped early (error or interruption)."""
    for callback in list(_OPEN):
        callback.close(status)


# The file in the sweep folder holding the parent run's id, read by every job of the sweep.
PARENT_RUN_FILE = "mlflow_parent_run_id"
SEARCH_RESULT_FILE = "optimization_results.yaml"


def check_job_config(config: DictConfig) -> None:
    """The job's config (Hydra's node aside) checked as the job will check it.

    Raises:
        ConfigError: names the key at fault.
    """
    from pipeline.config.schema import to_config

    probe = copy.deepcopy(config)
    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    try:
        if "hydra" in probe:
            # `${hydra:job.num}` (a search's run names) resolves against the job's Hydra node,
            # which in a sweep's base config has no number yet.
            with read_write(probe.hydra.job):  # a copy: the config Hydra holds stays as is
                if OmegaConf.is_missing(probe.hydra.job, "num"):
                    probe.hydra.job.num = 0
            hydra_config.set_config(probe)
        job = copy.deepcopy(probe)
        with read_write(job), open_dict(job):
            job.pop("hydra", None)
        to_config(job)
    finally:
        hydra_config.cfg = before


def _check_search(config: DictConfig) -> None:
    """A sweeper that optimises (Optuna) maximises validation accuracy: there must be some,
    or the search would be tuned on the test set."""
    optimises = OmegaConf.select(config, "hydra.sweeper.direction") is not None
    if optimises and not OmegaConf.select(config, "trainer.validation_split"):
        raise ConfigError(
            "trainer.validation_split=0 cannot be used in a hyperparameter search: it maximises "
            "validation accuracy, so it needs a validation split > 0"
        )


def _check_sweep_values(config: DictConfig) -> None:
    """A value listed twice for one key (`seed=1,2,2`) would run the same job twice and count
    it twice in the comparison: refused before any job runs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = list(config.hydra.overrides.task)
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    given += [f"{key}={value}" for key, value in params.items()]
    try:
        overrides = OverridesParser.create().parse_overrides(given)
    except Exception:  # Hydra reports a malformed override itself, with its own message
        return
    for override in overrides:
        if not override.is_sweep_override() or override.is_interval_sweep():
            continue
        values = [str(v) for v in override.sweep_string_iterator()]
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ConfigError(
                f"{override.input_line} lists "
                f"{', '.join(twice)} more than once: each value would run, and count, twice"
            )


def check_folder(folder: Path, key: str) -> None:
    """The output folder `key` sets can be made and written; what this makes of it to find out
    is removed again, so a mistake later leaves nothing behind.

    Raises:
        ConfigError: names the folder, why, and the key that sets it.
    """
    folder = Path(folder).absolute()
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"{key}={folder}: cannot create or write to the folder "
            f"({why}: {exc.filename or folder}); "
            f"give {key}=<a folder you can write>"
        ) from None
    finally:
        for path in made:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()


def _check_each_value(config: DictConfig) -> None:
    """Each value of each swept key composes and passes the checks (with the first value of
    the other swept keys), so that a misspelled option (`model=linear,anm`) stops the sweep
    before its parent run or folder exists; Hydra's basic sweeper only, whose jobs are the
    product of the values."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
    if not sweeper.endswith("BasicSweeper"):
        return
    try:
        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    except Exception:  # Hydra reports a malformed override itself, with its own message
        return
    swept = {
        o.get_key_element(): [str(v) for v in o.sweep_string_iterator()]
        for o in overrides
        if o.is_sweep_override() and not o.is_interval_sweep()
    }
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    loader = GlobalHydra.instance().config_loader()
    for key, values in swept.items():
        for value in values[1:] if key != next(iter(swept)) else values:
            job = [f"{k}={value if k == key else v[0]}" for k, v in swept.items()]
            check_job_config(loader.load_sweep_config(config, [*fixed, *job]))


def _is_resume(override: str) -> bool:
    return override.lstrip("+~").split("=", 1)[0] == "resume"


class MlflowSweepCallback(Callback):
    """Creates the parent run when a multirun starts and closes it when the multirun ends.

    The parent's id is written to `<sweep dir>/mlflow_parent_run_id`, where each job (in this
    process or, with a parallel launcher, in another) finds it; run ids never travel through
    MLFLOW_RUN_ID.
    """

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.uri: str | None = None
        self.register: bool | None = None
        self.log_model = True
        self.sweep_dir: Path | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A mistake in the config stops a single job before Hydra makes its output folder.
        try:
            check_job_config(config)
            check_folder(Path(config.hydra.run.dir), "hydra.run.dir")
        except PipelineError as exc:
            raise SweepAborted(exc) from exc

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A bad setting or an unreachable store stops the sweep before its first job.
        try:
            self._start(config)
        except (PipelineError, HydraException) as exc:  # a mistake in a value or a folder
            raise SweepAborted(exc) from exc
        except Exception as exc:  # e.g. the store refused the parent run
            first = first_line(exc)
            error = TrackingError(
                f"the sweep's parent run could not be created in {self.uri or 'the store'}: "
                f"{type(exc).__name__}: {first}"
            )
            raise SweepAborted(error) from exc

    def _start(self, config: DictConfig) -> None:
        from pipeline.tracking import parents, store

        sweep_dir = self.sweep_dir = Path(config.hydra.sweep.dir)
        check_job_config(config)  # the settings every job shares
        _check_search(config)
        _check_sweep_values(config)
        _check_each_value(config)
        check_folder(sweep_dir, "hydra.sweep.dir")
        if not OmegaConf.select(config, "tracking.enabled", default=True):
            return
        # Jobs that run in this process, one after the other, leave their runs to the
        # recorder to close while the next one trains; the comparison waits for them all.
        client.defer_closing(True)
        self.uri = OmegaConf.select(config, "tracking.uri")
        self.register = OmegaConf.select(config, "tracking.register")
        self.log_model = OmegaConf.select(config, "tracking.log_model", default=True)
        experiment = OmegaConf.select(config, "tracking.experiment") or OmegaConf.select(
            config, "dataset.name"
        )
        # `resume=` says where the sweep starts, not what it is.
        overrides = [o for o in config.hydra.overrides.task if not _is_resume(o)]
        resume = OmegaConf.select(config, "resume")
        if resume is not None:
            self.run_id = self._resume(config, experiment, " ".join(overrides), resume)
            return
        tags = {"sweep": "true", "overrides": " ".join(overrides), "sweep_dir": str(sweep_dir)}
        tags["sweeper"] = str(config.hydra.sweeper._target_).rsplit(".", 1)[-1]
        study = OmegaConf.select(config, "hydra.sweeper.study_name")
        if study is not None:  # a search: every process on the study has a parent run
            tags["optuna_study"] = str(study)
            tags["optuna_storage"] = str(OmegaConf.select(config, "hydra.sweeper.storage"))
        commit = store.git_commit()
        if commit:
            tags["git_commit"] = commit
        self.run_id = parents.create_parent_run(
            experiment, self.uri, run_name=f"sweep {' '.join(overrides)}", tags=tags
        )
        self._opened(sweep_dir)
        log.info("MLflow parent run %s for the sweep in %s", self.run_id, sweep_dir)

    def _resume(self, config: DictConfig, experiment: str, overrides: str, resume: str) -> str:
        """Reopen the stopped sweep `resume` names; its jobs keep, resume or run its children."""
        from pipeline.tracking import resume as resuming

        if OmegaConf.select(config, "hydra.sweeper.direction") is not None:
            raise ConfigError(
                "resume= does not apply to a search: its stored study goes on where it stopped "
                "(give the same hydra.sweeper.storage and study_name)"
            )
        self.run_id = resuming.find_parent(self.uri, experiment, overrides, resume)
        self._opened(self.sweep_dir)
        log.info("resuming the sweep of parent run %s in %s", self.run_id, self.sweep_dir)
        return self.run_id

    def _opened(self, sweep_dir: Path) -> None:
        """The parent run is open: its jobs find it in the sweep folder, and whatever stops
        the sweep closes it."""
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_RUN_FILE).write_text(self.run_id)
        # A sweep that stops early never reaches on_multirun_end: the entry point closes the
        # parent then, and atexit is the last resort (e.g. when called from other code); if
        # this process is killed, its recorder closes it.
        _OPEN.append(self)
        atexit.register(self.close, "FAILED")
        from pipeline.tracking.store import resolve_uri

        client.watch_parent(resolve_uri(self.uri), self.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from pipeline.tracking import sweep_results

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            records = self._compare(sweep_dir / "comparison")
            if self.run_id is not None:
                sweep_results.log_search_result(
                    self.run_id, sweep_dir / SEARCH_RESULT_FILE, records
                )
        finally:
            self.close("FINISHED")

    def _compare(self, out_dir: Path) -> list[RunRecord]:
        """Log the comparison of the finished children to the parent run, then register the
        best of each dataset (`tracking.register`, on unless false for a sweep)."""
        from pipeline.tracking import registry, sweep_results

        if self.run_id is None:
            return []
        records = sweep_results.log_comparison(self.uri, self.run_id, out_dir)
        if records and self.register is not False and self.log_model:
            registry.register_best(records)
        return records

    def close(self, status: str) -> None:
        """End the parent run with `status` (FINISHED, FAILED or KILLED) if still open."""
        if self in _OPEN:
            _OPEN.remove(self)
        if self.run_id is None:
            return
        client.defer_closing(False)
        from pipeline.tracking import parents

        if status == "FAILED" and self.sweep_dir is not None:
            # A job failed and stopped the sweep: the runs that finished are still compared.
            try:
                self._compare(self.sweep_dir / "comparison")
            except Exception as exc:  # the sweep's own error is the one to report
                log.warning("no comparison of the finished runs: %s: %s", type(exc).__name__, exc)
        run_id, self.run_id = self.run_id, None
        parents.end_parent_run(self.uri, run_id, status)
        from pipeline.tracking.store import resolve_uri

        client.watch_parent(resolve_uri(self.uri), run_id, watch=False)

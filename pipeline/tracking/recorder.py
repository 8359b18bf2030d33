"""The recorder process: it owns one job's MLflow run, records what the training process sends,
draws the report, and closes the run with the status that happened.

It runs beside training on the other core (started by `client.RecorderClient` before TensorFlow
is imported) and never imports TensorFlow: the model arrives as a saved .keras file, the report's
inputs as arrays. Ctrl-C reaches the whole terminal's process group, so the recorder ignores
SIGINT and SIGTERM: the training process tells it how the job ended, and if that process dies
without a word, the closed pipe says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from pipeline.errors import first_line
from pipeline.reporting.render import draw_report, draw_samples, warm_up
from pipeline.tracking.keras_model import log_keras_file
from pipeline.tracking.protocol import (
    CloseRun,
    DrawReport,
    DrawSamples,
    FindRun,
    LogDatasets,
    LogFiles,
    LogFolder,
    LogMetrics,
    LogModel,
    LogParams,
    OpenRun,
    ResumeRefused,
    RunClosed,
    RunFound,
    RunOpened,
    StoreRefused,
    Sync,
    Synced,
    WatchParent,
)

log = logging.getLogger(__name__)

DIED = (
    "training process {pid} died before it closed the run (killed, e.g. by SIGKILL or the "
    "out-of-memory killer, or crashed); the epochs recorded until then are kept"
)
PARENT_DIED = (
    "the sweep's process {pid} died before it closed the sweep (killed, e.g. by SIGKILL or the "
    "out-of-memory killer, or crashed); `-m ... resume=last` goes on with it"
)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # as Hydra's job log


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"


def _log_input(dataset, context: str, tries: int = 3) -> None:
    """Log one dataset input. The parallel jobs of a sweep may add the same dataset at once; the
    store keeps one row per (experiment, name, digest), so the loser's transaction is rolled back
    with an IntegrityError, and a second try finds the row the winner wrote."""
    import mlflow

    for attempt in range(tries):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except Exception as exc:
            if "IntegrityError" not in str(exc) or attempt == tries - 1:
                raise


# Each record's handler (a method of _Run) and the stage a failure of it is reported as.
HANDLERS: dict[type, Callable] = {}
STAGES: dict[type, str] = {}


def handles(kind: type, stage: str | None = None) -> Callable[[Callable], Callable]:
    """Register the decorated method of _Run as the handler of records of type `kind`."""

    def register(method: Callable) -> Callable:
        HANDLERS[kind] = method
        STAGES[kind] = stage or f"recording ({method.__name__})"
        return method

    return register


class _Run:
    """The MLflow run of one job, or nothing when tracking is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        self.failure: tuple[str, str] | None = None  # (stage, error) of the recorder's own part
        self.drawn: tuple[dict, dict] = ({}, {})  # figures drawn during training, their seconds
        self.latest: dict[str, float] = {}  # each metric's last value
        self.model_logged = False

    def open(self, spec) -> str | None:
        if not self.enabled:
            return None
        import mlflow

        from pipeline.tracking.links import run_url, ui_base
        from pipeline.tracking.parents import parent_experiment_after_setup
        from pipeline.tracking.store import setup, store_ready

        if spec.parent_run_id is not None:
            experiment_id = parent_experiment_after_setup(spec.tracking, spec.parent_run_id)
        else:
            experiment_id = setup(spec.tracking, spec.experiment)
        name, tags = store_ready(spec.run_name, spec.tags)
        if spec.resume_run_id is not None:
            run = self._reopen(spec.resume_run_id, tags)
            experiment_id, name = run.info.experiment_id, run.info.run_name
        else:
            run = mlflow.start_run(
                experiment_id=experiment_id,
                run_name=name,
                tags=tags,
                parent_run_id=spec.parent_run_id,
            )
        self.run_id = run.info.run_id
        self.name = name
        self.spec = spec
        self.url = run_url(ui_base(spec.tracking.uri), experiment_id, self.run_id)
        if spec.params and spec.resume_run_id is None:  # a resumed run has its params
            mlflow.log_params(spec.params)
        log.info("MLflow run %s (%s) in %s", self.run_id, name, mlflow.get_tracking_uri())
        return self.run_id

    @staticmethod
    def _reopen(run_id: str, tags: Mapping[str, str]):
        """The stopped run `run_id`, RUNNING again: its stop's error goes, and it is tagged
        with the epoch it goes on from; its other tags and params stay as they were."""
        import mlflow

        from pipeline.tracking.resume import STOP_TAGS

        run = mlflow.start_run(run_id=run_id)
        for tag in STOP_TAGS:
            if tag in run.data.tags:
                mlflow.delete_tag(tag)
        mlflow.set_tag("resumed_from_epoch", tags.get("resumed_from_epoch", "0"))
        return run

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def handle(self, record) -> None:
        """Do what `record` (one of protocol.RUN_RECORDS) asks of the open run."""
        HANDLERS[type(record)](self, record)

    @handles(LogDatasets)
    def datasets(self, record: LogDatasets) -> None:
        if not self.active:
            return
        import mlflow

        from pipeline.data.load import load

        ds = load(record.dataset)  # read once per process, as in the trainer
        for item in record.inputs:
            x = getattr(ds, f"{item.part}_x")[item.start : item.stop]
            y = getattr(ds, f"{item.part}_y")[item.start : item.stop]
            with warnings.catch_warnings():  # "will assume … a LocalArtifactDatasetSource"
                warnings.simplefilter("ignore")
                dataset = mlflow.data.from_numpy(
                    x, targets=y, source=item.source, name=item.name, digest=item.digest
                )
            _log_input(dataset, item.context)

    @handles(LogParams)
    def params(self, record: LogParams) -> None:
        if self.active:
            import mlflow

            mlflow.log_params(dict(record.params))

    @handles(LogMetrics)
    def metrics(self, record: LogMetrics) -> None:
        if self.active:
            import mlflow

            mlflow.log_metrics(dict(record.metrics), step=record.step)
            self.latest |= record.metrics

    @handles(LogFiles)
    def files(self, record: LogFiles) -> None:
        if self.active:
            import mlflow

            for path in record.paths:
                if Path(path).is_file():
                    mlflow.log_artifact(path, artifact_path=record.folder)

    @handles(LogFolder)
    def folder(self, record: LogFolder) -> None:
        if self.active and Path(record.local_dir).is_dir():
            import mlflow

            mlflow.log_artifacts(record.local_dir, record.folder)

    @handles(LogModel)
    def model(self, record: LogModel) -> None:
        if self.active:
            log_keras_file(
                Path(record.saved),
                record.example_in,
                record.example_out,
                record.versions,
                record.metadata,
            )
            self.model_logged = True

    @handles(DrawSamples, stage="report")
    def samples(self, record: DrawSamples) -> None:
        self.drawn = draw_samples(
            Path(record.out_dir), record.request, record.images, record.labels, record.class_names
        )

    @handles(DrawReport, stage="report")
    def report(self, record: DrawReport) -> None:
        out = Path(record.out_dir)
        try:
            written = draw_report(Path(record.inputs), out, record.request, self.drawn)
        finally:
            Path(record.inputs).unlink(missing_ok=True)  # the arrays were only for the figures
        if self.active:
            self.folder(LogFolder(str(out / "plots"), "plots"))
            self.files(LogFiles(tuple(str(p) for p in written)))

    def close(self, status: str, error: str | None, tags: Mapping[str, str]) -> None:
        if not self.active:
            return
        import mlflow
        from mlflow.entities import RunStatus

        from pipeline.tracking.store import MAX_TAG_CHARS

        if self.failure is not None and status == "FINISHED":
            stage, message = self.failure
            status, error = "FAILED", f"stage {stage} failed: {message}"
            tags = {**tags, "failed_stage": stage}
        try:
            for key, value in tags.items():
                mlflow.set_tag(key, str(value)[:MAX_TAG_CHARS])
            if error:
                mlflow.set_tag("error", error[:MAX_TAG_CHARS])
        finally:
            mlflow.end_run(RunStatus.to_string(getattr(RunStatus, status)))
        log.info("run %s %s: %s", self.name, status, self.url)
        if status == "FINISHED" and self.spec.tracking.register and self.model_logged:
            self._register()
        self.run_id = None

    def _register(self) -> None:
        """A single run asked to be registered (`tracking.register=true`)."""
        from pipeline.tracking import registry

        registry.register_run(
            self.run_id,
            self.name,
            self.spec.tags.get("dataset", self.spec.experiment),
            self.latest,
            self.spec.tags,
            {k: str(v) for k, v in self.spec.params.items()},
        )


def serve(conn) -> None:
    """Record the jobs of the training process, one after the other, until it closes the pipe
    or dies."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # To stdout, as Hydra's console log: stderr is for the job's one-line errors.
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stdout)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    for name in ("pipeline.data", "pipeline.training"):  # the trainer says it
        logging.getLogger(name).setLevel(logging.WARNING)
    import mlflow  # now, on this core, while the trainer imports TensorFlow

    warm_up()

    try:
        _serve(conn, os.getppid())
    except BaseException:
        # MLflow's own exit hook would end an open run FINISHED.
        if mlflow.active_run() is not None:
            mlflow.end_run("FAILED")
        raise


def _serve(conn, parent_pid: int) -> None:
    run = _Run(enabled=False)
    parents: list[WatchParent] = []
    while True:
        try:
            record = conn.recv()
        except (EOFError, OSError):
            # The training process is gone; if a run is open, it never closed it.
            if run.active:
                run.close("FAILED", DIED.format(pid=parent_pid), {})
            _close_parents(parents, parent_pid)
            return
        if isinstance(record, WatchParent):
            parents = [p for p in parents if p.run_id != record.run_id]
            if record.watch:
                parents.append(record)
        else:
            run = _receive(conn, run, record)


def _close_parents(parents: list[WatchParent], pid: int) -> None:
    """End each watched sweep parent that its process left RUNNING: FAILED, with the reason."""
    if not parents:
        return
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.parents import end_parent_run, log_to_run
    from pipeline.tracking.store import connect_uri, resolve_uri

    for parent in parents:
        try:
            mlflow.set_tracking_uri(connect_uri(resolve_uri(parent.uri)))
            if MlflowClient().get_run(parent.run_id).info.status != "RUNNING":
                continue  # closed by its process, as it should be
            log_to_run(parent.run_id, tags={"error": PARENT_DIED.format(pid=pid)})
            end_parent_run(parent.uri, parent.run_id, "FAILED")
            log.info("sweep parent run %s FAILED: its process %d died", parent.run_id, pid)
        except Exception as exc:
            log.error("closing sweep parent run %s failed: %s", parent.run_id, _one_line(exc))


def _reply(conn, message) -> None:
    """Answer the training process; if it has died, its records still in the pipe are done
    all the same, and the end of the pipe closes its run."""
    with contextlib.suppress(OSError):
        conn.send(message)


def _receive(conn, run: _Run, record) -> _Run:
    """Act on one record; return the run the next records are for."""
    if isinstance(record, Sync):  # everything sent before is done
        _reply(conn, Synced(record.token))
    elif isinstance(record, FindRun):
        _reply(conn, _find(record))
    elif isinstance(record, OpenRun):
        run = _Run(record.enabled)
        try:
            opened = RunOpened(record.job, run.open(record.spec))
        except Exception as exc:
            _reply(conn, StoreRefused(record.job, f"tracking store: {_one_line(exc)}"))
        else:
            _reply(conn, opened)
    elif isinstance(record, CloseRun):  # (a job that failed before it opened a run closes too)
        try:
            run.close(record.status, record.error, record.tags)
        except Exception as exc:
            log.error("closing the run failed: %s", _one_line(exc))
            run.failure = run.failure or ("recording (close)", _one_line(exc))
        finally:
            _reply(conn, RunClosed(record.job, run.failure))
        run = _Run(enabled=False)
    else:
        try:
            run.handle(record)
        except Exception as exc:
            # The run goes on: later records are kept, and its end says what failed.
            stage = STAGES[type(record)]
            log.error("%s failed: %s\n%s", stage, _one_line(exc), traceback.format_exc())
            if run.failure is None:
                run.failure = (stage, _one_line(exc))
    return run


def _find(record: FindRun) -> RunFound | ResumeRefused:
    """The run `resume=` names, or why there is none (nothing in the store changes)."""
    from pipeline.errors import PipelineError
    from pipeline.tracking.resume import find_run

    spec = record.spec
    try:
        found = find_run(
            spec.tracking.uri, spec.experiment, spec.params, record.resume, spec.parent_run_id
        )
    except PipelineError as exc:
        return ResumeRefused(record.job, str(exc))
    except Exception as exc:
        return ResumeRefused(record.job, f"tracking store: {_one_line(exc)}")
    return RunFound(
        record.job, found.state, found.run_id, found.name, found.checkpoint, found.objective
    )


if __name__ == "__main__":  # started by client._Process with its end of a socket pair
    from multiprocessing.connection import Connection

    serve(Connection(int(sys.argv[1])))

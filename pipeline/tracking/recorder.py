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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.reporting.render import draw_report, draw_samples, warm_up
from pipeline.tracking.keras_model import log_keras_file

log = logging.getLogger(__name__)

DIED = (
    "training process {pid} died before it closed the run (killed, e.g. by SIGKILL or the "
    "out-of-memory killer, or crashed); the epochs recorded until then are kept"
)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # as Hydra's job log


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}"


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
        if spec.params:
            mlflow.log_params(spec.params)
        log.info("MLflow run %s (%s) in %s", self.run_id, name, mlflow.get_tracking_uri())
        return self.run_id

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def datasets(self, dataset_cfg, inputs: list[dict]) -> None:
        if not self.active:
            return
        import mlflow

        from pipeline.data.load import load

        ds = load(dataset_cfg)  # read once per process, as in the trainer
        for item in inputs:
            x = getattr(ds, f"{item['part']}_x")[item["start"] : item["stop"]]
            y = getattr(ds, f"{item['part']}_y")[item["start"] : item["stop"]]
            with warnings.catch_warnings():  # "will assume … a LocalArtifactDatasetSource"
                warnings.simplefilter("ignore")
                dataset = mlflow.data.from_numpy(
                    x, targets=y, source=item["source"], name=item["name"], digest=item["digest"]
                )
            mlflow.log_input(dataset, context=item["context"])

    def params(self, params: Mapping[str, Any]) -> None:
        if self.active:
            import mlflow

            mlflow.log_params(dict(params))

    def metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.active:
            import mlflow

            mlflow.log_metrics(dict(metrics), step=step)
            self.latest |= metrics

    def files(self, paths, folder: str | None = None) -> None:
        if self.active:
            import mlflow

            for path in paths:
                if Path(path).is_file():
                    mlflow.log_artifact(path, artifact_path=folder)

    def folder(self, local_dir: str, folder: str) -> None:
        if self.active and Path(local_dir).is_dir():
            import mlflow

            mlflow.log_artifacts(local_dir, folder)

    def model(self, saved: str, example_in, example_out, versions: dict) -> None:
        if self.active:
            log_keras_file(Path(saved), example_in, example_out, versions)
            self.model_logged = True

    def samples(self, out_dir: str, request: dict, images, labels, class_names) -> None:
        self.drawn = draw_samples(Path(out_dir), request, images, labels, class_names)

    def report(self, inputs: str, out_dir: str, request: dict) -> None:
        try:
            written = draw_report(Path(inputs), Path(out_dir), request, self.drawn)
        finally:
            Path(inputs).unlink(missing_ok=True)  # the arrays were only for the figures
        if self.active:
            self.folder(str(Path(out_dir) / "plots"), "plots")
            self.files([str(p) for p in written])

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
        from pipeline.tracking.registry import register

        try:
            message = register(
                self.run_id,
                self.spec.tags.get("dataset", self.spec.experiment),
                self.latest,
                self.spec.tags,
                {k: str(v) for k, v in self.spec.params.items()},
            )
            log.info("%s", message)
        except Exception as exc:  # the run is recorded; only its registration failed
            log.error("registering the model failed: %s", _one_line(exc))


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
    import mlflow  # noqa: F401  (now, on this core, while the trainer imports TensorFlow)

    warm_up()

    parent_pid = os.getppid()
    run = _Run(enabled=False)
    job = None  # the number of the job whose run is open, carried by each reply to it
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            # The training process is gone; if a run is open, it never closed it.
            if run.active:
                run.close("FAILED", DIED.format(pid=parent_pid), {})
            return
        kind, args = message[0], message[1:]
        if kind == "sync":  # everything sent before is done
            conn.send(("synced", *args))
        elif kind == "open":
            spec, enabled, job = args
            run = _Run(enabled)
            try:
                conn.send(("opened", job, run.open(spec)))
            except Exception as exc:
                conn.send(("store_error", job, f"tracking store: {_one_line(exc)}"))
        elif kind == "close":
            job, *args = args  # (a job that failed before it opened a run closes too)
            try:
                run.close(*args)
            except Exception as exc:
                log.error("closing the run failed: %s", _one_line(exc))
                run.failure = run.failure or ("recording (close)", _one_line(exc))
            finally:
                with contextlib.suppress(OSError):
                    conn.send(("closed", job, run.failure))
            run = _Run(enabled=False)
        else:
            try:
                getattr(run, kind)(*args)
            except Exception as exc:
                # The run goes on: later records are kept, and its end says what failed.
                stage = "report" if kind in ("report", "samples") else f"recording ({kind})"
                log.error("%s failed: %s\n%s", stage, _one_line(exc), traceback.format_exc())
                if run.failure is None:
                    run.failure = (stage, _one_line(exc))


if __name__ == "__main__":  # started by client._Process with its end of a socket pair
    from multiprocessing.connection import Connection

    serve(Connection(int(sys.argv[1])))

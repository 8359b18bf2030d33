"""The run of one job: opened, recorded into and closed with the status that happened."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import RunStatus
from mlflow.models import Model, infer_signature

from pipeline._tf import keras, tf
from pipeline.interrupts import held
from pipeline.tracking.store import MAX_TAG_CHARS, store_ready

log = logging.getLogger(__name__)


@contextmanager
def start_run(
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
) -> Iterator[str]:
    """Open a run and always close it: FINISHED, FAILED (error tagged) or KILLED on Ctrl-C.

    Yields:
        The run id.
    """
    run_name, tags = store_ready(run_name, tags)
    with held():
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            tags=tags,
            parent_run_id=parent_run_id,
        )
    try:
        yield run.info.run_id
    except KeyboardInterrupt:
        _close(RunStatus.KILLED, "interrupted")
        raise
    except BaseException as exc:
        # Errors may carry tags saying where they happened (e.g. diverged_epoch, failed_stage).
        with held():
            for key, value in getattr(exc, "tags", {}).items():
                mlflow.set_tag(key, value)
        _close(RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    else:
        _close(RunStatus.FINISHED)


@held()
def _close(status: int, error: str | None = None) -> None:
    try:
        if error:
            mlflow.set_tag("error", error[:MAX_TAG_CHARS])
    finally:
        mlflow.end_run(RunStatus.to_string(status))


class Recorder:
    """Records one open MLflow run: what `run()` hands it goes to the store."""

    # Each record is written whole: Ctrl-C waits for the end of the write (see interrupts).
    @held()
    def params(self, params: Mapping[str, Any]) -> None:
        mlflow.log_params(dict(params))

    @held()
    def metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    @held()
    def files(self, paths: Iterable[Path], folder: str | None = None) -> None:
        for path in paths:
            mlflow.log_artifact(str(path), artifact_path=folder)

    @held()
    def folder(self, local_dir: Path, folder: str) -> None:
        if local_dir.is_dir():
            mlflow.log_artifacts(str(local_dir), folder)

    @held()
    def keras_model(self, model: keras.Model, input_example: np.ndarray) -> str | None:
        return log_keras_model(model, input_example)

    def callbacks(self) -> list[keras.callbacks.Callback]:
        return [EpochMetricsLogger()]


class NullRecorder(Recorder):
    """Stands in for a run when `tracking.enabled=false`: records nothing."""

    def params(self, params: Mapping[str, Any]) -> None:
        pass

    def metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def files(self, paths: Iterable[Path], folder: str | None = None) -> None:
        pass

    def folder(self, local_dir: Path, folder: str) -> None:
        pass

    def keras_model(self, model: keras.Model, input_example: np.ndarray) -> str | None:
        return None

    def callbacks(self) -> list[keras.callbacks.Callback]:
        return []


@contextmanager
def open_run(
    experiment_id: str | None,
    run_name: str,
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
) -> Iterator[Recorder]:
    """A Recorder for a new run in `experiment_id`, or a NullRecorder when that is None."""
    if experiment_id is None:
        yield NullRecorder()
        return
    with start_run(experiment_id, run_name, tags, parent_run_id) as run_id:
        log.info("MLflow run %s (%s) in %s", run_id, run_name, mlflow.get_tracking_uri())
        yield Recorder()


class _KerasFlavor:
    """`mlflow.keras` with its `save_model` given the model folder it expects to exist.

    MLflow's Keras flavour writes the input example before it creates the folder when called
    from `log_model` (mlflow/mlflow#16183), so `mlflow.keras.log_model(..., input_example=...)`
    fails; this is the same `Model.log` path with that one folder made first.
    """

    @staticmethod
    def save_model(path: str, **kwargs: Any) -> None:
        kwargs.pop("validate_serving_input", None)  # read by Model.log, not by save_model
        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(model=kwargs.pop("model"), path=path, **kwargs)


def log_keras_model(model: keras.Model, input_example: np.ndarray) -> str:
    """Log the model with MLflow's Keras flavour (`.keras` format), signature and input example.

    Returns:
        The model's URI, loadable with `mlflow.keras.load_model`.
    """
    signature = infer_signature(input_example, model.predict(input_example, verbose=0))
    # Naming the requirements skips MLflow's inference of them, which loads the model again in
    # a subprocess (about 5 s); the keras flavour's own list plus the backend is what it needs.
    requirements = [*mlflow.keras.get_default_pip_requirements(), f"tensorflow=={tf.__version__}"]
    # MLflow checks the input example by predicting it with Keras' progress bar on stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        info = Model.log(
            artifact_path=None,
            name="model",
            flavor=_KerasFlavor,
            flavor_name="mlflow.keras",
            model=model,
            signature=signature,
            input_example=input_example,
            pip_requirements=requirements,
            # MLflow would load the model once more to check the example; the tests check
            # that the logged model loads and predicts.
            validate_serving_input=False,
        )
    return info.model_uri


class EpochMetricsLogger(keras.callbacks.Callback):
    """Logs Keras' epoch logs (loss, accuracy, val_loss, val_accuracy) with step = epoch number.

    One batched call per epoch, synchronous: a few milliseconds, and each finished epoch is in
    the store before the next starts. (MLflow's asynchronous queue costs about a second to
    shut down at the end of a run, more than all the epochs' calls together.)
    """

    def on_epoch_end(self, epoch, logs=None):
        Recorder().metrics(logs or {}, step=epoch + 1)

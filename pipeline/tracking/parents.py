"""A sweep's parent run, made and closed outside any active run, and written to by id."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pipeline.config.schema import TrackingConfig
from pipeline.errors import TrackingError
from pipeline.tracking.interrupts import held
from pipeline.tracking.store import connect_uri, resolve_uri, setup, store_ready


def create_parent_run(
    experiment_name: str, tracking_uri: str | None, run_name: str, tags: Mapping[str, str]
) -> str:
    """Create a sweep's parent run (left RUNNING until :func:`end_parent_run`); return its id."""
    cfg = TrackingConfig(uri=tracking_uri, experiment=experiment_name)
    experiment_id = setup(cfg, experiment_name)
    run_name, tags = store_ready(run_name, tags)
    with held():
        run = MlflowClient().create_run(experiment_id, run_name=run_name, tags=tags)
    return run.info.run_id


def end_parent_run(tracking_uri: str | None, run_id: str, status: str) -> None:
    mlflow.set_tracking_uri(connect_uri(resolve_uri(tracking_uri)))
    client = MlflowClient()
    if client.get_run(run_id).info.status == "RUNNING":
        with held():
            client.set_terminated(run_id, status)


def parent_experiment_after_setup(cfg: TrackingConfig, parent_run_id: str) -> str:
    """Point MLflow at the configured store; return the experiment of the sweep's parent run.

    A sweep's children share their parent's experiment, so the sweep reads as one in the UI.
    """
    mlflow.set_tracking_uri(connect_uri(resolve_uri(cfg.uri)))
    try:
        return MlflowClient().get_run(parent_run_id).info.experiment_id
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"sweep parent run {parent_run_id}: {exc.message}") from exc


def log_to_run(
    run_id: str,
    params: Mapping[str, Any] = {},
    metrics: Mapping[str, float] = {},
    tags: Mapping[str, str] = {},
) -> None:
    """Log params, metrics and tags to a run that need not be active (a sweep's parent)."""
    now = int(time.time() * 1000)
    with held():
        MlflowClient().log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )


def log_files(paths: Mapping[str, Path], run_id: str, artifact_path: str) -> None:
    """Log local files to a run that need not be active (a sweep's parent)."""
    client = MlflowClient()
    for path in paths.values():
        with held():
            client.log_artifact(run_id, str(path), artifact_path)

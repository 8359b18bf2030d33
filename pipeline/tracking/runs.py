"""Runs read back from the store, for comparisons."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from pipeline.errors import TrackingError
from pipeline.tracking.store import connect_uri, resolve_uri

CURVE_METRICS = ("accuracy", "loss", "val_accuracy", "val_loss")


@dataclass(frozen=True)
class RunRecord:
    """What a comparison needs of one finished run, read back from the store."""

    run_id: str
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    curves: dict[str, tuple[float, ...]]


def _record(client: MlflowClient, run: Any) -> RunRecord:
    curves = {}
    for name in CURVE_METRICS:
        if name in run.data.metrics:
            hist = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
            curves[name] = tuple(m.value for m in hist)
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name,
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        curves=curves,
    )


def latest_sweep(tracking_uri: str | None = None) -> str | None:
    """The id of the most recently started sweep parent run in the store, or None."""
    mlflow.set_tracking_uri(connect_uri(resolve_uri(tracking_uri)))
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments, "tags.sweep = 'true'", order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None


def fetch_runs(
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    experiment: str | None = None,
) -> list[RunRecord]:
    """Finished runs of a sweep (its children) or of an experiment (sweep parents left out).

    Raises:
        TrackingError: the parent run or the experiment does not exist.
    """
    uri = resolve_uri(tracking_uri)
    mlflow.set_tracking_uri(connect_uri(uri))
    client = MlflowClient()
    filters = ["attributes.status = 'FINISHED'"]
    if parent_run_id is not None:
        try:
            experiment_ids = [client.get_run(parent_run_id).info.experiment_id]
        except mlflow.exceptions.MlflowException as exc:
            raise TrackingError(f"no run {parent_run_id} in {uri}") from exc
        filters.append(f"tags.mlflow.parentRunId = '{parent_run_id}'")
    else:
        found = client.get_experiment_by_name(experiment or "")
        if found is None:
            raise TrackingError(f"no experiment named {experiment!r} in {uri}")
        experiment_ids = [found.experiment_id]
    runs = client.search_runs(experiment_ids, " and ".join(filters), max_results=10000)
    return [_record(client, r) for r in runs if r.data.tags.get("sweep") != "true"]


def unfinished_children(tracking_uri: str | None, parent_run_id: str) -> int:
    """How many of a sweep's child runs ended FAILED or KILLED (or are still RUNNING)."""
    mlflow.set_tracking_uri(connect_uri(resolve_uri(tracking_uri)))
    client = MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs(
        [experiment_id],
        f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status != 'FINISHED'",
        max_results=10000,
    )
    return len(runs)


def prediction_loader(tracking_uri: str | None):
    """A function giving a run's (predicted, true) test labels from its `predictions.npz`, or
    None where the run has none (runs recorded before it was logged)."""
    uri = resolve_uri(tracking_uri)

    def load(record: RunRecord) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = mlflow.artifacts.download_artifacts(
                    run_id=record.run_id,
                    artifact_path="predictions.npz",
                    dst_path=tmp,
                    tracking_uri=connect_uri(uri),
                )
                with np.load(path, allow_pickle=False) as saved:
                    return saved["predictions"], saved["labels"]
        except (mlflow.exceptions.MlflowException, OSError, KeyError):
            return None

    return load

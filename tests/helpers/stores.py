"""Tracking stores: creating one, and reading its runs and artifacts back."""

from __future__ import annotations

import os


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

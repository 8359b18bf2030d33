"""Where to see runs in MLflow's UI: the URLs of an experiment's runs view and of a run."""

from __future__ import annotations

# The runs table of an experiment, not MLflow 3's GenAI overview.
RUNS_VIEW = "#/experiments/{experiment}/runs?workflowType=machine_learning"
RUN_VIEW = "#/experiments/{experiment}/runs/{run}"
UI_DEFAULT = "http://127.0.0.1:5000"


def ui_base(store_uri: str) -> str:
    """The UI's address for a store: a tracking server is its own UI; a local store is seen
    through `make ui`."""
    if store_uri.startswith(("http://", "https://")):
        return store_uri.rstrip("/")
    return UI_DEFAULT


def runs_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/{RUNS_VIEW.format(experiment=experiment_id)}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/{RUN_VIEW.format(experiment=experiment_id, run=run_id)}"

"""Where to see runs in MLflow's UI: its URLs, and `make ui`'s first lines.

    python -m pipeline.tracking.links http://127.0.0.1:5000

prints the runs view of each experiment in the store ($MLFLOW_TRACKING_URI, else the project's).
"""

from __future__ import annotations

import sys

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


def main(argv: list[str]) -> int:
    import logging

    from mlflow import MlflowClient

    from pipeline.tracking.store import connect_uri, resolve_uri

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    base = argv[0] if argv else UI_DEFAULT
    store = resolve_uri(None)
    experiments = [
        e for e in MlflowClient(connect_uri(store)).search_experiments() if e.name != "Default"
    ]
    if not experiments:
        print(f"no runs yet in {store}: `make run` records one")
    for experiment in experiments:
        print(f"{experiment.name}: {runs_url(base, experiment.experiment_id)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

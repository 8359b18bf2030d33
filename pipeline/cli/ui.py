"""Where to see runs in MLflow's UI: its URLs, and `make ui`'s first lines.

    python -m pipeline.cli.ui http://127.0.0.1:5000

prints the runs view of each experiment in the store ($MLFLOW_TRACKING_URI, else the project's).
"""

from __future__ import annotations

import sys

from pipeline.tracking.links import UI_DEFAULT, runs_url


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

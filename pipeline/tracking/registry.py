"""The registered champion: one registered model per dataset (`mnist-classifier`), a new version
for each run registered, and the alias `champion` on the best version validated on the same data.

A version is tagged with its run's configuration and metrics, and with the metric it was chosen
by (`selection_metric`: validation accuracy, or test accuracy for a run without validation) and
the digest of the data that metric was measured on (`selection_data`). The alias moves to a new
version only when its metric beats the champion's on the same data; otherwise it stays, and
`register` says why.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping

from pipeline.errors import first_line

log = logging.getLogger(__name__)

ALIAS = "champion"
# The run tags copied to each version: what it is, and what it was validated on.
VERSION_TAGS = ("config_key", "model", "optimizer", "dataset", "selection_data")
VERSION_PARAMS = ("seed", "trainer.epochs", "optimizer.learning_rate", "trainer.batch_size")


def model_name(dataset: str) -> str:
    """The registered model of a dataset: `mnist-classifier`, `fashion-mnist-classifier`."""
    return f"{dataset.replace('_', '-')}-classifier"


def selection(metrics: Mapping[str, float]) -> tuple[str, float] | None:
    """The metric a run is chosen by, and its value: validation accuracy, else test accuracy."""
    for name in ("val_accuracy", "test_accuracy"):
        if name in metrics:
            return name, float(metrics[name])
    return None


def best_run(records) -> object | None:
    """The finished run with the highest selection metric (RunRecords of a sweep's children)."""
    scored = [(selection(r.metrics), r) for r in records if selection(r.metrics) is not None]
    if not scored:
        return None
    return max(scored, key=lambda item: item[0][1])[1]


def register_run(
    run_id: str,
    name: str,
    dataset: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    params: Mapping[str, str],
) -> str | None:
    """Register one run (see `register`) and log what became of it; a failure is logged, not
    raised, for the run (or sweep) stands without its registration.

    Args:
        name: the run's name, for the log line.

    Returns:
        The line `register` returns, or None when registering failed.
    """
    try:
        message = register(run_id, dataset, metrics, tags, params)
    except Exception as exc:  # the run is recorded; only its registration failed
        log.warning("registering %s failed: %s: %s", name, type(exc).__name__, first_line(exc))
        return None
    log.info("run %s: %s", name, message)  # the run first: the line may name another version
    return message


def register_best(records) -> list[str]:
    """Register the best finished run of each dataset among `records` (RunRecords of a sweep's
    children), each through `register_run`.

    Returns:
        The line of each registration that succeeded.
    """
    messages = []
    for dataset in sorted({r.tags.get("dataset", "") for r in records}):
        best = best_run([r for r in records if r.tags.get("dataset") == dataset])
        if best is None:
            continue
        message = register_run(
            best.run_id, best.name, dataset, best.metrics, best.tags, best.params
        )
        if message is not None:
            messages.append(message)
    return messages


def register(
    run_id: str,
    dataset: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    params: Mapping[str, str],
) -> str:
    """Register the model the run logged as a new version of its dataset's registered model,
    and move the alias `champion` to it if it beats the champion on the same data.

    Returns:
        One line saying what was registered and where the alias is, and why.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    name = model_name(dataset)
    chosen = selection(metrics)
    if chosen is None:
        return f"run {run_id} has no accuracy to be chosen by: not registered"
    metric, value = chosen
    version_tags = {k: str(tags[k]) for k in VERSION_TAGS if k in tags}
    version_tags |= {k: str(params[k]) for k in VERSION_PARAMS if k in params}
    version_tags |= {
        k: f"{float(metrics[k]):.6f}" for k in ("val_accuracy", "test_accuracy") if k in metrics
    }
    version_tags |= {"selection_metric": metric, "run_id": run_id}
    # MLflow prints "Successfully registered…" and notes that runs:/ resolves to the logged
    # model; the one line returned here says what happened.
    quiet = logging.getLogger("mlflow")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            version = mlflow.register_model(f"runs:/{run_id}/model", name, tags=version_tags)
    finally:
        quiet.setLevel(level)
    try:
        champion = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        champion = None
    new = f"{name} version {version.version} ({metric} {value:.4f})"
    if champion is None:
        client.set_registered_model_alias(name, ALIAS, version.version)
        return f"registered {new}: the first {ALIAS}"
    old = f"version {champion.version}"
    same_data = champion.tags.get("selection_data") == version_tags.get("selection_data")
    if champion.tags.get("selection_metric") != metric or not same_data:
        return (
            f"registered {new}; {ALIAS} stays {old}: it was measured on other data "
            f"({champion.tags.get('selection_metric')} on {champion.tags.get('selection_data')}, "
            f"this one {metric} on {version_tags.get('selection_data')}), so the two do not compare"
        )
    best = float(champion.tags.get(metric, "nan"))
    if value > best:
        client.set_registered_model_alias(name, ALIAS, version.version)
        return f"registered {new}: the new {ALIAS}, ahead of {old} ({metric} {best:.4f})"
    return f"registered {new}; {ALIAS} stays {old}, whose {metric} {best:.4f} is as high or higher"

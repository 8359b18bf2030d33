"""Everything the pipeline says to MLflow; the only module that imports mlflow."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.models import Model, infer_signature
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from pipeline._tf import keras, tf
from pipeline.config import TrackingConfig
from pipeline.errors import TrackingError
from pipeline.interrupts import held

log = logging.getLogger(__name__)
# MLflow's INFO lines (creating tables, engine options) say nothing a user acts on.
logging.getLogger("mlflow").setLevel(logging.WARNING)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_TAG_CHARS = 5000
# MLflow's stores hold run names of up to 250 characters (PostgreSQL enforces it; SQLite not).
MAX_RUN_NAME_CHARS = 250
# Parallel jobs share one SQLite file: wait for its lock rather than fail "database is locked".
SQLITE_BUSY_TIMEOUT_S = 60
PROBE_TIMEOUT_S = 5
# MLflow's own HTTP client retries for minutes by default; a dead server should show in seconds.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def default_uri() -> str:
    """`sqlite:///<project root>/mlflow.db`, absolute so every working directory shares it."""
    return f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def resolve_uri(uri: str | None) -> str:
    """`tracking.uri` if set, else $MLFLOW_TRACKING_URI, else the project's SQLite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def _connect_uri(uri: str) -> str:
    """The URI MLflow connects with: SQLite gets a busy timeout (SQLAlchemy passes it on)."""
    if _sqlite_path(uri) is None or "timeout=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}timeout={SQLITE_BUSY_TIMEOUT_S}"


def check_store(uri: str) -> None:
    """Fail in seconds, naming the store, when it cannot be reached or written.

    Raises:
        TrackingError: an HTTP server that does not answer, or a SQLite file whose folder
            cannot be created or written.
    """
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S):
                pass
        except urllib.error.HTTPError:
            pass  # it answered: a server that is up but has no /health is still up
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it, or point "
                "tracking.uri / MLFLOW_TRACKING_URI elsewhere"
            ) from exc
    db = _sqlite_path(uri)
    if db is not None:
        folder = db.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(
                f"cannot create the tracking store's folder {folder}: {exc}"
            ) from exc
        if not os.access(folder, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingError(f"the tracking store {db} is not writable")


def _artifact_location(cfg: TrackingConfig, uri: str, experiment: str) -> str | None:
    if cfg.artifact_location:
        return cfg.artifact_location
    db = _sqlite_path(uri)
    if db is not None:
        # MLflow would put artifacts under ./mlruns of whatever directory the first run
        # started in; keep them beside the database instead.
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment)
        return (db.parent / "mlruns" / safe).as_uri()
    return None


def setup(cfg: TrackingConfig, default_experiment: str) -> str:
    """Point MLflow at the configured store and return the experiment's id, creating it if new."""
    uri = resolve_uri(cfg.uri)
    check_store(uri)
    mlflow.set_tracking_uri(_connect_uri(uri))
    name = cfg.experiment or default_experiment
    try:
        client = MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=_artifact_location(cfg, uri, name))
    except (mlflow.exceptions.MlflowException, SQLAlchemyError, OSError) as exc:
        created = _created_meanwhile(name)
        if created is not None:
            return created
        message = getattr(exc, "message", None) or str(exc).splitlines()[0]
        raise TrackingError(f"tracking store {uri} (tracking.uri): {message}") from exc


def _created_meanwhile(name: str) -> str | None:
    """The id of experiment `name` if a parallel job created it after our look-up failed."""
    try:
        experiment = MlflowClient().get_experiment_by_name(name)
    except (mlflow.exceptions.MlflowException, SQLAlchemyError, OSError):
        return None
    return experiment.experiment_id if experiment is not None else None


def git_commit() -> str | None:
    """The project's current commit, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _capped(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with an ellipsis (long overrides make long names)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _store_ready(run_name: str, tags: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    return _capped(run_name.strip(), MAX_RUN_NAME_CHARS), {
        k: _capped(str(v), MAX_TAG_CHARS) for k, v in tags.items()
    }


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
    run_name, tags = _store_ready(run_name, tags)
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


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept as one value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


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


def create_parent_run(
    experiment_name: str, tracking_uri: str | None, run_name: str, tags: Mapping[str, str]
) -> str:
    """Create a sweep's parent run (left RUNNING until :func:`end_parent_run`); return its id."""
    cfg = TrackingConfig(uri=tracking_uri, experiment=experiment_name)
    experiment_id = setup(cfg, experiment_name)
    run_name, tags = _store_ready(run_name, tags)
    with held():
        run = MlflowClient().create_run(experiment_id, run_name=run_name, tags=tags)
    return run.info.run_id


def end_parent_run(tracking_uri: str | None, run_id: str, status: str) -> None:
    mlflow.set_tracking_uri(_connect_uri(resolve_uri(tracking_uri)))
    client = MlflowClient()
    if client.get_run(run_id).info.status == "RUNNING":
        with held():
            client.set_terminated(run_id, status)


def parent_experiment_after_setup(cfg: TrackingConfig, parent_run_id: str) -> str:
    """Point MLflow at the configured store; return the experiment of the sweep's parent run.

    A sweep's children share their parent's experiment, so the sweep reads as one in the UI.
    """
    mlflow.set_tracking_uri(_connect_uri(resolve_uri(cfg.uri)))
    try:
        return MlflowClient().get_run(parent_run_id).info.experiment_id
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"sweep parent run {parent_run_id}: {exc.message}") from exc


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
    mlflow.set_tracking_uri(_connect_uri(resolve_uri(tracking_uri)))
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
    mlflow.set_tracking_uri(_connect_uri(uri))
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
    mlflow.set_tracking_uri(_connect_uri(resolve_uri(tracking_uri)))
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
                    tracking_uri=_connect_uri(uri),
                )
                with np.load(path, allow_pickle=False) as saved:
                    return saved["predictions"], saved["labels"]
        except (mlflow.exceptions.MlflowException, OSError, KeyError):
            return None

    return load


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

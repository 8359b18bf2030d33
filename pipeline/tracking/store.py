"""The tracking store: its URI, whether it answers and can be written, and the experiment.

Importing this module does not import MLflow (the training process checks the store with it);
`setup` imports it when called.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from pipeline.config.schema import TrackingConfig
from pipeline.errors import TrackingError

log = logging.getLogger(__name__)
# MLflow's INFO lines (creating tables, engine options) say nothing a user acts on.
logging.getLogger("mlflow").setLevel(logging.WARNING)

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
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
    """`tracking.uri` if set, else $MLFLOW_TRACKING_URI, else the project's SQLite store; a
    relative SQLite path (`sqlite:///runs/mlflow.db`) is taken from the working directory, as a
    shell would, and made absolute, so that every process of a job or sweep opens one file."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    db = sqlite_path(uri)
    if db is None or db.is_absolute() or str(db) in ("", ":memory:"):
        return uri
    query = uri.removeprefix("sqlite:///")[len(str(db)) :]
    return f"sqlite:///{Path.cwd() / db}{query}"


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def connect_uri(uri: str) -> str:
    """The URI MLflow connects with: SQLite gets a busy timeout (SQLAlchemy passes it on)."""
    if sqlite_path(uri) is None or "timeout=" in uri:
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
    db = sqlite_path(uri)
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
        _check_sqlite(db)


def _check_sqlite(db: Path) -> None:
    """An existing store opens as SQLite; for a new one, a file can be made beside it (and is
    removed: a mistake later leaves no empty store behind).

    Raises:
        TrackingError: names the file and why.
    """
    import sqlite3

    try:
        if db.exists():
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=rw", uri=True)) as con:
                con.execute("select count(*) from sqlite_master").fetchone()
        else:
            with tempfile.NamedTemporaryFile(dir=db.parent, prefix=f".{db.name}."):
                pass
    except (sqlite3.Error, OSError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise TrackingError(
            f"the tracking store {db} cannot be opened ({why}): point tracking.uri / "
            "MLFLOW_TRACKING_URI at a SQLite file you can write"
        ) from None


def _artifact_location(cfg: TrackingConfig, uri: str, experiment: str) -> str | None:
    if cfg.artifact_location:
        return cfg.artifact_location
    db = sqlite_path(uri)
    if db is not None:
        # MLflow would put artifacts under ./mlruns of whatever directory the first run
        # started in; keep them beside the database instead.
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment)
        return (db.parent / "mlruns" / safe).as_uri()
    return None


def setup(cfg: TrackingConfig, default_experiment: str) -> str:
    """Point MLflow at the configured store and return the experiment's id, creating it if new."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from sqlalchemy.exc import SQLAlchemyError

    uri = resolve_uri(cfg.uri)
    check_store(uri)
    mlflow.set_tracking_uri(connect_uri(uri))
    name = cfg.experiment or default_experiment
    # Two processes opening a new SQLite store at once would both create its tables, and one
    # fails half-way ("table … already exists", "No such index"): they take turns.
    with _sqlite_turn(uri):
        try:
            client = MlflowClient()
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            location = _artifact_location(cfg, uri, name)
            return client.create_experiment(name, artifact_location=location)
        except (mlflow.exceptions.MlflowException, SQLAlchemyError, OSError) as exc:
            created = _created_meanwhile(name)
            if created is not None:
                return created
            message = getattr(exc, "message", None) or str(exc).splitlines()[0]
            raise TrackingError(f"tracking store {uri} (tracking.uri): {message}") from exc


@contextlib.contextmanager
def _sqlite_turn(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on the SQLite store's folder (none for other stores)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    fd = os.open(db.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # which releases the lock


def _created_meanwhile(name: str) -> str | None:
    """The id of experiment `name` if a parallel job created it after our look-up failed."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from sqlalchemy.exc import SQLAlchemyError

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


def store_ready(run_name: str, tags: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    return _capped(run_name.strip(), MAX_RUN_NAME_CHARS), {
        k: _capped(str(v), MAX_TAG_CHARS) for k, v in tags.items()
    }

"""A team deployment, end to end: an MLflow tracking server on PostgreSQL, proxying artifacts.

A private PostgreSQL cluster (initdb, pg_ctl from Debian's `postgresql` package) and an
`mlflow server` on it are started on free loopback ports; a two-job sweep then records through
the server, and the runs are read back through it, from the database and from the artifacts
folder. Set PIPELINE_PG_BINDIR to a folder to look for initdb and pg_ctl only there (an empty
folder shows the skip).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.cli import SILENT, run_main
from tests.helpers.data import tiny_arrays
from tests.helpers.services import free_port, mlflow_service, require_system, tail
from tests.helpers.stores import sweep_runs

pytestmark = pytest.mark.system

DB_USER = "mlflow"
DB_NAME = "mlflow"
START_TIMEOUT_S = 180  # the server creates and migrates its tables on first start


def postgres_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: $PIPELINE_PG_BINDIR if set, else PATH, else
    Debian's /usr/lib/postgresql/<version>/bin (newest first)."""
    override = os.environ.get("PIPELINE_PG_BINDIR")
    if override is not None:
        candidates = [Path(override)]
    else:
        on_path = shutil.which("initdb")
        candidates = [Path(on_path).parent] if on_path else []
        debian = Path("/usr/lib/postgresql").glob("*/bin")
        candidates += sorted(debian, key=lambda p: _version(p.parent.name), reverse=True)
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return folder
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


@dataclass
class Postgres:
    bindir: Path
    home: Path
    port: int
    as_postgres: list[str]  # prefix that runs a server program as a non-root user

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    @property
    def uri(self) -> str:
        """libpq's URI, as psql and psycopg2.connect take it."""
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def store_uri(self) -> str:
        """The backend store URI for MLflow: SQLAlchemy >= 2.1 reads a bare `postgresql://`
        as psycopg 3, so name the driver that psycopg2-binary provides."""
        return self.uri.replace("postgresql://", "postgresql+psycopg2://", 1)

    def pg_ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.as_postgres, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def query(self, sql: str) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(self.uri) as conn, conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        conn.close()
        return rows


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on a free 127.0.0.1 port, with an empty `mlflow` database."""
    bindir = postgres_bindir()
    require_system(bindir, "PostgreSQL (initdb, pg_ctl)")
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 (pip install psycopg2-binary)")
    root = os.geteuid() == 0
    if root:
        # initdb and postgres refuse to run as root: run them as Debian's `postgres` user, in a
        # folder it can reach (pytest's temporary folders are private to root).
        require_system(shutil.which("runuser"), "runuser (util-linux)")
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            require_system(None, "the `postgres` user (Debian's postgresql package)")
        home = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
        os.chown(home, pw.pw_uid, pw.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    else:
        home = tmp_path_factory.mktemp("postgres")
        as_postgres = []
    pg = Postgres(bindir=bindir, home=home, port=free_port(), as_postgres=as_postgres)
    try:
        init = subprocess.run(
            [
                *as_postgres,
                str(bindir / "initdb"),
                "-D",
                str(pg.data),
                "--auth=trust",
                f"--username={DB_USER}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=home,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert init.returncode == 0, f"initdb failed:\n{init.stdout[-3000:]}{init.stderr[-3000:]}"
        # TCP on loopback only; the Unix socket goes into our folder, not /var/run/postgresql.
        options = f"-h 127.0.0.1 -p {pg.port} -k {home} -c fsync=off"
        start = pg.pg_ctl("-l", str(pg.log), "-w", "-t", "120", "-o", options, "start")
        assert start.returncode == 0, (
            f"pg_ctl start failed:\n{start.stdout}{start.stderr}\n--- {pg.log}:\n{tail(pg.log)}"
        )
        conn = psycopg2.connect(
            host="127.0.0.1", port=pg.port, user=DB_USER, dbname="postgres", connect_timeout=10
        )
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DB_NAME}")
        conn.close()
        yield pg
    finally:
        if (pg.data / "postmaster.pid").exists():
            stop = pg.pg_ctl("-w", "-t", "60", "-m", "fast", "stop")
            if stop.returncode != 0:
                print(f"pg_ctl stop failed:\n{stop.stdout}{stop.stderr}", file=sys.stderr)
        if root:
            shutil.rmtree(home, ignore_errors=True)


@dataclass
class Server:
    uri: str
    artifacts: Path
    log: Path


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`mlflow server` on the PostgreSQL database, proxying artifacts into a local folder."""
    home = tmp_path_factory.mktemp("mlflow-server")
    artifacts = home / "artifacts"
    artifacts.mkdir()
    args = ["--backend-store-uri", postgres.store_uri, "--artifacts-destination", str(artifacts)]
    # No background job runner (seven huey consumers): nothing here needs it.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with mlflow_service("server", args, home, START_TIMEOUT_S, env) as (url, log):
        yield Server(uri=url, artifacts=artifacts, log=log)


def test_sweep_records_through_a_server_on_postgresql(
    mlflow_server: Server,
    postgres: Postgres,
    tiny_data: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = mlflow_server.uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # instead of conftest's per-test SQLite file
    code = run_main(
        [
            "-m",
            "tracking=server",
            f"tracking.uri={uri}",
            "model=linear,ann",
            *tiny_data,
            "trainer.epochs=1",
            SILENT,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]
    )
    said = f"--- server log:\n{tail(mlflow_server.log)}"
    assert code == 0, said

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([experiment.experiment_id])
    # Hydra only warns when the sweep callback fails, so a parent run the store refused shows
    # here, with the reason in the sweep's stderr.
    parent, children = sweep_runs(uri)
    assert parent.info.status == "FINISHED", said
    assert [c.info.run_name for c in children] == ["ann-sgd epochs=1", "linear-sgd epochs=1"]
    assert any(a.path == "comparison" for a in client.list_artifacts(parent.info.run_id))

    images = tiny_arrays(n_train=1, n_test=7)["test_images"]
    for child in children:
        run_id = child.info.run_id
        assert child.info.status == "FINISHED", child.info
        assert child.info.experiment_id == experiment.experiment_id
        assert "test_accuracy" in child.data.metrics
        assert len(client.get_metric_history(run_id, "loss")) == 1  # one epoch
        # Proxied artifacts: the client talks to the server, which writes the folder.
        assert child.info.artifact_uri.startswith("mlflow-artifacts:"), child.info.artifact_uri
        listed = {a.path for a in client.list_artifacts(run_id)}
        expected = {"config.yaml", "weights.npz", "metrics.json", "model_summary.txt", "plots"}
        assert expected | {"report.html", ".hydra"} <= listed, listed
        assert any(a.path.endswith(".png") for a in client.list_artifacts(run_id, "plots"))
        got = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path="weights.npz",
                dst_path=str(tmp_path / run_id),
                tracking_uri=uri,
            )
        )
        stored = [p for p in mlflow_server.artifacts.rglob("weights.npz") if run_id in p.parts]
        assert len(stored) == 1, sorted(mlflow_server.artifacts.rglob("*"))[:50]
        assert got.read_bytes() == stored[0].read_bytes()
        with np.load(got, allow_pickle=False) as weights:
            assert weights["dense/kernel"].shape[1] == 10

        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            model = mlflow.keras.load_model(f"runs:/{run_id}/model")
        finally:
            mlflow.set_tracking_uri(previous)
        assert model.predict(images, verbose=0).shape == (len(images), 10)

    # MLflow 3 keeps each model as a logged model (models:/m-…, which runs:/<id>/model
    # resolves to), also behind the proxy, so also in the destination folder.
    assert len(list(mlflow_server.artifacts.rglob("model.keras"))) == len(children)
    # The sweep's best child is the champion in the server's registry (rows in PostgreSQL).
    best = max(children, key=lambda c: c.data.metrics["val_accuracy"])
    champion = client.get_model_version_by_alias("mnist-classifier", "champion")
    assert champion.run_id == best.info.run_id
    assert champion.tags["selection_data"] == best.data.tags["selection_data"]
    aliases = postgres.query("SELECT name, alias, version FROM registered_model_aliases")
    assert aliases == [("mnist-classifier", "champion", int(champion.version))], aliases
    # The runs are rows in PostgreSQL, not in some fallback store.
    rows = postgres.query("SELECT run_uuid, status, experiment_id FROM runs")
    assert {r[0] for r in rows} == {r.info.run_id for r in runs}, rows
    assert {r[1] for r in rows} == {"FINISHED"}
    assert {str(r[2]) for r in rows} == {experiment.experiment_id}

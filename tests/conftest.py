"""Fixtures only (the helpers are in tests/helpers/): a private MLflow store per test, tiny
IDX data, the real datasets, Chromium for the browser tests."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.data import real_data_dir, tiny_overrides, write_tiny_dataset
from tests.helpers.services import chromium_path, require_system


@pytest.fixture
def real_data() -> Path:
    found = real_data_dir()
    if found is None:
        pytest.skip("real MNIST files not found: set PIPELINE_DATA_DIR (see README)")
    return found


@pytest.fixture
def tiny_data(tmp_path: Path) -> list[str]:
    """Overrides pointing the mnist config at tiny IDX files written for this test."""
    root = tmp_path / "data"
    return tiny_overrides(root, write_tiny_dataset(root))


@pytest.fixture(scope="session", autouse=True)
def absl_handler_keeps_pytests_streams():
    """absl's log handler (TensorFlow brings it) closes its stream on close unless that stream
    is sys.stderr at the time. Under pytest, sys.stderr changes with each test's capture, and
    Hydra's logging set-up in an in-process sweep closes every handler: the handler would
    close pytest's own capture stream. Closing it here only flushes, as logging's own does."""
    from absl.logging import PythonHandler

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(PythonHandler, "close", logging.StreamHandler.close)
        yield


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables made, and nothing in it.

    Making the tables of a new store takes MLflow about 1.5 s; a copy of this file takes none.
    """
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture(autouse=True)
def isolated_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path):
    """Each test gets its own SQLite store (`tmp_path/mlflow.db`, a copy of `empty_store`) and
    dataset cache; no run may be left active. A test that must see the store untouched points
    MLFLOW_TRACKING_URI at a file of its own."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    import mlflow

    # The URI an earlier test pointed this process's MLflow at would outlive the variable.
    mlflow.set_tracking_uri(uri)
    yield uri

    active = mlflow.active_run()
    if active is not None:
        mlflow.end_run()
        pytest.fail(f"MLflow run {active.info.run_id} was left active")
    from pipeline.training.backend import keras

    keras.backend.clear_session(free_memory=False)  # gc.collect() would add ~1 s a test


@pytest.fixture
def chromium() -> str:
    found = chromium_path()
    require_system(found, "Chromium (Debian's `chromium` package)")
    require_system(
        importlib.util.find_spec("playwright"), "the `playwright` Python package (the dev extra)"
    )
    return found


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("PIPELINE_UI_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder

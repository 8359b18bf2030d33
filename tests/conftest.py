"""Shared fixtures: a private MLflow store per test, tiny IDX data, config composition."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pipeline.config import register

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = str(PROJECT_ROOT / "conf")
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "datasets"

register()


def real_data_dir() -> Path | None:
    """The folder holding the real mnist/ and fashion-mnist/ IDX files, if this machine has it."""
    env = os.environ.get("PIPELINE_DATA_DIR")
    for candidate in (Path(env) if env else None, SHARED_DATA):
        if candidate is not None and (candidate / "mnist").is_dir():
            return candidate.resolve()
    return None


@pytest.fixture
def real_data() -> Path:
    found = real_data_dir()
    if found is None:
        pytest.skip("real MNIST files not found: set PIPELINE_DATA_DIR (see README)")
    return found


def require_system(found: object, what: str) -> None:
    """Skip a `system` test whose program is missing, or fail it where CI requires them all
    (PIPELINE_REQUIRE_SYSTEM=1, set by .ci/run after installing them)."""
    if found:
        return
    message = f"{what} is not installed (.ci/run installs it from Debian's packages)"
    if os.environ.get("PIPELINE_REQUIRE_SYSTEM") == "1":
        pytest.fail(message)
    pytest.skip(message)


def cli(args, env=None, timeout=300, cwd=PROJECT_ROOT) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` as a user runs it, in the test's environment plus `env`."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(out, *names):
    """Exit 1 with one `error:` line on stderr naming each of `names`, and no traceback."""
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, out.stderr
    assert errors[0].startswith("error: ")
    for name in names:
        assert name in errors[0], (name, errors[0])
    assert "Traceback" not in out.stdout + out.stderr


def runs_in(uri):
    """Every run in the store (none if the store was never created)."""
    from mlflow.tracking import MlflowClient

    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not os.path.exists(path):
        return []
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def make_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the project's config as `python -m pipeline <overrides>` would."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format (magic 0x0000080N, then the dimensions)."""
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> str:
    """Write `array` as a gzip-compressed IDX file; return the SHA-256 of the content."""
    raw = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw))
    return hashlib.sha256(raw).hexdigest()


TINY_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def tiny_arrays(n_train: int = 200, n_test: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """Learnable tiny data: class k is a bright horizontal band at rows 2k..2k+5, plus noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k : 2 * k + 6, :] = 220
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


def tiny_dataset(n_train=100, n_test=30, class_names=tuple("abcdefghij")):
    """A loaded-looking Dataset of tiny_arrays, for stage tests."""
    from pipeline.stages.load import Dataset

    a = tiny_arrays(n_train=n_train, n_test=n_test)
    return Dataset(
        name="tiny",
        train_x=a["train_images"],
        train_y=a["train_labels"],
        test_x=a["test_images"],
        test_y=a["test_labels"],
        class_names=tuple(class_names),
    )


def write_tiny_dataset(root: Path, dirname: str = "mnist", **kwargs) -> dict[str, str]:
    """Write the four tiny IDX files under root/dirname; return role -> SHA-256."""
    arrays = tiny_arrays(**kwargs)
    return {role: write_idx(root / dirname / TINY_FILES[role], arrays[role]) for role in TINY_FILES}


def tiny_overrides(root: Path, digests: dict[str, str]) -> list[str]:
    return [f"dataset.path='{root}'"] + [
        f"dataset.files.{role}.sha256={digest}" for role, digest in digests.items()
    ]


@pytest.fixture
def tiny_data(tmp_path: Path) -> list[str]:
    """Overrides pointing the mnist config at tiny IDX files written for this test."""
    root = tmp_path / "data"
    return tiny_overrides(root, write_tiny_dataset(root))


@pytest.fixture(autouse=True)
def isolated_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each test gets its own SQLite store and dataset cache; no run may be left active."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    yield uri
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        mlflow.end_run()
        pytest.fail(f"MLflow run {active.info.run_id} was left active")
    from pipeline._tf import keras

    keras.backend.clear_session()

"""Data for the tests: tiny IDX files written on the spot, and the real datasets where present."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

from tests.helpers.paths import PROJECT_ROOT

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "datasets"


def real_data_dir() -> Path | None:
    """The folder holding the real mnist/ and fashion-mnist/ IDX files, if this machine has it."""
    env = os.environ.get("PIPELINE_DATA_DIR")
    for candidate in (Path(env) if env else None, SHARED_DATA):
        if candidate is not None and (candidate / "mnist").is_dir():
            return candidate.resolve()
    return None


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
    from pipeline.data.load import Dataset

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
    """The overrides that point the dataset at `root` and pin each file's SHA-256."""
    return [f"dataset.path='{root}'"] + [
        f"dataset.files.{role}.sha256={digest}" for role, digest in digests.items()
    ]

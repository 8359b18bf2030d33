"""The course notes' data, read from the same IDX files as the pipeline (the notes called
keras.datasets.*.load_data(), which downloads them; this machine reads $PIPELINE_DATA_DIR)."""

import gzip
import os
from pathlib import Path

import numpy as np


def _idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_data(dirname: str):
    """((x_train, y_train), (x_test, y_test)) as keras.datasets' load_data() returns them."""
    root = Path(os.environ["PIPELINE_DATA_DIR"]) / dirname
    return (
        (_idx(root / "train-images-idx3-ubyte.gz"), _idx(root / "train-labels-idx1-ubyte.gz")),
        (_idx(root / "t10k-images-idx3-ubyte.gz"), _idx(root / "t10k-labels-idx1-ubyte.gz")),
    )

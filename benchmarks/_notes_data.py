"""What the notes' scripts need around the notes' code: their data, read from the same IDX files
as the pipeline (the notes called keras.datasets.*.load_data(), which downloads them; this
machine reads $PIPELINE_DATA_DIR), the benchmark's settings, and where results go."""

import gzip
import json
import os
from pathlib import Path

import numpy as np

# Printed above and below a benchmark's table after --smoke, whose figures mean nothing.
SMOKE_NOTE = (
    "SMOKE RUN: it checks that the script runs (1 epoch, 2000 images, 1 repeat); its "
    "figures measure nothing. Run without --smoke to measure."
)


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


def bench_start(dirname: str, epochs: int):
    """Apply the benchmark's settings; return (out folder, epochs, data as load_data gives it).

    The notes set no seed; the benchmark gives the same one as the pipeline's (BENCH_SEED=42),
    so that the two accuracies differ by the code, not by the luck of the draw (about 1 point
    on the ANN). Smoke runs (the benchmark's --smoke) set fewer epochs and images.
    """
    from tensorflow import keras

    if os.environ.get("BENCH_SEED"):
        keras.utils.set_random_seed(int(os.environ["BENCH_SEED"]))
    epochs = int(os.environ.get("BENCH_EPOCHS", str(epochs)))
    limit = int(os.environ.get("BENCH_LIMIT", "60000"))
    (x_train, y_train), (x_test, y_test) = load_data(dirname)
    data = ((x_train[:limit], y_train[:limit]), (x_test[:limit], y_test[:limit]))
    return os.environ.get("BENCH_OUT", "."), epochs, data


def bench_result(result: dict) -> None:
    """Write the script's timings and accuracies as JSON to $BENCH_RESULT (else stdout)."""
    with open(os.environ.get("BENCH_RESULT", "/dev/stdout"), "w") as fh:
        json.dump(result, fh)

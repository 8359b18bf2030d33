"""Benchmark: Keras' own "Simple MNIST convnet" example as written vs `model=cnn` in the pipeline.

    python benchmarks/keras_convnet.py                # 3 epochs, 3 repeats of each, ~8 minutes here
    python benchmarks/keras_convnet.py --epochs 15    # the example's own 15 epochs
    python benchmarks/keras_convnet.py --smoke        # 1 epoch, 2000 images: keeps it working
    python benchmarks/keras_convnet.py --precisions float32,mixed_bfloat16   # both precisions

One after the other and repeated, in fresh processes on this machine:
- baseline: the example's code (float32 arrays from /255, one-hot labels, batch 128, Adam, the
  last 10% as validation), its data read from the same IDX files as the pipeline;
- pipeline: `python -m pipeline model=cnn optimizer=adam trainer.batch_size=128
  trainer.validation_split=0.1` with MLflow logging and the report, into a temporary store,
  once per `trainer.precision` in --precisions (float32 unless given).
Prints the fit seconds and the test accuracy of each (median and range) and the ratio of the
medians, and writes them as JSON. Needs PIPELINE_DATA_DIR (the folder with mnist/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _notes_data import SMOKE_NOTE

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def example(epochs: int, limit: int | None) -> dict:
    """Keras' example, layer for layer and setting for setting; its fit seconds and accuracy."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    from _notes_data import load_data

    keras.utils.set_random_seed(42)
    (x_train, y_train), (x_test, y_test) = load_data("mnist")
    if limit:
        x_train, y_train, x_test, y_test = (
            x_train[:limit],
            y_train[:limit],
            x_test[:limit],
            y_test[:limit],
        )
    x_train = np.expand_dims(x_train.astype("float32") / 255, -1)
    x_test = np.expand_dims(x_test.astype("float32") / 255, -1)
    y_train, y_test = (
        keras.utils.to_categorical(y_train, 10),
        keras.utils.to_categorical(y_test, 10),
    )
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    began = time.perf_counter()
    model.fit(x_train, y_train, batch_size=128, epochs=epochs, validation_split=0.1, verbose=0)
    fit_seconds = time.perf_counter() - began
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return {"fit_seconds": fit_seconds, "test_accuracy": float(accuracy)}


def pipeline(epochs: int, limit: int | None, folder: Path, precision: str) -> dict:
    """The same network and settings through `python -m pipeline`, recorded in full."""
    args = [
        f"trainer.precision={precision}",
        "model=cnn",
        "optimizer=adam",
        "trainer.batch_size=128",
        "trainer.validation_split=0.1",
        f"trainer.epochs={epochs}",
        "trainer.verbose=0",
        f"tracking.uri=sqlite:///{folder}/mlflow.db",
        f"hydra.run.dir={folder}/run",
    ] + ([f"dataset.limit={limit}"] if limit else [])
    subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=ROOT, check=True, capture_output=True
    )
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    return {k: metrics[k] for k in ("fit_seconds", "test_accuracy")}


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.4g} ({min(values):.4g} to {max(values):.4g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--precisions", default="float32", help="trainer.precision values, a,b")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "keras_convnet.json")
    parser.add_argument("--example", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.example:  # one run of the baseline, in its own process
        print(json.dumps(example(args.epochs, args.limit)))
        return
    if args.smoke:
        args.epochs, args.repeats, args.limit = 1, 1, 2000
        print(SMOKE_NOTE)
    precisions = args.precisions.split(",")
    arms = {p: "pipeline" if p == "float32" else f"pipeline {p}" for p in precisions}
    runs: dict[str, list[dict]] = {"baseline": [], **{arm: [] for arm in arms.values()}}
    for _ in range(args.repeats):  # alternated, so that both see the same machine
        command = [sys.executable, __file__, "--example", f"--epochs={args.epochs}"]
        command += [f"--limit={args.limit}"] if args.limit else []
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs["baseline"].append(json.loads(out.strip().splitlines()[-1]))
        for precision, arm in arms.items():
            with tempfile.TemporaryDirectory() as tmp:
                runs[arm].append(pipeline(args.epochs, args.limit, Path(tmp), precision))
    print(f"Keras' convnet example vs model=cnn, {args.epochs} epochs, {args.repeats} repeats")
    print("| run | fit s | test accuracy |\n|---|---|---|")
    for name, results in runs.items():
        fit = [r["fit_seconds"] for r in results]
        acc = [r["test_accuracy"] for r in results]
        print(f"| {name} | {_summary(fit)} | {_summary(acc)} |")
    baseline = statistics.median(r["fit_seconds"] for r in runs["baseline"])
    ratios = {
        arm: statistics.median(r["fit_seconds"] for r in runs[arm]) / baseline
        for arm in arms.values()
    }
    for arm, ratio in ratios.items():
        print(f"ratio (medians): fit {ratio:.2f} ({arm} / baseline)")
    ratio = next(iter(ratios.values()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "smoke": args.smoke,
                "epochs": args.epochs,
                "runs": runs,
                "fit_ratio": ratio,
                "fit_ratios": ratios,
            },
            indent=2,
        )
    )
    if args.smoke:
        print(SMOKE_NOTE)


if __name__ == "__main__":
    main()

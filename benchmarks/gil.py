"""Benchmark: how much Python work beside `model.fit` slows training, on a thread and in a process.

    python benchmarks/gil.py                  # 3 repeats, about 2 minutes here
    python benchmarks/gil.py --smoke          # 1 epoch, 2000 images: keeps the script working

The pipeline's linear model (uint8 input scaled in the graph, Dense(10, softmax), SGD 0.01,
batch 64, a whole epoch per call into the graph, one op thread) trains on the first MNIST
training images, one way after another and repeated:
- alone;
- beside a thread running Python (as MLflow calls or matplotlib would, in the same process);
- beside a separate process running Python (the same work, outside the process's GIL).
Prints fit seconds (min and median) and each one's median over training alone, and writes JSON.
Needs PIPELINE_DATA_DIR (the folder with mnist/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _notes_data import SMOKE_NOTE, load_data

from pipeline.training.backend import keras, tf

HERE = Path(__file__).resolve().parent

SPIN = "while True:\n    sum(range(1000))\n"


def _model(steps: int) -> keras.Model:
    keras.utils.set_random_seed(42)
    model = keras.Sequential(
        [
            keras.Input((28, 28), dtype="uint8"),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.01),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps,
    )
    return model


def _fit_seconds(x, y, epochs: int, beside: str) -> float:
    model = _model(steps=-(-len(x) // 64))
    stop = threading.Event()
    spinner = proc = None
    if beside == "thread":

        def spin() -> None:
            while not stop.is_set():
                sum(range(1000))

        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
    elif beside == "process":
        proc = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        start = time.perf_counter()
        model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
        return time.perf_counter() - start
    finally:
        stop.set()
        if spinner is not None:
            spinner.join()
        if proc is not None:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--images", type=int, default=48000)
    parser.add_argument("--smoke", action="store_true", help="1 epoch, 2000 images, 1 repeat")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gil.json")
    args = parser.parse_args()
    if "PIPELINE_DATA_DIR" not in os.environ:
        sys.exit("set PIPELINE_DATA_DIR to the folder holding mnist/")
    if args.smoke:
        args.repeats, args.epochs, args.images = 1, 1, 2000
    tf.config.threading.set_intra_op_parallelism_threads(1)
    (x, y), _ = load_data("mnist")
    x, y = x[: args.images], y[: args.images]
    _fit_seconds(x, y, 1, "nothing")  # TensorFlow's first-call costs, outside the timings

    kinds = ("nothing", "thread", "process")
    seconds: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for kind in kinds:  # interleaved: a slow spell of the machine touches all alike
            seconds[kind].append(_fit_seconds(x, y, args.epochs, kind))
    median = {k: statistics.median(v) for k, v in seconds.items()}
    results = {
        "epochs": args.epochs,
        "images": len(x),
        "repeats": args.repeats,
        "fit_seconds": seconds,
        "ratio_to_alone": {k: median[k] / median["nothing"] for k in kinds},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.smoke:
        print(SMOKE_NOTE)
    print(f"{len(x)} images, {args.epochs} epochs, {args.repeats} repeats")
    print(f"{'fit beside':<22}{'fit s min/med':>16}{'x alone':>9}")
    for kind in kinds:
        label = {"nothing": "nothing", "thread": "a Python thread", "process": "a Python process"}
        print(
            f"{label[kind]:<22}{min(seconds[kind]):>7.2f} / {median[kind]:<6.2f}"
            f"{results['ratio_to_alone'][kind]:>9.2f}"
        )
    print(f"\nwritten to {args.out}")
    if args.smoke:
        print(SMOKE_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())

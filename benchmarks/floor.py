"""Benchmark: the dense models against the machine's floor, a hand-written NumPy loop.

    python benchmarks/floor.py                 # the notes' experiment 1, 3 repeats, ~5 minutes here
    python benchmarks/floor.py --smoke         # 2 epochs on 2000 images: keeps it working

The floor: the notes' linear model (softmax of W·x + b on the 784 pixels scaled to 0..1) trained
by plain SGD in float32 NumPy, with the pipeline's batches (64), learning rate (0.01), epochs
(30) and validation split (the last 20%, evaluated after each epoch). Beside it, one after the
other and repeated, `python -m pipeline trainer.backend=B` for each engine, whose `fit_seconds`
is compared with the loop's seconds. Prints the median and range of each and the ratios of the
medians against the target (2.5x). Needs PIPELINE_DATA_DIR (the folder with mnist/).
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

ROOT = Path(__file__).resolve().parent.parent
TARGET = 2.5
SMOKE = (
    "SMOKE RUN: it checks that the script runs (2 epochs, 2000 images, 1 repeat); its figures "
    "measure nothing. Run without --smoke to measure."
)


def numpy_loop(epochs: int, limit: int | None, seed: int = 0) -> dict:
    """The notes' linear model by hand: seconds of its training loop and its test accuracy."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from hydra import compose, initialize_config_dir

    from pipeline.config.schema import CONF_DIR, register, to_config
    from pipeline.data.load import load

    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset.limit={limit}"] if limit else [])
    ds = load(to_config(cfg).dataset)
    x = ds.train_x.reshape(len(ds.train_x), -1)
    cut = int(len(x) * 0.8)
    train_x, val_x, train_y, val_y = x[:cut], x[cut:], ds.train_y[:cut], ds.train_y[cut:]
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.08, 0.08, (784, 10)).astype(np.float32)
    b = np.zeros(10, np.float32)
    lr, batch, eye = np.float32(0.01), 64, np.eye(10, dtype=np.float32)

    def softmax(xb):
        z = (xb.astype(np.float32) * np.float32(1 / 255)) @ w + b
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(cut)
        for i in range(0, cut, batch):
            idx = order[i : i + batch]
            xb = train_x[idx].astype(np.float32) * np.float32(1 / 255)
            z = xb @ w + b
            z -= z.max(1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(1, keepdims=True)
            grad = (p - eye[train_y[idx]]) / np.float32(len(idx))
            w -= lr * (xb.T @ grad)
            b -= lr * grad.sum(0)
        val = softmax(val_x)
        _ = -np.log(val[np.arange(len(val_y)), val_y] + 1e-7).mean()
    seconds = time.perf_counter() - start
    test = softmax(ds.test_x.reshape(len(ds.test_x), -1))
    return {"fit_seconds": seconds, "test_accuracy": float((test.argmax(1) == ds.test_y).mean())}


def pipeline(work: Path, tag: str, backend: str, overrides: list[str]) -> dict:
    out = work / tag
    cmd = [sys.executable, "-m", "pipeline", f"trainer.backend={backend}", *overrides]
    cmd += [f"hydra.run.dir={out}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    with open(work / f"{tag}.log", "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed; its output is in {work / tag}.log")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"fit_seconds": metrics["fit_seconds"], "test_accuracy": metrics["test_accuracy"]}


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    if "PIPELINE_DATA_DIR" not in os.environ:
        sys.exit("error: set PIPELINE_DATA_DIR to the folder with mnist/ (../shared/datasets)")
    epochs, limit, repeats = (2, 2000, 1) if args.smoke else (30, None, args.repeats)
    if args.smoke:
        print(SMOKE, flush=True)
    overrides = [f"trainer.epochs={epochs}"] + ([f"dataset.limit={limit}"] if limit else [])
    backends = args.backends.split(",")
    runs: dict[str, list[dict]] = {"numpy": [], **{b: [] for b in backends}}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            runs["numpy"].append(numpy_loop(epochs, limit, seed=i))
            for backend in backends:
                runs[backend].append(pipeline(Path(tmp), f"{backend}-{i}", backend, overrides))
            done = ", ".join(f"{k} {v[-1]['fit_seconds']:.2f} s" for k, v in runs.items())
            print(f"repeat {i + 1}/{repeats}: {done}", flush=True)
    fit = {k: [r["fit_seconds"] for r in v] for k, v in runs.items()}
    floor = statistics.median(fit["numpy"])
    print(f"\nthe notes' experiment 1 ({epochs} epochs), fit seconds, median (range) of {repeats}")
    print(f"{'run':<12} {'fit s':<22} {'x floor':>8}  {'target':>7}  test acc")
    for name, values in fit.items():
        ratio = statistics.median(values) / floor
        accs = ", ".join(f"{r['test_accuracy']:.4f}" for r in runs[name])
        target = "" if name == "numpy" else ("met" if ratio <= TARGET else "missed")
        print(f"{name:<12} {_summary(values):<22} {ratio:8.2f}  {target:>7}  {accs}")
    print(f"target: the pipeline's fit at most {TARGET}x the NumPy loop's")
    if args.out:
        args.out.write_text(json.dumps({"smoke": args.smoke, "runs": runs}, indent=2))
    if args.smoke:
        print(SMOKE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

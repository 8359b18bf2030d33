"""Benchmark: what the per-epoch checkpoint (`trainer.checkpoint`, on by default) costs the fit.

    python benchmarks/checkpoint.py                   # the default job, 5 pairs, ~8 minutes here
    python benchmarks/checkpoint.py --repeats 3 model=cnn trainer.epochs=3
    python benchmarks/checkpoint.py --smoke           # 2 epochs, 2000 images: keeps it working

Runs `python -m pipeline [overrides]` with `trainer.checkpoint=true` and `=false` in turn (the
order alternates from pair to pair, so a slow spell of a shared machine falls on both), each in
a fresh process recording into a temporary store, and prints the fit seconds of each (median
and range), the ratio of the medians and the median of the per-pair ratios, and the size of one
epoch's checkpoint. Needs PIPELINE_DATA_DIR (the folder with mnist/).
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
SMOKE = (
    "SMOKE RUN: it checks that the script runs (2 epochs, 2000 images, 1 pair); its figures "
    "measure nothing. Run without --smoke to measure."
)


def job(work: Path, tag: str, overrides: list[str], on: bool) -> dict:
    """One run: its fit seconds, test accuracy and (checkpoint on) the largest epoch folder seen
    while it trained (the folder is removed when the run finishes)."""
    out = work / tag
    cmd = [sys.executable, "-m", "pipeline", *overrides, f"trainer.checkpoint={str(on).lower()}"]
    cmd += [f"hydra.run.dir={out}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    size = 0
    with open(work / f"{tag}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            size = max(size, _epoch_bytes(out / "checkpoint"))
            time.sleep(0.5)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed; its output is in {work / tag}.log")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "fit_seconds": metrics["fit_seconds"],
        "test_accuracy": metrics["test_accuracy"],
        "epoch_bytes": size,
    }


def _epoch_bytes(folder: Path) -> int:
    try:
        return max(
            sum(f.stat().st_size for f in epoch.iterdir()) for epoch in folder.glob("epoch-*")
        )
    except (OSError, ValueError):  # not there yet, or removed while being read
        return 0


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="pairs of runs (default 5)")
    parser.add_argument("--smoke", action="store_true", help="2 epochs on 2000 images, 1 pair")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("overrides", nargs="*", help="the job's overrides (default: none)")
    args = parser.parse_args()
    if "PIPELINE_DATA_DIR" not in os.environ:
        sys.exit("error: set PIPELINE_DATA_DIR to the folder with mnist/ (../shared/datasets)")
    overrides = list(args.overrides)
    repeats = args.repeats
    if args.smoke:
        overrides += ["dataset.limit=2000", "trainer.epochs=2"]
        repeats = 1
        print(SMOKE, flush=True)
    runs: dict[bool, list[dict]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for i in range(repeats):
            for on in (True, False) if i % 2 == 0 else (False, True):
                runs[on].append(job(work, f"{i}-{on}", overrides, on))
                r = runs[on][-1]
                print(
                    f"pair {i + 1}/{repeats} checkpoint={on}: fit {r['fit_seconds']:.2f} s",
                    flush=True,
                )
    size = max(r["epoch_bytes"] for r in runs[True])
    fit = {on: [r["fit_seconds"] for r in runs[on]] for on in runs}
    pairs = [a / b for a, b in zip(fit[True], fit[False], strict=True)]
    print(f"\njob: python -m pipeline {' '.join(overrides)}   ({repeats} pairs, alternated)")
    print("checkpoint   fit s median (range)   test acc")
    for on in (True, False):
        accs = sorted({round(r["test_accuracy"], 4) for r in runs[on]})
        print(f"{str(on).lower():<12} {summary(fit[on]):<22} {accs}")
    ratio = statistics.median(fit[True]) / statistics.median(fit[False])
    print(f"ratio of medians {ratio:.3f}; per-pair ratios median {statistics.median(pairs):.3f}")
    print(
        f"  (range {min(pairs):.3f}-{max(pairs):.3f}); one epoch's checkpoint {size / 1e3:.0f} kB"
    )
    if args.out:
        figures = {"smoke": args.smoke, "overrides": overrides, "epoch_bytes": size}
        figures |= {"ratio_of_medians": ratio, "pair_ratios": pairs}
        figures["runs"] = {str(on).lower(): runs[on] for on in runs}
        args.out.write_text(json.dumps(figures, indent=2))
    if args.smoke:
        print(SMOKE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: digits whose ink touches the image's edge (a scan, a tight crop) against the same
digits with a white margin, read through `python -m pipeline.predict`'s preparation.

    PIPELINE_DATA_DIR=../shared/datasets .venv/bin/python benchmarks/prepare_edges.py
    .venv/bin/python benchmarks/prepare_edges.py --count 200 --model runs:/<run id>/model

Without --model it trains the ANN with Adam for 3 epochs on the first 10000 MNIST training
images (`python -m pipeline`, recording into a temporary store; about half a minute here) and
reads with the model it registers. Each of the first COUNT MNIST test digits is cropped to its
ink, scaled so that its longer side is SIDE pixels, made dark ink on white paper and saved as a
PNG, once as it is (the ink touches every edge) and once inside a white margin of MARGIN pixels;
each file goes through `prepare_file` and the model. Prints, for each, how many digits the model
read right, how many wrong and how many were refused. Needs PIPELINE_DATA_DIR (the folder with
mnist/) unless the data is in ../shared/datasets.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def as_scanned(digit: np.ndarray, side: int, margin: int) -> np.ndarray:
    """An MNIST digit cropped to its ink, its longer side scaled to `side` pixels, dark on
    white, with `margin` white pixels around it (0: the ink touches the edges)."""
    from PIL import Image

    rows, cols = np.flatnonzero(digit.max(axis=1)), np.flatnonzero(digit.max(axis=0))
    crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    big = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
    return np.pad(255 - big, margin, constant_values=255).astype(np.uint8)


def train(data: Path, work: Path) -> str:
    """The store's URI after `python -m pipeline` trained and registered a small ANN in it."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    overrides = [
        f"dataset.path={data}",
        "dataset.limit=10000",
        "model=ann",
        "optimizer=adam",
        "trainer.epochs=3",
        "trainer.verbose=0",
        f"tracking.uri={uri}",
        "tracking.register=true",
        f"hydra.run.dir={work / 'run'}",
        *(f"report.{n}=false" for n in ("samples", "predictions", "mistakes", "html")),
    ]
    cmd = [sys.executable, "-m", "pipeline", *overrides]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return uri


def count(classifier, digits, labels, folder: Path, side: int, margin: int) -> dict[str, int]:
    """How many of `digits`, saved as scanned PNGs, the model reads right, wrong, or not."""
    from PIL import Image

    from pipeline.errors import ImageError
    from pipeline.serving.prepare import prepare_file

    folder.mkdir(parents=True, exist_ok=True)
    prepared, kept, refused = [], [], 0
    for i, (digit, label) in enumerate(zip(digits, labels, strict=True)):
        path = folder / f"{i:05d}.png"
        Image.fromarray(as_scanned(digit, side, margin)).save(path)
        try:
            prepared.append(prepare_file(path, classifier.preparation))
            kept.append(int(label))
        except ImageError:
            refused += 1
    guesses = classifier.probabilities(np.stack(prepared)).argmax(axis=1) if prepared else []
    right = int(np.sum(np.asarray(guesses) == np.asarray(kept)))
    return {"right": right, "wrong": len(kept) - right, "refused": refused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="test digits (1000)")
    parser.add_argument("--side", type=int, default=150, help="longer side in pixels (150)")
    parser.add_argument("--margin", type=int, default=20, help="white margin in pixels (20)")
    parser.add_argument("--model", help="a model of $MLFLOW_TRACKING_URI instead of training")
    args = parser.parse_args()
    data = Path(os.environ.get("PIPELINE_DATA_DIR", ROOT.parent / "shared" / "datasets"))
    from pipeline.data.load import read_idx

    digits = read_idx(data / "mnist" / "t10k-images-idx3-ubyte.gz")[: args.count]
    labels = read_idx(data / "mnist" / "t10k-labels-idx1-ubyte.gz")[: args.count]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            os.environ["MLFLOW_TRACKING_URI"] = train(data.resolve(), work)
            model = "models:/mnist-classifier@champion"
        from pipeline.serving.classifier import load_classifier

        classifier = load_classifier(model)
        print(f"{len(digits)} MNIST test digits, longer side {args.side} px, model {model}")
        print(f"{'':24}{'right':>7}{'wrong':>7}{'refused':>9}")
        for name, margin in (("ink to the edge", 0), (f"{args.margin} px margin", args.margin)):
            c = count(classifier, digits, labels, work / name, args.side, margin)
            print(f"{name:24}{c['right']:>7}{c['wrong']:>7}{c['refused']:>9}")


if __name__ == "__main__":
    main()

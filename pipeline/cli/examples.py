"""Test images written as PNG files, to try a trained model on before you have images of your own.

    python -m pipeline.examples my-digits                              # one digit of each class
    python -m pipeline.examples my-clothes --dataset fashion_mnist --count 20

Each is drawn as a person would give one: dark on white, four times MNIST's size, and named
after its true class (`03-7.png`), so that `python -m pipeline.predict` has to prepare it as it
prepares a photo or a drawing, and its answer can be checked by eye.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from pipeline.cli.failure import fail
from pipeline.errors import PipelineError

SCALE = 4  # 28x28 -> 112x112


def pick(labels: np.ndarray, count: int) -> list[int]:
    """Indices of the first test image of each class in turn, then the next ones in order."""
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    rest = [i for i in range(len(labels)) if i not in set(firsts)]
    return (firsts + rest)[:count]


def write_examples(dataset: str, folder: Path, count: int) -> list[Path]:
    """Write `count` test images of `dataset` into `folder`; returns their paths.

    Raises:
        DataError: the dataset's files cannot be found or read.
    """
    from hydra import compose, initialize_config_dir
    from PIL import Image

    from pipeline.config.schema import CONF_DIR, register, to_config
    from pipeline.data.load import load

    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        conf = to_config(compose("config", overrides=[f"dataset={dataset}"]))
    ds = load(conf.dataset)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n, i in enumerate(pick(ds.test_y, count)):
        name = re.sub(r"[^\w-]+", "_", ds.class_names[int(ds.test_y[i])])
        path = folder / f"{n:02d}-{name}.png"
        ink = Image.fromarray(255 - ds.test_x[i])  # MNIST's ink is light on black
        ink.resize((28 * SCALE, 28 * SCALE), Image.Resampling.LANCZOS).save(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.examples",
        description="Write test images as PNG files (dark on white, 112x112, named after their "
        "class) to try `python -m pipeline.predict` on.",
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--count", type=int, default=10, help="how many (10: one per class)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    try:
        written = write_examples(args.dataset, args.folder, args.count)
    except PipelineError as exc:
        return fail(exc)
    print(f"wrote {len(written)} images to {args.folder}: {', '.join(p.name for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

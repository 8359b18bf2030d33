"""Test images written as PNG files, to try a trained model on before you have images of your own.

    python -m pipeline.examples my-digits                              # one digit of each class
    python -m pipeline.examples my-clothes --dataset fashion_mnist --count 20
    python -m pipeline.examples my-photos --folder --dataset fashion_mnist   # a dataset=folder

Each is drawn as a person would give one: dark on white, four times MNIST's size, and named
after its true class (`03-7.png`), so that `python -m pipeline.predict` has to prepare it as it
prepares a photo or a drawing, and its answer can be checked by eye.

With --folder, `--count` training images (10,000 unless given) are written instead as a folder
dataset, one sub-folder per class (`my-photos/Trouser/00017.png`), to train on with
`python -m pipeline dataset=folder dataset.path=my-photos`: twice MNIST's size, every third a
JPEG and every fifth in colour, so that the folder loader has sizes, formats and modes to convert.
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


def _load(dataset: str):
    from hydra import compose, initialize_config_dir

    from pipeline.config.schema import CONF_DIR, register, to_config
    from pipeline.data.load import load

    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        conf = to_config(compose("config", overrides=[f"dataset={dataset}"]))
    return load(conf.dataset)


def _safe(name: str) -> str:
    return re.sub(r"[^\w-]+", "_", name)


def write_folder_dataset(dataset: str, folder: Path, count: int) -> dict[str, int]:
    """Write the first `count` training images of `dataset` into `folder` as a folder dataset
    (one sub-folder per class); returns the count of each class.

    Raises:
        DataError: the dataset's files cannot be found or read.
    """
    from PIL import Image

    ds = _load(dataset)
    counts: dict[str, int] = {}
    for i in range(min(count, len(ds.train_y))):
        name = _safe(ds.class_names[int(ds.train_y[i])])
        (folder / name).mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(ds.train_x[i]).resize((56, 56), Image.Resampling.LANCZOS)
        if i % 5 == 4:  # colour: the same grey in warm tones
            grey = np.asarray(image, dtype=np.float32)
            image = Image.fromarray(np.stack([grey, grey * 0.8, grey * 0.6], -1).astype(np.uint8))
        image.save(folder / name / f"{i:05d}.{'jpg' if i % 3 == 2 else 'png'}", quality=90)
        counts[name] = counts.get(name, 0) + 1
    return counts


def write_examples(dataset: str, folder: Path, count: int) -> list[Path]:
    """Write `count` test images of `dataset` into `folder`; returns their paths.

    Raises:
        DataError: the dataset's files cannot be found or read.
    """
    from PIL import Image

    ds = _load(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n, i in enumerate(pick(ds.test_y, count)):
        name = _safe(ds.class_names[int(ds.test_y[i])])
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
    parser.add_argument(
        "--count", type=int, help="how many (10: one per class; with --folder 10000)"
    )
    parser.add_argument(
        "--folder",
        dest="as_folder",
        action="store_true",
        help="write training images as a folder dataset",
    )
    args = parser.parse_args(argv)
    count = args.count if args.count is not None else 10000 if args.as_folder else 10
    if count < 1:
        parser.error("--count must be at least 1")
    try:
        if args.as_folder:
            counts = write_folder_dataset(args.dataset, args.folder, count)
            print(
                f"wrote {sum(counts.values())} images in {len(counts)} class folders to "
                f"{args.folder}: " + ", ".join(f"{n} {c}" for n, c in counts.items())
            )
            print(f"train on them: python -m pipeline dataset=folder dataset.path={args.folder}")
            return 0
        written = write_examples(args.dataset, args.folder, count)
    except PipelineError as exc:
        return fail(exc)
    print(f"wrote {len(written)} images to {args.folder}: {', '.join(p.name for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

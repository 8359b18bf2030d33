"""Real images prepared the way MNIST's digits were, so that a model trained on MNIST reads them.

MNIST's digits are white on black, their ink fitted into a 20x20 box with its aspect ratio kept,
then placed in a 28x28 image so that the ink's centre of mass is at the centre. A photo of a
digit on paper, a black-on-white drawing or a white-on-black one all go through the same steps:

1. grayscale (transparent pixels count as background);
2. inverted when the background is light (judged by the image's border);
3. the background level taken off, so that paper reads as 0;
4. cropped to the ink's bounding box;
5. the longer side scaled to 20 pixels, keeping the aspect ratio;
6. placed in 28x28 by the centre of mass.

Imports Pillow, NumPy and SciPy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.images import IMAGE_SUFFIXES, Preparation, decode, open_image
from pipeline.errors import ImageError

SIZE = 28
BOX = 20
# A pixel is ink when it is at least this share of the way from the background to the darkest
# stroke; an image whose strongest stroke is weaker than INK_MIN (of 255) has no ink.
INK_SHARE = 0.25
INK_MIN = 32


def read_gray(source) -> np.ndarray:
    """An image file (or file object) as float grayscale 0..255, transparency on white."""
    return np.asarray(open_image(source).convert("L"), dtype=np.float64)


def prepare(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """Prepare a grayscale image (0..255, any size) as an MNIST digit: 28x28 uint8, white ink
    on black, the ink in a 20x20 box centred by its centre of mass.

    Raises:
        ImageError: the image holds no ink (blank, or a uniform colour).
    """
    from PIL import Image
    from scipy import ndimage

    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise ImageError(f"{name}: expected a 2-D image, got shape {gray.shape}")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:  # light paper, dark ink: MNIST's ink is white
        gray = 255.0 - gray
        border = 255.0 - border
    # Paper reads 0: its level (a little above the border's median, for uneven light) goes.
    ink = np.clip(gray - np.percentile(border, 90), 0, None)
    # A little smoothing keeps single noisy pixels (a photo's grain) out of the ink's box.
    strength = ndimage.uniform_filter(ink, size=3).max() if min(ink.shape) >= 3 else ink.max()
    if strength < INK_MIN:
        raise ImageError(f"{name}: no ink found (a blank or uniform image)")
    mask = ndimage.uniform_filter(ink, size=3) >= INK_SHARE * strength
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    crop = np.clip(crop / crop.max() * 255.0, 0, 255)

    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow's (width, height)
    small = np.asarray(
        Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS),
        dtype=np.float64,
    )
    small = np.clip(small, 0, 255)

    out = np.zeros((SIZE, SIZE))
    top, left = (SIZE - small.shape[0]) // 2, (SIZE - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    cy, cx = ndimage.center_of_mass(out)
    shift = (round(SIZE / 2 - cy), round(SIZE / 2 - cx))  # where MNIST has it: (14, 14)
    out = ndimage.shift(out, shift, order=0, mode="constant", cval=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def prepare_file(path, preparation: Preparation | None = None) -> np.ndarray:
    """The image file at `path` as a model takes it: prepared as MNIST's digits were, or for
    a model trained on a folder dataset decoded and resized as its images were."""
    if preparation is None or preparation.mnist_centre:
        return prepare(read_gray(path), str(path))
    return decode(path, preparation.size, preparation.channels)


def image_files(paths) -> list[Path]:
    """The image files named, a folder standing for its PNG and JPEG files (sorted).

    Raises:
        ImageError: a path that does not exist, or a folder without images.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"{path} holds no PNG or JPEG files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ImageError(f"{path}: no such file or folder")
    return files

"""Real images prepared the way MNIST's digits were, so that a model trained on MNIST reads them.

MNIST's digits are white on black, their ink fitted into a 20x20 box with its aspect ratio kept,
then placed in a 28x28 image so that the ink's centre of mass is at the centre. A photo of a
digit on paper, a black-on-white drawing or a white-on-black one all go through the same steps:

1. grayscale (transparent pixels count as background);
2. inverted when the background is light (judged by the image's border);
3. the paper's level taken off, so that paper reads as 0: the border's median, the level most
   of the border has even where the ink runs off the edge (a scan, a tight crop), raised by the
   paper's own spread (grain, uneven light);
4. cropped to the ink's bounding box;
5. the longer side scaled to 20 pixels, keeping the aspect ratio;
6. placed in 28x28 by the centre of mass.

An image file is refused before it is decoded when its header gives more than MAX_SIDE pixels a
side, and an image under MIN_SIDE pixels a side holds no digit.

Imports Pillow, NumPy and SciPy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.images import IMAGE_SUFFIXES, Preparation, open_image, to_array
from pipeline.errors import ImageError

SIZE = 28
BOX = 20
# A pixel is ink when it is at least this share of the way from the background to the darkest
# stroke; an image whose strongest stroke is weaker than INK_MIN (of 255) has no ink.
INK_SHARE = 0.25
INK_MIN = 32
# Pixels a side. A larger image is refused before it is decoded (4096x4096 takes about 0.7 GB
# to prepare; a phone's 12-megapixel photo fits); a smaller one holds no digit.
MAX_SIDE = 4096
MIN_SIDE = 3


def _name(source) -> str:
    """A file's path, or a file object's name ("image" for one without)."""
    name = source if isinstance(source, str | Path) else getattr(source, "name", None)
    return str(name) if isinstance(name, str | Path) else "image"


def image_size(source, name: str | None = None) -> tuple[int, int]:
    """The (width, height) an image file's header gives, its pixels not decoded.

    Raises:
        ImageError: the file is not an image Pillow can read; names it.
    """
    import warnings

    from PIL import Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

    name = name or _name(source)
    try:
        with warnings.catch_warnings():  # Pillow's own bound: MAX_SIDE says it in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                return img.size
    except Image.DecompressionBombError:
        # Over Pillow's bound Image.open refuses to say the size: the header itself does.
        for plugin in (PngImagePlugin.PngImageFile, JpegImagePlugin.JpegImageFile):
            if hasattr(source, "seek"):
                source.seek(0)
            try:
                with plugin(source) as img:
                    return img.size
            except (SyntaxError, OSError, ValueError):
                continue
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageError(
            f"{name}: image of over {limit} pixels is too large: at most {MAX_SIDE} pixels a side"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: not an image Pillow can read (PNG or JPEG)") from exc


def check_size(width: int, height: int, name: str) -> None:
    """Refuse an image over MAX_SIDE or under MIN_SIDE pixels a side, naming its size."""
    if max(width, height) > MAX_SIDE:
        raise ImageError(
            f"{name}: image of {width}x{height} pixels is too large: at most {MAX_SIDE} pixels "
            "a side (scale it down)"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            f"{name}: image of {width}x{height} pixels is too small: at least {MIN_SIDE} pixels "
            "a side"
        )


def _open(source, name: str):
    """An image file (or file object) as a loaded Pillow image (see `open_image`), refused
    from its header, before it is decoded, when over MAX_SIDE pixels a side.

    Raises:
        ImageError: not an image Pillow can read, or too large; names it.
    """
    width, height = image_size(source, name)
    if max(width, height) > MAX_SIDE:
        check_size(width, height, name)
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        return open_image(source)
    except ImageError as exc:  # a header Pillow reads, pixels it does not (a truncated file)
        why = str(exc.__cause__ or "").strip().splitlines()
        raise ImageError(
            f"{name}: not an image Pillow can read (PNG or JPEG)" + (f": {why[0]}" if why else "")
        ) from exc


def read_gray(source) -> np.ndarray:
    """An image file (or file object) as float grayscale 0..255, transparency on white.

    Raises:
        ImageError: not an image Pillow can read, or over MAX_SIDE pixels a side (refused from
            its header, before it is decoded).
    """
    image = _open(source, _name(source))
    return np.asarray(image.convert("L"), dtype=np.float64)


def ink_of(gray: np.ndarray) -> np.ndarray:
    """Steps 2 and 3: the ink of a grayscale image as white on black, the paper at 0.

    The paper's level is the border's median, which ink touching the edge does not move while
    it covers less than half the border, plus the paper's spread below that median (after the
    inversion ink lies above it): grain and uneven light stay out of the ink.
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:  # light paper, dark ink: MNIST's ink is white
        gray = 255.0 - gray
        border = 255.0 - border
    paper = np.median(border)
    level = paper + max(0.0, paper - np.percentile(border, 10))
    return np.clip(gray - level, 0, None)


def prepare(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """Prepare a grayscale image (0..255, any size) as an MNIST digit: 28x28 uint8, white ink
    on black, the ink in a 20x20 box centred by its centre of mass.

    Raises:
        ImageError: the image is not 2-D, is under MIN_SIDE pixels a side, or holds no ink
            (blank, or a uniform colour).
    """
    from PIL import Image
    from scipy import ndimage

    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2:
        raise ImageError(f"{name}: expected a 2-D (grayscale) image, got shape {gray.shape}")
    check_size(gray.shape[1], gray.shape[0], name)
    ink = ink_of(gray)
    # A little smoothing keeps single noisy pixels (a photo's grain) out of the ink's box.
    smooth = ndimage.uniform_filter(ink, size=3)
    strength = smooth.max()
    if strength < INK_MIN:
        raise ImageError(f"{name}: no ink found (a blank or uniform image)")
    mask = smooth >= INK_SHARE * strength
    del smooth
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
    a model trained on a folder dataset decoded and resized as its images were.

    Raises:
        ImageError: not an image Pillow can read, over MAX_SIDE or under MIN_SIDE pixels a side
            (too large: judged from its header, before it is decoded), or (MNIST's way) without ink.
    """
    name = str(path)
    image = _open(path, name)
    if preparation is None or preparation.mnist_centre:
        return prepare(np.asarray(image.convert("L"), dtype=np.float64), name)
    check_size(*image.size, name)
    return to_array(image, preparation.size, preparation.channels)


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

"""Image files as the arrays the models take: any size and mode, made grey (1 channel) or
colour (3) and resized, as uint8. The one decoder of the folder datasets and of predicting on a
model trained on one; imports Pillow and NumPy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def open_image(source):
    """An image file (or file object) as a loaded Pillow image, transparency put on white.

    Raises:
        ImageError: the file is not an image Pillow can read; names it.
    """
    from PIL import Image, UnidentifiedImageError

    name = getattr(source, "name", source)
    try:
        with Image.open(source) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                # Strokes on a transparent canvas: what is transparent is the paper.
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(white, rgba).convert("RGB")
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name} is not an image Pillow can read (PNG or JPEG)") from exc


def to_array(img, size: tuple[int, int], channels: int) -> np.ndarray:
    """A Pillow image as uint8 (H, W) for 1 channel or (H, W, 3) for 3, resized to `size`
    (H, W) with Pillow's antialiasing bilinear filter (the aspect ratio is not kept)."""
    from PIL import Image

    img = img.convert("L" if channels == 1 else "RGB")
    height, width = size
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def decode(source, size: tuple[int, int], channels: int) -> np.ndarray:
    """The image file `source` as the models of a folder dataset take it (see `to_array`)."""
    return to_array(open_image(source), size, channels)


@dataclass(frozen=True)
class Preparation:
    """How a new image is made into what a model takes, as its training images were: MNIST's
    crop-and-centre (`serving.prepare`) for the IDX datasets, or decoded to `channels` and
    resized to `size` (height, width) for a folder dataset. A logged model carries it."""

    size: tuple[int, int] = (28, 28)
    channels: int = 1
    mnist_centre: bool = True

    @classmethod
    def of(cls, ds) -> Preparation:
        """The preparation of the images of `ds` (a data.load.Dataset)."""
        shape = ds.train_x.shape
        channels = shape[3] if len(shape) == 4 else 1
        return cls((int(shape[1]), int(shape[2])), int(channels), ds.ink_on_black)

    def as_dict(self) -> dict:
        return {
            "size": list(self.size),
            "channels": self.channels,
            "mnist_centre": self.mnist_centre,
        }

    @classmethod
    def from_dict(cls, raw: dict | None) -> Preparation:
        """From a logged model's metadata; MNIST's for a model logged without one."""
        if not raw:
            return cls()
        return cls(tuple(raw["size"]), int(raw["channels"]), bool(raw["mnist_centre"]))

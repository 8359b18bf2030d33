"""Stage `preprocess`: hold out the end of the training set for validation.

Images stay uint8: the model scales them to 0..1 in its first layer, which moves a quarter of
the bytes a float32 copy would and makes the logged model take raw images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.data.load import Dataset
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Images (n, 28, 28) uint8 in 0..255 and labels (n,) int32."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split | None
    test: Split


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(x=np.ascontiguousarray(x), y=y.astype(np.int32))


def preprocess(ds: Dataset, validation_split: float) -> Splits:
    """Split off validation data.

    Args:
        ds: the loaded dataset.
        validation_split: fraction in [0, 1). As Keras' `fit(validation_split=...)` does, the
            *last* fraction of the training arrays, unshuffled, becomes the validation set.
    Returns:
        Splits; `val` is None when validation_split is 0.
    """
    n = len(ds.train_y)
    split_at = int(n * (1.0 - validation_split))
    if split_at < 1:
        raise ConfigError(
            f"trainer.validation_split={validation_split} leaves no training data out of {n} images"
        )
    val = None
    if split_at < n:
        val = _split(ds.train_x[split_at:], ds.train_y[split_at:])
    elif validation_split > 0:
        raise ConfigError(
            f"trainer.validation_split={validation_split} leaves no validation data "
            f"out of {n} images"
        )
    splits = Splits(
        train=_split(ds.train_x[:split_at], ds.train_y[:split_at]),
        val=val,
        test=_split(ds.test_x, ds.test_y),
    )
    log.info(
        "splits: %d train, %d validation, %d test",
        len(splits.train),
        len(val) if val else 0,
        len(splits.test),
    )
    return splits

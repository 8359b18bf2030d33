"""Stage `fit`: train the compiled model and return its per-epoch history and timings."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline._tf import keras
from pipeline.config import TrainerConfig
from pipeline.stages.preprocess import Splits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class History:
    """Per-epoch metrics of one training run.

    Attributes:
        metrics: name -> one value per epoch (`loss`, `accuracy`, and with validation
            `val_loss`, `val_accuracy`).
        epoch_seconds: wall time of each epoch, validation included.
        fit_seconds: wall time of the whole `model.fit` call.
    """

    metrics: dict[str, tuple[float, ...]]
    epoch_seconds: tuple[float, ...]
    fit_seconds: float

    @property
    def epochs(self) -> int:
        return len(self.epoch_seconds)

    @property
    def has_validation(self) -> bool:
        return "val_loss" in self.metrics


class _EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def fit(
    cfg: TrainerConfig,
    model: keras.Model,
    splits: Splits,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> History:
    """Train `model` on `splits.train`, validating on `splits.val` after each epoch if present.

    Args:
        cfg: epochs, batch size, shuffling and progress output.
        callbacks: extra Keras callbacks (e.g. the tracking callback).
    """
    timer = _EpochTimer()
    validation = (splits.val.x, splits.val.y) if splits.val is not None else None
    start = time.perf_counter()
    keras_history = model.fit(
        splits.train.x,
        splits.train.y,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        validation_data=validation,
        shuffle=cfg.shuffle,
        verbose=cfg.verbose,
        callbacks=[timer, *callbacks],
    )
    fit_seconds = time.perf_counter() - start
    metrics = {k: tuple(float(v) for v in vals) for k, vals in keras_history.history.items()}
    log.info("fit: %d epochs in %.1f s", len(timer.seconds), fit_seconds)
    return History(metrics=metrics, epoch_seconds=tuple(timer.seconds), fit_seconds=fit_seconds)

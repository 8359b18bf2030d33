"""What training and evaluation produce, and the file that carries it to the recorder.

Plain data (NumPy only): the recorder process reads it back and draws the report without
TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class History:
    """Per-epoch metrics of one training run.

    Attributes:
        metrics: name -> one value per epoch (`loss`, `accuracy`, and with validation
            `val_loss`, `val_accuracy`).
        epoch_seconds: wall time of each epoch, validation included.
        fit_seconds: wall time of the whole `model.fit` call.
        stopped_epoch: the epoch early stopping ended training at, or None.
        best_epoch: the epoch whose weights the model kept (early stopping with
            restore_best_weights), or None.
    """

    metrics: dict[str, tuple[float, ...]]
    epoch_seconds: tuple[float, ...]
    fit_seconds: float
    stopped_epoch: int | None = None
    best_epoch: int | None = None

    @property
    def epochs(self) -> int:
        return len(self.epoch_seconds)

    @property
    def has_validation(self) -> bool:
        return "val_loss" in self.metrics


@dataclass(frozen=True)
class Metrics:
    """Test-set results.

    Attributes:
        loss: mean cross-entropy.  accuracy: fraction right.
        probabilities: (n, classes) softmax outputs.  predictions: (n,) argmax.
        labels: (n,) true labels.
        confusion: (classes, classes) counts, rows true, columns predicted.
        report: scikit-learn's classification_report as a dict, keyed by class name.
    """

    loss: float
    accuracy: float
    probabilities: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    confusion: np.ndarray
    report: dict[str, Any]

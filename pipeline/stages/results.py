"""What training and evaluation produce, and the file that carries it to the recorder.

Plain data (NumPy only): the recorder process reads it back and draws the report without
TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.stages.load import Dataset


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


def save_report_inputs(
    path: Path, ds: Dataset, history: History, metrics: Metrics, num_samples: int
) -> None:
    """Everything the report draws, in one .npz: the first `num_samples` training images, the
    test set with its probabilities, the history and the per-class report.

    The test images go whole: the figure of mistakes looks for the worst anywhere in it.
    """
    np.savez(
        path,
        train_x=ds.train_x[:num_samples],
        train_y=ds.train_y[:num_samples],
        test_x=ds.test_x,
        test_y=ds.test_y,
        probabilities=metrics.probabilities,
        predictions=metrics.predictions,
        labels=metrics.labels,
        confusion=metrics.confusion,
        meta=np.array(
            json.dumps(
                {
                    "name": ds.name,
                    "class_names": list(ds.class_names),
                    "history": {k: list(v) for k, v in history.metrics.items()},
                    "epoch_seconds": list(history.epoch_seconds),
                    "fit_seconds": history.fit_seconds,
                    "loss": metrics.loss,
                    "accuracy": metrics.accuracy,
                    "report": metrics.report,
                },
                default=json_default,
            )
        ),
    )


def load_report_inputs(path: Path) -> tuple[Dataset, History, Metrics]:
    """The Dataset (its first training images and the whole test set), History and Metrics
    saved by :func:`save_report_inputs`."""
    with np.load(path, allow_pickle=False) as saved:
        a = {k: saved[k] for k in saved.files}
    meta = json.loads(str(a["meta"]))
    ds = Dataset(
        name=meta["name"],
        train_x=a["train_x"],
        train_y=a["train_y"],
        test_x=a["test_x"],
        test_y=a["test_y"],
        class_names=tuple(meta["class_names"]),
    )
    history = History(
        metrics={k: tuple(v) for k, v in meta["history"].items()},
        epoch_seconds=tuple(meta["epoch_seconds"]),
        fit_seconds=meta["fit_seconds"],
    )
    metrics = Metrics(
        loss=meta["loss"],
        accuracy=meta["accuracy"],
        probabilities=a["probabilities"],
        predictions=a["predictions"],
        labels=a["labels"],
        confusion=a["confusion"],
        report=meta["report"],
    )
    return ds, history, metrics


def json_default(value: Any) -> Any:
    # scikit-learn hands back NumPy scalars, which json cannot write.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

"""The file that carries a job's results to the recorder process, which draws the report from it.

Plain data (NumPy only): the recorder reads it back without TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.schema import ReportConfig
from pipeline.data.load import Dataset
from pipeline.training.results import History, Metrics


@dataclass(frozen=True)
class ReportRequest:
    """What the report is drawn with, beside the arrays: its switches and title; and once the
    job has trained, the weights' file, the settings shown and the final metrics."""

    config: ReportConfig
    title: str
    weights: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    ink_on_black: bool = True  # how the images are drawn (see data.load.Dataset)


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
                    "ink_on_black": ds.ink_on_black,
                    "history": {k: list(v) for k, v in history.metrics.items()},
                    "epoch_seconds": list(history.epoch_seconds),
                    "fit_seconds": history.fit_seconds,
                    "stopped_epoch": history.stopped_epoch,
                    "best_epoch": history.best_epoch,
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
        ink_on_black=meta.get("ink_on_black", True),
    )
    history = History(
        metrics={k: tuple(v) for k, v in meta["history"].items()},
        epoch_seconds=tuple(meta["epoch_seconds"]),
        fit_seconds=meta["fit_seconds"],
        stopped_epoch=meta.get("stopped_epoch"),
        best_epoch=meta.get("best_epoch"),
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

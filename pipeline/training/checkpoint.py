"""The training state after each epoch, for `resume=`: what a stopped run needs to go on as if
it had never stopped.

Keras' BackupAndRestore keeps the weights, the optimizer and the epoch, but not the dropout
layers' random state (so a resumed CNN would draw other masks), nor early stopping's count, nor
the history so far, and it overwrites its file in place (a kill mid-write leaves neither the
old state nor the new). Here each epoch is written to a folder of its own, checked by digest,
and `latest` names the newest complete one; it is replaced in one step.

    checkpoint/latest                     "epoch-0005"
    checkpoint/epoch-0005/model.weights.h5   weights and optimizer state (Keras' own format)
    checkpoint/epoch-0005/state.npz          random-state and best-weights arrays
    checkpoint/epoch-0005/state.json         epoch, history, timings, early stopping, digests
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import ResumeError
from pipeline.training.backend import keras

log = logging.getLogger(__name__)

LATEST = "latest"
WEIGHTS = "model.weights.h5"
ARRAYS = "state.npz"
STATE = "state.json"
# EarlyStopping's attributes that carry from one epoch to the next (reset in on_train_begin).
STOPPING_STATE = ("wait", "best", "best_epoch", "stopped_epoch")


@dataclass(frozen=True)
class Saved:
    """A checkpoint read back: the epochs done, their history and where the weights are."""

    folder: Path
    epoch: int  # epochs completed
    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_seconds: tuple[float, ...] = ()
    stopping: dict[str, float] = field(default_factory=dict)
    # NumPy's global random state past its 624 keys (position, has_gauss, cached_gaussian).
    numpy_state: tuple = (0, 0, 0.0)

    @property
    def fit_seconds(self) -> float:
        return float(sum(self.epoch_seconds))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(folder: Path) -> Saved | None:
    """The newest complete checkpoint in `folder`, checked; None if no epoch was completed.

    Raises:
        ResumeError: the folder is gone, or the checkpoint is unreadable or does not match its
            digests.
    """
    if not folder.is_dir():
        raise ResumeError(f"its checkpoint {folder} is gone: the run cannot be resumed")
    latest = folder / LATEST
    if not latest.is_file():
        return None  # stopped before its first epoch ended: it starts again at epoch 1
    try:
        epoch_dir = folder / latest.read_text().strip()
        state = json.loads((epoch_dir / STATE).read_text())
        for name, digest in state["digests"].items():
            if _digest(epoch_dir / name) != digest:
                raise ValueError(f"{name} does not match its digest")
        return Saved(
            folder=epoch_dir,
            epoch=int(state["epoch"]),
            history={k: [float(v) for v in vals] for k, vals in state["history"].items()},
            epoch_seconds=tuple(float(s) for s in state["epoch_seconds"]),
            stopping=dict(state["stopping"]),
            numpy_state=tuple(state.get("numpy_state", (0, 0, 0.0))),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResumeError(f"its checkpoint in {folder} is corrupt ({exc})") from exc


def _seed_generators(model: keras.Model) -> list:
    """The model's random-state variables (e.g. each Dropout's), in layer order."""
    return [
        sg for layer in model._flatten_layers() for sg in getattr(layer, "_seed_generators", [])
    ]


class Checkpoint(keras.callbacks.Callback):
    """Writes the training state into `folder` after each epoch, and restores `saved` (if any)
    when training begins. Goes after every other callback: early stopping's state and the
    epoch's logs are complete by then.

    Args:
        folder: the run's checkpoint folder.
        saved: the state to start from, or None for a new run.
        stopping: the run's EarlyStopping callback, whose state is kept too.
        epoch_seconds: the list each epoch's seconds are appended to (the fit's timer).
    """

    def __init__(self, folder: Path, saved: Saved | None, stopping, epoch_seconds: list) -> None:
        super().__init__()
        self.folder = folder
        self.saved = saved
        self.stopping = stopping
        self.epoch_seconds = epoch_seconds

    def on_train_begin(self, logs=None):
        self.history = {k: list(v) for k, v in self.saved.history.items()} if self.saved else {}
        if self.saved is None:
            return
        if not self.model.optimizer.built:  # its variables must exist to be loaded
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.saved.folder / WEIGHTS)
        arrays = np.load(self.saved.folder / ARRAYS)
        for i, generator in enumerate(_seed_generators(self.model)):
            generator.state.assign(arrays[f"seed_{i}"])
        if "numpy_keys" in arrays:  # Keras shuffles NumPy batches with NumPy's global state
            position, gauss, cached = self.saved.numpy_state
            np.random.set_state(("MT19937", arrays["numpy_keys"], position, gauss, cached))
        if self.stopping is not None:
            for name, value in self.saved.stopping.items():
                setattr(self.stopping, name, value if name == "best" else int(value))
            if "best_0" in arrays:
                count = sum(1 for k in arrays.files if k.startswith("best_"))
                self.stopping.best_weights = [arrays[f"best_{i}"] for i in range(count)]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        if not math.isfinite(float(logs.get("loss", 0.0))):
            return  # a diverged epoch is not worth going back to
        self._write(epoch + 1)

    def _write(self, epoch: int) -> None:
        name = f"epoch-{epoch:04d}"
        final, partial = self.folder / name, self.folder / f"{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self.model.save_weights(partial / WEIGHTS)
        arrays = {
            f"seed_{i}": keras.ops.convert_to_numpy(g.state)
            for i, g in enumerate(_seed_generators(self.model))
        }
        _, keys, position, gauss, cached = np.random.get_state()
        arrays["numpy_keys"] = keys
        stopping = {}
        if self.stopping is not None:
            stopping = {k: float(getattr(self.stopping, k)) for k in STOPPING_STATE}
            for i, weights in enumerate(self.stopping.best_weights or []):
                arrays[f"best_{i}"] = np.asarray(weights)
        np.savez(partial / ARRAYS, **arrays)
        state = {
            "epoch": epoch,
            "history": self.history,
            "epoch_seconds": list(self.epoch_seconds),
            "stopping": stopping,
            "numpy_state": [int(position), int(gauss), float(cached)],
            "digests": {n: _digest(partial / n) for n in (WEIGHTS, ARRAYS)},
        }
        (partial / STATE).write_text(json.dumps(state))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        pointer = self.folder / f"{LATEST}.partial"
        pointer.write_text(name)
        os.replace(pointer, self.folder / LATEST)  # the one step that moves to the new epoch
        for old in self.folder.glob("epoch-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

"""Stage `fit`: train the compiled model and return its per-epoch history and timings."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.config.schema import TrainerConfig
from pipeline.data.preprocess import Splits
from pipeline.errors import TrainingError
from pipeline.training.backend import keras, tf
from pipeline.training.checkpoint import Checkpoint, Saved
from pipeline.training.results import History

log = logging.getLogger(__name__)


# Validation and test batches only bound memory; they change no result.
EVAL_BATCH_SIZE = 1024


def steps_per_execution(cfg: TrainerConfig, num_train: int) -> int:
    """`trainer.steps_per_execution`, or when it is null the number of batches in one epoch
    (one step under a tf.distribute strategy, where Keras' multi-step loop fails)."""
    per_epoch = math.ceil(num_train / cfg.batch_size)
    if cfg.strategy != "default" and cfg.steps_per_execution is None:
        return 1
    return min(cfg.steps_per_execution or per_epoch, per_epoch)


def set_threads(cfg: TrainerConfig) -> None:
    """Apply `trainer.intra_op_threads` (possible only before TensorFlow's first op; on JAX,
    XLA chooses)."""
    if tf is None or tf.config.threading.get_intra_op_parallelism_threads() == cfg.intra_op_threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.intra_op_threads)
    except RuntimeError:
        log.warning(
            "trainer.intra_op_threads=%d not applied: TensorFlow is already running with %d",
            cfg.intra_op_threads,
            tf.config.threading.get_intra_op_parallelism_threads(),
        )


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self, before: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.seconds = list(before)  # a resumed run's earlier epochs

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def fit(
    cfg: TrainerConfig,
    model: keras.Model,
    splits: Splits,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    checkpoint: Path | None = None,
    saved: Saved | None = None,
) -> History:
    """Train `model` on `splits.train`, validating on `splits.val` after each epoch if present.

    Args:
        cfg: epochs, batch size, shuffling and progress output.
        callbacks: extra Keras callbacks (e.g. the tracking callback).
        checkpoint: the folder the training state is saved to after each epoch; None saves none.
        saved: a stopped run's state to go on from (its weights are loaded, its epochs skipped).
    Raises:
        TrainingError: the loss became NaN or infinite (training stops at that epoch).
    """
    timer = _EpochTimer(saved.epoch_seconds if saved else ())
    stopping = _early_stopping(cfg)
    last: list[keras.callbacks.Callback] = []
    if checkpoint is not None:  # last: early stopping's state and the logs are complete by then
        rule = stopping[0] if stopping else None
        last.append(Checkpoint(checkpoint, saved, rule, timer.seconds))
    validation = (splits.val.x, splits.val.y) if splits.val is not None else None
    done = saved.epoch if saved else 0
    if done:
        log.info("resuming at epoch %d of %d", done + 1, cfg.epochs)
    start = time.perf_counter()
    keras_history = model.fit(
        splits.train.x,
        splits.train.y,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        validation_data=validation,
        validation_batch_size=EVAL_BATCH_SIZE,
        shuffle=cfg.shuffle,
        verbose=cfg.verbose,
        initial_epoch=done,
        # Stops at the first non-finite loss instead of training on garbage.
        callbacks=[timer, keras.callbacks.TerminateOnNaN(), *callbacks, *stopping, *last],
    )
    # A resumed run's fit counts its earlier epochs' seconds too.
    fit_seconds = time.perf_counter() - start + (saved.fit_seconds if saved else 0.0)
    metrics = _joined(saved.history if saved else {}, keras_history.history)
    _check_finite(metrics.get("loss", ()))
    log.info("fit: %d epochs in %.1f s", len(timer.seconds) - done, time.perf_counter() - start)
    stopped, best = _stopped_and_best(stopping, len(timer.seconds))
    return History(
        metrics=metrics,
        epoch_seconds=tuple(timer.seconds),
        fit_seconds=fit_seconds,
        stopped_epoch=stopped,
        best_epoch=best,
    )


def _joined(earlier: dict, now: dict) -> dict[str, tuple[float, ...]]:
    """Each metric's values per epoch: a resumed run's earlier epochs, then this fit's."""
    return {
        k: tuple(float(v) for v in (*earlier.get(k, ()), *now.get(k, ())))
        for k in dict.fromkeys([*earlier, *now])
    }


def _check_finite(losses: Sequence[float]) -> None:
    if losses and not math.isfinite(losses[-1]):
        raise TrainingError(
            f"training diverged at epoch {len(losses)}: the loss became {losses[-1]}; "
            "try a lower optimizer.learning_rate",
            tags={"diverged_epoch": str(len(losses)), "diverged_loss": str(losses[-1])},
        )


def _early_stopping(cfg: TrainerConfig) -> list[keras.callbacks.EarlyStopping]:
    """Keras' EarlyStopping as `trainer.early_stopping` says, or none."""
    rule = cfg.early_stopping
    if rule.patience is None:
        return []
    return [
        keras.callbacks.EarlyStopping(
            monitor=rule.monitor,
            min_delta=rule.min_delta,
            patience=rule.patience,
            restore_best_weights=rule.restore_best_weights,
            verbose=0,
        )
    ]


def _stopped_and_best(stopping, epochs: int) -> tuple[int | None, int | None]:
    """The epoch early stopping stopped at (None if it let every epoch run) and the best epoch
    (1-based), from Keras' callback; (None, None) without early stopping."""
    if not stopping:
        return None, None
    rule = stopping[0]
    stopped = rule.stopped_epoch + 1 if rule.stopped_epoch else None
    best = rule.best_epoch + 1
    if stopped is not None:
        log.info("early stopping at epoch %d of %d; best epoch %s", stopped, epochs, best)
    return stopped, best

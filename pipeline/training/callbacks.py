"""Keras callbacks of a job: its epochs handed to the recorder, and a search trial's pruning."""

from __future__ import annotations

import json
import logging

from pipeline.tracking.client import RecorderClient
from pipeline.tracking.protocol import LogMetrics
from pipeline.training.backend import keras

log = logging.getLogger(__name__)


class LearningRateToLogs(keras.callbacks.Callback):
    """Adds the optimizer's learning rate at the end of each epoch to the epoch's logs (the
    metric `learning_rate`), so a schedule is seen in the run's curves."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


class EpochsToRecorder(keras.callbacks.Callback):
    """Hands each epoch's logs to the recorder (step = epoch number), and stops the job early
    if the recorder could not open the run in the store."""

    def __init__(self, recorder: RecorderClient) -> None:
        super().__init__()
        self.recorder = recorder

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.recorder.send(LogMetrics({k: float(v) for k, v in logs.items()}, step=epoch + 1))
        self.recorder.check()


class ReportToTrial(keras.callbacks.Callback):
    """Reports each epoch's validation accuracy to the Optuna trial this job is (set by the
    `optuna` sweeper in `search.*`), and stops training when the study's pruner says so;
    `pruned_at` is then the epoch."""

    def __init__(self, search) -> None:
        super().__init__()
        import optuna

        from hydra_plugins.pipeline_optuna.sweeper import IN_MEMORY, make_pruner, make_storage

        if search.storage is None:  # the sweeping process's own memory: jobs it runs itself
            study = IN_MEMORY.get(search.study)
            if study is None:
                log.warning("trial %s: its study is in another process's memory, so it is not "
                            "pruned (give hydra.sweeper.storage)", search.trial_number)  # fmt: skip
        else:
            study = optuna.load_study(
                study_name=search.study,
                storage=make_storage(search.storage),
                pruner=make_pruner(
                    json.loads(search.pruner) if search.pruner.startswith("{") else search.pruner,
                    search.pruner_warmup_epochs,
                    search.pruner_startup_trials,
                ),
            )
        self.trial = optuna.trial.Trial(study, search.trial_id) if study is not None else None
        self.pruned_at: int | None = None

    def on_train_begin(self, logs=None):
        self.pruned_at = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_accuracy")
        if self.trial is None or value is None:
            return
        self.trial.report(float(value), step=epoch + 1)
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.model.stop_training = True

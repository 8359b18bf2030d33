"""Data-parallel training with tf.distribute: the strategy `trainer.strategy` names."""

from __future__ import annotations

import contextlib
import json
import logging
import os

from pipeline.config.schema import TrainerConfig
from pipeline.errors import ConfigError
from pipeline.training.backend import keras, tf

log = logging.getLogger(__name__)


def split_cpu(cfg: TrainerConfig) -> None:
    """Make `trainer.cpu_devices` logical CPU devices (possible only before TensorFlow's first
    op)."""
    if cfg.cpu_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(cfg.cpu_devices)]
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != cfg.cpu_devices:
            log.warning(
                "trainer.cpu_devices=%d not applied: TensorFlow is already running with %d",
                cfg.cpu_devices,
                have,
            )


def check(cfg: TrainerConfig) -> None:
    """Fail now, before any data is read, if the strategy cannot be had here.

    Raises:
        ConfigError: a listed device does not exist, TF_CONFIG is not valid JSON, or it lists
            more than one worker (which Keras 3 cannot train across).
    """
    if cfg.strategy == "mirrored" and cfg.devices:
        known = {d.name.lower() for d in tf.config.list_logical_devices()}
        for device in cfg.devices:
            name = device.lower().removeprefix("/")
            if not any(k.endswith(name) for k in known):
                raise ConfigError(
                    f"trainer.devices: no device {device!r} here; there are "
                    f"{', '.join(sorted(known))}"
                )
    if cfg.strategy == "multi_worker":
        cluster = _tf_config().get("cluster") or {}
        workers = sum(len(cluster.get(kind) or ()) for kind in ("chief", "worker"))
        if workers > 1:
            raise ConfigError(
                f"trainer.strategy=multi_worker over the {workers} workers of TF_CONFIG: Keras "
                f"{keras.__version__}'s model.fit fails across workers (keras-team/keras#20585); "
                "use trainer.strategy=mirrored on one machine"
            )


class _OneDevice:
    """What the job asks of a strategy, where there is no tf.distribute (JAX): one replica."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def strategy(cfg: TrainerConfig):
    """The tf.distribute strategy to build and train the model under (raises as `check`)."""
    if tf is None:  # the schema allows only the default strategy on another engine
        return _OneDevice()
    check(cfg)
    if cfg.strategy == "mirrored":
        devices = list(cfg.devices) or None
        if devices is None and not tf.config.list_logical_devices("GPU") and cfg.cpu_devices > 1:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        chosen = tf.distribute.MirroredStrategy(devices=devices)
    elif cfg.strategy == "multi_worker":
        chosen = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        return tf.distribute.get_strategy()
    log.info("%s over %d replicas", type(chosen).__name__, chosen.num_replicas_in_sync)
    return chosen


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if raw is None:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ConfigError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return parsed

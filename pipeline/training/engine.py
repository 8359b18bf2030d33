"""The engine Keras runs on (`trainer.backend`), chosen before Keras is first imported.

Keras reads `KERAS_BACKEND` once, when it is imported; this module imports neither Keras nor
an engine, so the command line calls `select` between checking the config and importing the
training code.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from pipeline.config.schema import TrainerConfig
from pipeline.errors import ConfigError


def select(cfg: TrainerConfig) -> None:
    """Make `cfg.backend` the engine of this process's Keras.

    Raises:
        ConfigError: Keras already runs here on another engine (a sweep over trainer.backend
            in one process), or the engine is not installed.
    """
    keras = sys.modules.get("keras")
    if keras is not None:
        running = keras.backend.backend()
        if running != cfg.backend:
            raise ConfigError(
                f"trainer.backend={cfg.backend}: this process already runs Keras on {running}, "
                "which cannot change inside a process: run each engine in a command of its own"
            )
        return
    if importlib.util.find_spec(cfg.backend) is None:
        raise ConfigError(
            f"trainer.backend={cfg.backend} needs {cfg.backend}, which is not installed: "
            f"pip install -e '.[{cfg.backend}]'"
        )
    os.environ["KERAS_BACKEND"] = cfg.backend

"""TensorFlow and Keras, imported without the C++ start-up chatter on stderr.

TensorFlow prints CUDA probing and oneDNN notes to file descriptor 2 while it loads, and
TF_CPP_MIN_LOG_LEVEL set from inside a running process does not reach that code; the notes
say nothing a user can act on. Modules take `keras` and `tf` from here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration (C++ logging bypasses Python)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


with stderr_silenced():
    import keras

    # TensorFlow only when Keras runs on it (`trainer.backend`, see `engine`): on JAX it is
    # neither needed nor worth its start-up.
    tf = None
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
    else:
        # Where TensorFlow is installed Keras imports it on any engine, only to seed it
        # (`set_random_seed`) and to look for tf.data: 530 MB and 2 s this process never
        # uses. Keras asks its lazy module whether TensorFlow is available; here it is not.
        from keras.src.utils import module_utils

        module_utils.tensorflow._available = False


def version() -> dict[str, str]:
    """The versions a saved model depends on: Keras and its engine."""
    engine = keras.backend.backend()
    module = tf if engine == "tensorflow" else __import__(engine)
    return {"keras": keras.__version__, engine: module.__version__, "backend": engine}


class _NoRetracingNote(logging.Filter):
    """A sweep run in one process builds one model per job, and TensorFlow then warns that its
    functions are traced again: expected, and nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


if tf is not None:
    tf.get_logger().addFilter(_NoRetracingNote())
    # tf.distribute logs every reduction at INFO; the pipeline logs what it chose itself.
    tf.get_logger().setLevel(logging.WARNING)

__all__ = ["keras", "tf"]

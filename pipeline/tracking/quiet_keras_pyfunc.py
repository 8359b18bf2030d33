"""The logged model's pyfunc loader: MLflow's Keras pyfunc, but predicting without Keras'
progress bar, so that every MLflow client (`mlflow.pyfunc`, `mlflow models predict`, whose
stdout is the predictions' JSON, `mlflow models serve`) answers silently.

Logged with the model (MLflow's `code` folder) and imported by MLflow alone: it must import
nothing of the pipeline. `mlflow.keras.load_model` reads the same `data/model.keras`.
"""

from __future__ import annotations

import os


class QuietKerasModel:
    """`predict` as MLflow's Keras wrapper does it (a DataFrame gives a DataFrame, anything else
    an array), with `verbose=0`."""

    def __init__(self, model) -> None:
        self.model = model

    def get_raw_model(self):
        return self.model

    def predict(self, data, params=None):
        import numpy as np
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            out = self.model.predict(data.values, verbose=0)
            return pd.DataFrame(out, index=data.index)
        return np.asarray(self.model.predict(data, verbose=0))


def _load_pyfunc(path: str, model_config=None) -> QuietKerasModel:
    """Called by `mlflow.pyfunc.load_model` with the model's `data` folder."""
    import keras

    return QuietKerasModel(keras.saving.load_model(os.path.join(path, "model.keras")))

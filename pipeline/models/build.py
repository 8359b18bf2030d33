"""Stage `build`: the linear softmax classifier or the one-hidden-layer ANN, compiled."""

from __future__ import annotations

import numpy as np

from pipeline.config.schema import ModelConfig, OptimizerConfig
from pipeline.training.backend import keras

OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}


def build(
    model_cfg: ModelConfig,
    optimizer_cfg: OptimizerConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    steps_per_execution: int = 1,
) -> keras.Model:
    """Build and compile a classifier.

    `linear`: Flatten, Dense(num_classes, softmax) -- score = W·x + b, W (784, 10), b (10,).
    `ann`:    Flatten, Dense(hidden_units, activation), Dense(num_classes, softmax).
    Both take uint8 images and first scale them to 0..1 (layer `scale`, no parameters).
    The output layer is named `dense` and the hidden one `hidden`, so weights are named
    `dense/kernel`, `dense/bias`, `hidden/kernel`, `hidden/bias`.

    Args:
        input_shape: one image's shape, e.g. (28, 28).
        steps_per_execution: training steps per call into the compiled graph (see
            `fit.steps_per_execution`).
    Returns:
        A keras.Model compiled with sparse categorical cross-entropy and accuracy.
    """
    layers = [
        keras.Input(shape=input_shape, dtype="uint8", name="image"),
        keras.layers.Rescaling(1.0 / 255.0, name="scale"),
        keras.layers.Flatten(name="flatten"),
    ]
    if model_cfg.name == "ann":
        layers.append(
            keras.layers.Dense(
                model_cfg.hidden_units, activation=model_cfg.activation, name="hidden"
            )
        )
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="dense"))
    model = keras.Sequential(layers, name=model_cfg.name)
    model.compile(
        optimizer=OPTIMIZERS[optimizer_cfg.name](learning_rate=optimizer_cfg.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def named_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights by path, e.g. {"dense/kernel": (784, 10), "dense/bias": (10,)}."""
    return {f"{layer.name}/{w.name}": w.numpy() for layer in model.layers for w in layer.weights}

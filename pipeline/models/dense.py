"""The notes' two models: the linear softmax classifier and the one-hidden-layer ANN.

Builders take one image's shape (H, W, C), already scaled to 0..1, and the number of classes,
and return an uncompiled keras.Model; Keras is imported when a model is built, so that the
config is checked against a builder's signature without TensorFlow.
"""

from __future__ import annotations

from typing import Annotated

from pipeline.config.targets import Range


def linear(input_shape: tuple[int, ...], num_classes: int):
    """score = W·x + b: Flatten, Dense(num_classes, softmax); W (H·W·C, classes), b (classes,)."""
    from pipeline.training.backend import keras

    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(num_classes, activation="softmax", name="dense"),
        ],
        name="linear",
    )


def ann(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden_units: Annotated[int, Range(min=1)] = 128,
    activation: str = "relu",
):
    """Flatten, Dense(hidden_units, activation), Dense(num_classes, softmax)."""
    from pipeline.training.backend import keras

    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(hidden_units, activation=activation, name="hidden"),
            keras.layers.Dense(num_classes, activation="softmax", name="dense"),
        ],
        name="ann",
    )

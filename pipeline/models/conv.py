"""Keras' own "Simple MNIST convnet" example, layer for layer (34,826 parameters on MNIST)."""

from __future__ import annotations

from typing import Annotated

from pipeline.config.targets import Range


def cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    filters: Annotated[tuple[int, ...], Range(min=1)] = (32, 64),
    kernel_size: Annotated[int, Range(min=1)] = 3,
    dropout: Annotated[float, Range(min=0, max=1, max_excluded=True)] = 0.5,
):
    """A Conv2D(filters[i], kernel_size, relu) and a MaxPooling2D(2) per entry of `filters`,
    then Flatten, Dropout(dropout), Dense(num_classes, softmax).

    Args:
        input_shape: one image, (H, W, C), scaled to 0..1.
        filters: the convolutions' widths, first to last (the example's 32, 64).
    """
    from pipeline.training.backend import keras

    layers = [keras.Input(shape=input_shape)]
    for i, width in enumerate(filters):
        layers += [
            keras.layers.Conv2D(width, kernel_size, activation="relu", name=f"conv{i + 1}"),
            keras.layers.MaxPooling2D(pool_size=2, name=f"pool{i + 1}"),
        ]
    layers += [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dropout(dropout, name="dropout"),
        keras.layers.Dense(num_classes, activation="softmax", name="dense"),
    ]
    return keras.Sequential(layers, name="cnn")

"""Build the configured model around its builder's network and compile it with the configured
optimizer: the pipeline puts the uint8 scaling in front, so the model takes raw images."""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from pipeline.config.schema import ModelConfig, OptimizerConfig
from pipeline.config.targets import check_keys, resolve
from pipeline.errors import ConfigError
from pipeline.training.backend import keras


def build(
    model_cfg: ModelConfig,
    optimizer_cfg: OptimizerConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    steps_per_execution: int = 1,
    total_steps: int = 1,
) -> keras.Model:
    """The model of `model_cfg`, compiled with sparse categorical cross-entropy and accuracy.

    Its input is one uint8 image of `input_shape` ((H, W) or (H, W, C)); layer `scale` takes it
    to 0..1 and the builder's network, called with (H, W, C) and `num_classes`, follows.

    Args:
        steps_per_execution: training steps per call into the compiled graph (see
            `fit.steps_per_execution`).
        total_steps: the run's training steps, over which a schedule decays the rate.
    Raises:
        ConfigError: the builder refused its keys or did not return a Keras model.
    """
    shape = tuple(input_shape) if len(input_shape) == 3 else (*input_shape, 1)
    network = _network(model_cfg, shape, num_classes)
    image = keras.Input(shape=tuple(input_shape), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(image)
    if len(input_shape) == 2:
        x = keras.layers.Reshape(shape, name="channels")(x)
    out = network(x)
    if keras.mixed_precision.global_policy().compute_dtype != "float32":
        # Under mixed precision the probabilities and the loss stay in float32.
        out = keras.layers.Activation("linear", dtype="float32", name="float32_output")(out)
    model = keras.Model(image, out, name=model_cfg.name)
    model.compile(
        optimizer=optimizer(optimizer_cfg, total_steps),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def _network(cfg: ModelConfig, shape: tuple[int, ...], num_classes: int) -> keras.Model:
    builder = resolve(cfg.target, "model._target_")
    try:
        # Its weights are made without their values first: a model too large for this
        # machine is refused before they take any memory. Their values then come from the
        # same initializers, in the same order, as when built in one go.
        with keras.StatelessScope(initialize_variables=False):
            network = builder(shape, num_classes, **cfg.keys)
    except (ValueError, TypeError) as exc:  # a value out of the builder's range
        keras.backend.clear_session()  # nor are they made later
        raise ConfigError(f"model={cfg.name} ({cfg.target}): {exc}") from exc
    try:
        _check_memory(cfg, network)
    except ConfigError:
        keras.backend.clear_session()
        raise
    with keras.StatelessScope():  # leaving it gives every weight made above its values
        pass
    if not isinstance(network, keras.Model):
        raise ConfigError(
            f"model._target_={cfg.target} returned a {type(network).__name__}, not a keras.Model"
        )
    if tuple(network.output_shape) != (None, num_classes):
        raise ConfigError(
            f"model._target_={cfg.target} gives outputs of shape {network.output_shape}, not "
            f"(None, {num_classes}): end with Dense({num_classes}, activation='softmax')"
        )
    return network


# What training holds per parameter, in float32: the weight, its gradient and up to two
# optimizer slots (Adam's moments), besides the activations.
BYTES_PER_PARAM = 16


def _check_memory(cfg: ModelConfig, network: keras.Model) -> None:
    """Refuse a network whose weights, gradients and optimizer state exceed the memory this
    machine has free (when it says: Linux and macOS do).

    Raises:
        ConfigError: with the memory it would need and the memory there is.
    """
    need = network.count_params() * BYTES_PER_PARAM
    free = available_memory()
    if free is not None and need > free:
        keys = " ".join(f"model.{k}={v}" for k, v in cfg.keys.items())
        raise ConfigError(
            f"model={cfg.name} {keys}: {network.count_params():,} parameters need about "
            f"{_gigabytes(need)} to train (weights, gradients, optimizer state) and this machine "
            f"has {_gigabytes(free)} free: choose a smaller model"
        )


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (MemAvailable), else all of it; None if the
    system does not say."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gigabytes(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_optimizer(cfg: OptimizerConfig) -> type:
    """The optimizer's class, its keys checked against the class's signature.

    Raises:
        ConfigError: the class does not import, or does not take one of the keys.
    """
    cls = resolve(cfg.target, "optimizer._target_")
    check_keys(cls, {"learning_rate": cfg.learning_rate, **cfg.keys}, "optimizer")
    return cls


def optimizer(cfg: OptimizerConfig, total_steps: int = 1) -> keras.optimizers.Optimizer:
    """The configured optimizer, its learning rate constant or following `cfg.schedule`."""
    rate = cfg.learning_rate
    steps = max(1, total_steps)
    if cfg.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=steps, alpha=cfg.decay_to)
    elif cfg.schedule == "exponential":
        rate = keras.optimizers.schedules.ExponentialDecay(
            rate, decay_steps=steps, decay_rate=cfg.decay_to
        )
    return check_optimizer(cfg)(learning_rate=rate, **cfg.keys)


def total_steps(num_train: int, batch_size: int, epochs: int) -> int:
    """The training steps of a run: its batches per epoch times its epochs."""
    return math.ceil(num_train / batch_size) * epochs


def named_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The weights by layer and name, in layer order, e.g. {"dense/kernel": (784, 10),
    "dense/bias": (10,)} for the linear model (the network's own name left out)."""
    out = {}
    for w in model.weights:
        parts = w.path.split("/")
        out["/".join(parts[-2:])] = w.numpy()
    return out


def save_for_clients(model: keras.Model, path: Path) -> None:
    """Save `model` as a .keras file for the clients of the logged model: as trained, except
    that it runs one step per call into the graph (`steps_per_execution` is for training; a
    client's `predict` with the trained value draws a progress bar as long as that value) and
    leaves XLA to the client's engine (`jit_compile="auto"`: JAX saves True, which Keras on
    TensorFlow warns of and turns off for these models)."""
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        files = [(info, archive.read(info)) for info in archive.infolist()]
    config = json.loads(dict((i.filename, d) for i, d in files)["config.json"])
    compiled = config.get("compile_config") or {}
    for_clients = {"steps_per_execution": 1, "jit_compile": "auto"}
    if not compiled or all(compiled.get(k, v) == v for k, v in for_clients.items()):
        return
    config["compile_config"] |= for_clients
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in files:  # each entry as Keras wrote it (stored, not compressed)
            archive.writestr(info, json.dumps(config) if info.filename == "config.json" else data)

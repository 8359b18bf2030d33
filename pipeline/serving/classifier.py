"""A trained model from the store, ready to predict: its Keras model, class names and where
it came from; and the figure of its predictions."""

from __future__ import annotations

import ast
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.images import Preparation
from pipeline.errors import ImageError, InputError, PipelineError
from pipeline.serving.prepare import image_files, prepare_file

TOP = 3
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class ModelError(PipelineError):
    """A model that cannot be found or loaded, or does not take the images it was trained on."""


@dataclass
class Classifier:
    """A loaded model, the names of its classes, where it came from and how an image is
    prepared for it."""

    model: object
    class_names: tuple[str, ...]
    uri: str
    preparation: Preparation = field(default_factory=Preparation)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of (n, H, W) or (n, H, W, 3) images as its preparation makes
        them (given a channel axis when the model's input has one): uint8 (or whole numbers)
        0..255 as the model takes them, or float 0..1 (Keras's usual scaling), scaled by 255.

        Raises:
            InputError: not a batch of the model's shape, or values neither 0..255 nor 0..1
                (NaN, negative, a float image 0..255 with fractions); says which it takes.
        """
        images = as_pixels(images)
        shape = getattr(self.model, "input_shape", None)
        if shape is not None:
            want = tuple(shape[1:])
            given = tuple(images.shape[1:])
            grey = want[:-1] if want[-1:] == (1,) else want  # (28, 28) for (28, 28, 1)
            if given not in {want, grey, (*grey, 1)}:
                raise InputError(
                    f"images of shape {images.shape}: the model takes a batch of "
                    f"{'x'.join(map(str, grey))} images, shape (n, {', '.join(map(str, grey))}) "
                    "(one image x as x[None])"
                )
            images = images.reshape((len(images), *want))
        return np.asarray(self.model.predict(images, verbose=0), dtype=np.float64)


PIXELS = "uint8 images 0..255 or float images 0..1"


def as_pixels(images) -> np.ndarray:
    """Images as a model takes them, uint8 0..255: uint8 as they are, other integers and whole
    float numbers in 0..255 as the same values, floats that all lie in 0..1 scaled by 255.

    Raises:
        InputError: values that are none of these, or not numbers; says what it takes.
    """
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"images of type {x.dtype}: a model takes {PIXELS}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise InputError(f"images of type {x.dtype}: a model takes {PIXELS}")
    if x.size == 0:
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise InputError(f"images holding NaN or infinite values: a model takes {PIXELS}")
        if x.min() >= 0 and x.max() <= 1:
            return np.rint(x * 255.0).astype(np.uint8)
    low, high = x.min(), x.max()
    if low >= 0 and high <= 255 and np.array_equal(x, np.rint(x)):
        return x.astype(np.uint8)
    raise InputError(
        f"images of type {x.dtype} with values {low:g}..{high:g}: a model takes {PIXELS}"
    )


def model_uri(model: str) -> str:
    """`models:/…` and `runs:/…` as they are; a bare run id as its logged model."""
    if RUN_ID.match(model):
        return f"runs:/{model}/model"
    return model


def _run_id(uri: str) -> str | None:
    """The id of the run that logged the model at `uri`."""
    from mlflow import MlflowClient

    if uri.startswith("runs:/"):
        return uri.removeprefix("runs:/").split("/", 1)[0]
    if uri.startswith("models:/"):
        name_and_ref = uri.removeprefix("models:/")
        client = MlflowClient()
        if "@" in name_and_ref:
            name, alias = name_and_ref.split("@", 1)
            return client.get_model_version_by_alias(name, alias).run_id
        name, _, version = name_and_ref.partition("/")
        return client.get_model_version(name, version).run_id
    return None


def _class_names(run_id: str | None, num_classes: int) -> tuple[str, ...]:
    """The class names the run trained with (its `dataset.class_names` parameter)."""
    from mlflow import MlflowClient

    if run_id is not None:
        raw = MlflowClient().get_run(run_id).data.params.get("dataset.class_names")
        try:
            names = tuple(str(n) for n in ast.literal_eval(raw)) if raw else ()
        except (ValueError, SyntaxError):
            names = ()
        if len(names) == num_classes:
            return names
    return tuple(str(k) for k in range(num_classes))


def load_classifier(model: str) -> Classifier:
    """Load MODEL from the store.

    Raises:
        ModelError: the model does not exist, cannot be loaded, or does not take 28x28 images.
    """
    import mlflow

    import pipeline.training.backend  # noqa: F401  (TensorFlow without its start-up chatter)
    from pipeline import use_store

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per error
    uri = model_uri(model)
    store = use_store()
    try:
        run_id = _run_id(uri)
        keras_model = mlflow.keras.load_model(uri)
    except Exception as exc:  # MLflow raises several kinds for a model it cannot find
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        first = message.strip().splitlines()[0]
        raise ModelError(f"model {model} not found in {store}: {first}") from exc
    metadata = _metadata(uri)
    preparation = Preparation.from_dict(metadata.get("preparation"))
    shape = tuple(keras_model.input_shape[1:])
    size = tuple(preparation.size)
    expected = {(*size, preparation.channels)} | ({size} if preparation.channels == 1 else set())
    if shape not in expected:
        wanted = "x".join(map(str, (*size, 3) if preparation.channels == 3 else size))
        raise ModelError(
            f"model {model} takes inputs of shape {shape}, not {wanted} images as it was "
            "logged to take"
        )
    num_classes = int(keras_model.output_shape[-1])
    names = tuple(str(n) for n in metadata.get("class_names", ()))
    classes = names if len(names) == num_classes else _class_names(run_id, num_classes)
    return Classifier(keras_model, classes, uri, preparation)


def _metadata(uri: str) -> dict:
    """The logged model's metadata (class names, preparation); {} for a model without."""
    from mlflow.models import get_model_info

    try:
        return dict(get_model_info(uri).metadata or {})
    except Exception:  # an older model, or a store that keeps no MLmodel file: the defaults
        return {}


def top(probs: np.ndarray, names: tuple[str, ...], k: int = TOP) -> list[tuple[str, float]]:
    """The k likeliest classes, best first, with their probabilities."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(names[i], float(probs[i])) for i in order]


def figure(images: np.ndarray, probs: np.ndarray, names, labels: list[str], ink_on_black=True):
    """The notes' figure: each image as the model saw it, beside its probability bars (the
    likeliest class in blue); MNIST-like images dark on white, others as they are."""
    from matplotlib.figure import Figure

    n = len(images)
    fig = Figure(figsize=(7, 2.2 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, 2, squeeze=False, width_ratios=[1, 2])
    for (image_ax, bars_ax), image, p, label in zip(axes, images, probs, labels, strict=True):
        best = int(np.argmax(p))
        image_ax.imshow(image, cmap="binary" if ink_on_black else "gray", vmin=0, vmax=255)
        image_ax.set_xticks([])
        image_ax.set_yticks([])
        image_ax.set_xlabel(f"{names[best]} {100 * p[best]:.0f}%", color="blue")
        image_ax.set_title(label, fontsize=9)
        bars = bars_ax.bar(range(len(p)), p, color="#777777")
        bars[best].set_color("blue")
        bars_ax.set_ylim(0, 1)
        bars_ax.set_xticks(range(len(p)), names, rotation=45 if max(map(len, names)) > 3 else 0)
    return fig


def predict_files(
    classifier: Classifier, paths: list[str], on_error=None
) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """The image files named (see `image_files`) that could be prepared, as the model saw them,
    and its class probabilities of each.

    `on_error(path, error)` is called for each image that cannot be prepared (not an image, too
    large or small, no ink), which is then left out; without it the first such error is raised.

    Raises:
        ImageError: a path that does not exist, a folder without images, or (without
            `on_error`) an image that cannot be prepared.
    """
    files, images = [], []
    for path in image_files(paths):
        try:
            images.append(prepare_file(path, classifier.preparation))
        except ImageError as exc:
            if on_error is None:
                raise
            on_error(path, exc)
            continue
        files.append(path)
    if not images:
        how = classifier.preparation
        shape = (*how.size, 3) if how.channels == 3 else tuple(how.size)
        empty = np.zeros((0, *shape), np.uint8)
        return files, empty, np.zeros((0, len(classifier.class_names)))
    batch = np.stack(images)
    return files, batch, classifier.probabilities(batch)

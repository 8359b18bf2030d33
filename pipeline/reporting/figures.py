"""Stage `report`: figures of a run and an HTML page of them (returned, never written here)."""

from __future__ import annotations

import json
import math
from typing import Any

import matplotlib
import numpy as np

# Figures are built from matplotlib.figure.Figure, not pyplot: they render with Agg and no
# window can ever open, whatever backend the environment selects.
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from sklearn.metrics import ConfusionMatrixDisplay

from pipeline.config.schema import ReportConfig
from pipeline.data.load import Dataset
from pipeline.reporting.inputs import json_default
from pipeline.training.results import History, Metrics

RIGHT_COLOR = "blue"
WRONG_COLOR = "red"
BAR_COLOR = "#777777"
# Columns of the image grids in samples.png and of (image, bars) pairs in predictions.png,
# as the course notes lay them out.
SAMPLE_COLUMNS = 5
# At most this many hidden units or filters in the weights figure.
MAX_UNITS = 16
PREDICTION_COLUMNS = 3
# Montage cells, in image pixels: room under an image for its label, between images, above a
# mistake for its caption.
SAMPLE_LABEL_PX = 9
SAMPLE_GAP_PX = 6
PREDICTION_LABEL_PX = 10
PREDICTION_GAP_PX = 4
MISTAKE_CAPTION_PX = 14


def _grid(n: int, columns: int) -> tuple[int, int]:
    """(rows, columns) of a grid holding `n` cells, at most `columns` wide."""
    cols = max(1, min(n, columns))
    return math.ceil(n / cols), cols


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def montage(
    images: np.ndarray, cols: int, cell: tuple[int, int], at: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """The images laid out in one array, row-major, `cols` to a row, each in a cell of
    `cell` = (height, width) pixels at offset `at` = (row, column) within it; the rest is NaN,
    which draws as nothing.

    One image on one axes draws many times faster than one axes per image, and looks the same.
    """
    n, h, w = images.shape[:3]
    rows = math.ceil(n / cols) if n else 0
    out = np.full((rows * cell[0], cols * cell[1], *images.shape[3:]), np.nan)
    for i, image in enumerate(images):
        top, left = (i // cols) * cell[0] + at[0], (i % cols) * cell[1] + at[1]
        out[top : top + h, left : left + w] = image
    return out


def _cmap(ds: Dataset) -> str:
    """MNIST's light ink on black is drawn dark on white, as on paper; other images as they are."""
    return "binary" if ds.ink_on_black else "gray"


def _montage_axes(fig: Figure | Any, grid: np.ndarray, cmap: str, vmax: float):
    """One axes showing `grid` (a montage, grey or RGB) pixel for pixel, without frame or
    ticks; its NaN cells are transparent."""
    ax = fig.add_subplot()
    if grid.ndim == 3:  # colour: RGBA, the empty cells transparent
        rgba = np.ones((*grid.shape[:2], 4))
        filled = ~np.isnan(grid).any(axis=2)
        rgba[..., :3][filled] = np.clip(grid[filled] / vmax, 0, 1)
        rgba[..., 3] = filled
        ax.imshow(rgba, interpolation="nearest")
    else:
        colors = matplotlib.colormaps[cmap].with_extremes(bad=(1, 1, 1, 0))
        ax.imshow(grid, cmap=colors, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    # A pixel of margin, so that the frames on the montage's edges are not cut.
    ax.set_xlim(-1.5, grid.shape[1] + 0.5)
    ax.set_ylim(grid.shape[0] + 0.5, -1.5)
    return ax


def _frames(ax, rows: int, cols: int, cell: tuple[int, int], box: tuple[int, int, int, int]):
    """A thin frame around the box (top, left, height, width) of every cell, as an axes'."""
    top, left, height, width = box
    ax.add_collection(
        PatchCollection(
            [
                Rectangle((c * cell[1] + left - 0.5, r * cell[0] + top - 0.5), width, height)
                for r in range(rows)
                for c in range(cols)
            ],
            facecolor="none",
            edgecolor="black",
            linewidth=0.8,
        )
    )


def samples(ds: Dataset, num: int, title: str) -> Figure:
    """The first training image with a colour bar of its raw values, beside a grid of the first
    `num` training images (scaled to 0..1) labelled with their class names.

    The figure holds two subfigures: `fig.subfigs[0]` the single image and its colour bar,
    `fig.subfigs[1]` the grid as one montage (see `montage`), each label a text with
    gid `label<i>` under its image.
    """
    n = min(num, len(ds.train_x))
    rows, cols = _grid(n, SAMPLE_COLUMNS)
    fig = Figure(figsize=(5 + 2 * cols, max(4.5, 2.1 * rows)), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[5, 2 * cols])

    ax = left.subplots()
    im = ax.imshow(ds.train_x[0], vmin=0, vmax=255)
    left.colorbar(im, ax=ax, shrink=0.7)
    ax.set_title(f"{ds.class_names[int(ds.train_y[0])]}: raw pixel values")
    ax.grid(False)

    h, w = ds.train_x.shape[1:3]
    cell = (h + SAMPLE_LABEL_PX, w + SAMPLE_GAP_PX)
    ax = _montage_axes(right, montage(ds.train_x[:n] / 255.0, cols, cell), _cmap(ds), 1.0)
    _frames(ax, rows, cols, cell, (0, 0, h, w))
    for i in range(n):
        ax.text(
            (i % cols) * cell[1] + w / 2,
            (i // cols) * cell[0] + h + 1,
            ds.class_names[int(ds.train_y[i])],
            ha="center",
            va="top",
            gid=f"label{i}",
        )
    fig.suptitle(f"{title}: the first {n} training images")
    return fig


def learning_curves(history: History, title: str) -> Figure:
    """Accuracy and loss per epoch, training vs validation (training only without validation)."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    epochs = range(1, history.epochs + 1)
    for ax, name in zip(fig.subplots(1, 2), ("accuracy", "loss"), strict=True):
        ax.plot(epochs, history.metrics[name], "o-", ms=3, label=f"training {name}")
        if history.has_validation:
            ax.plot(epochs, history.metrics[f"val_{name}"], "s-", ms=3, label=f"validation {name}")
        ax.set_title(
            f"{'Training and validation' if history.has_validation else 'Training'} {name}"
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def predictions(ds: Dataset, metrics: Metrics, num: int, title: str) -> Figure:
    """The first `num` test images, each beside a bar chart of its class probabilities.

    Drawn on one axes: the images as one montage, PREDICTION_COLUMNS (image, bars) pairs to a
    row, every bar in one BarContainer (image i's bar k is `containers[0][10 * i + k]`, its
    height the probability times the image's height). Image i's label (text gid `label<i>`)
    is blue when the prediction is right, red when wrong; the predicted bar is red and the
    true one blue (so a right prediction shows a single blue bar).
    """
    n = min(num, len(ds.test_x))
    rows, cols = _grid(n, PREDICTION_COLUMNS)
    num_classes = metrics.probabilities.shape[1]
    h, w = ds.test_x.shape[1:3]
    step = w / num_classes  # each bar's slot: the bars take the image's width
    bars_left = w + PREDICTION_GAP_PX
    cell = (h + PREDICTION_LABEL_PX, bars_left + w + PREDICTION_GAP_PX * 2)
    fig = Figure(figsize=(cell[1] * cols / 18, cell[0] * rows / 18 + 0.6), layout="constrained")
    ax = _montage_axes(fig, montage(ds.test_x[:n], cols, cell), _cmap(ds), 255)
    _frames(ax, rows, cols, cell, (0, 0, h, w))
    _frames(ax, rows, cols, cell, (0, bars_left, h, w))

    x, bottom, height, colors = [], [], [], []
    for i in range(n):
        probs = metrics.probabilities[i]
        pred, true = int(np.argmax(probs)), int(metrics.labels[i])
        top, left = (i // cols) * cell[0], (i % cols) * cell[1]
        ax.text(
            left + w / 2,
            top + h + 1,
            f"{ds.class_names[pred]} {100 * probs[pred]:2.0f}% ({ds.class_names[true]})",
            color=RIGHT_COLOR if pred == true else WRONG_COLOR,
            ha="center",
            va="top",
            gid=f"label{i}",
        )
        for k in range(num_classes):
            x.append(left + bars_left - 0.5 + (k + 0.5) * step)
            bottom.append(top + h - 0.5)
            height.append(-probs[k] * h)  # the image's rows grow downwards
            # True after predicted: when they coincide the bar must read as right.
            colors.append(RIGHT_COLOR if k == true else WRONG_COLOR if k == pred else BAR_COLOR)
            ax.text(x[-1], top + h + 0.3, str(k), ha="center", va="top", fontsize=6)
    ax.bar(x, height, width=step * 0.8, bottom=bottom, color=colors)
    fig.suptitle(f"{title}: predictions on the first {n} test images")
    return fig


def confusion_matrix(ds: Dataset, metrics: Metrics, title: str) -> Figure:
    """Scikit-learn's confusion-matrix plot of the test set, rows true, columns predicted."""
    fig = Figure(figsize=(9, 8), layout="constrained")
    ax = fig.add_subplot()
    # Fashion-MNIST's names ("T-shirt/top", "Sneaker") overlap when written horizontally.
    rotation = 45 if max(len(name) for name in ds.class_names) > 3 else 0
    ConfusionMatrixDisplay(
        confusion_matrix=metrics.confusion, display_labels=list(ds.class_names)
    ).plot(ax=ax, cmap="Blues", values_format="d", xticks_rotation=rotation)
    if rotation:
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.suptitle(f"{title}: confusion matrix (accuracy {metrics.accuracy:.2%})")
    return fig


def mistakes(ds: Dataset, metrics: Metrics, num: int, title: str) -> Figure:
    """The `num` most confident wrong predictions, most confident first, as one montage; each
    image's caption (text gid `label<k>`, k in that order) gives the predicted and true class.

    Ties keep test-set order. Without any mistake the figure holds only the text "no mistakes".
    """
    preds = metrics.probabilities.argmax(axis=1)
    confidence = metrics.probabilities.max(axis=1)
    wrong = np.flatnonzero(preds != metrics.labels)
    chosen = wrong[np.argsort(-confidence[wrong], kind="stable")][:num]
    if len(chosen) == 0:
        fig = Figure(figsize=(4, 2), layout="constrained")
        fig.text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
        fig.suptitle(f"{title}: most confident mistakes")
        return fig
    rows, cols = _grid(len(chosen), math.ceil(math.sqrt(len(chosen))))
    h, w = ds.test_x.shape[1:3]
    cell = (h + MISTAKE_CAPTION_PX, w + SAMPLE_GAP_PX)
    fig = Figure(figsize=(max(4, cell[1] * cols / 16), cell[0] * rows / 16 + 0.5))
    fig.set_layout_engine("constrained")
    grid = montage(ds.test_x[chosen], cols, cell, at=(MISTAKE_CAPTION_PX, 0))
    ax = _montage_axes(fig, grid, _cmap(ds), 255)
    _frames(ax, rows, cols, cell, (MISTAKE_CAPTION_PX, 0, h, w))
    for k, i in enumerate(chosen):
        ax.text(
            (k % cols) * cell[1] + w / 2,
            (k // cols) * cell[0] + MISTAKE_CAPTION_PX - 1,
            f"pred {ds.class_names[int(preds[i])]} {confidence[i]:.0%}\n"
            f"true {ds.class_names[int(metrics.labels[i])]}",
            ha="center",
            va="bottom",
            fontsize=9,
            gid=f"label{k}",
        )
    fig.suptitle(f"{title}: the {len(chosen)} most confident mistakes of {len(wrong)}")
    return fig


def first_kernel(weights: dict[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """The kernel of the model's first layer that has one (weights are in layer order)."""
    return next(((k, v) for k, v in weights.items() if k.endswith("/kernel")), None)


def weights_figure(
    weights: dict[str, np.ndarray], image_shape: tuple[int, ...], class_names, title: str
) -> Figure | None:
    """What the first layer looks for, drawn as images, chosen by its kernel's shape:

    - a dense layer that sees the whole image with one unit per class (the linear model): each
      class's template;
    - any other dense layer that sees the whole image (an ANN's hidden layer): the input weights
      of its first units;
    - a 2-D convolution (a CNN): its filters, on the first input channel.
    None for any other first layer (nothing there reads as an image).

    One diverging colour scale, symmetric around 0, is shared by every image so that colours
    compare: red pushes towards the unit, blue away from it.
    """
    found = first_kernel(weights)
    if found is None:
        return None
    name, kernel = found
    only_layer = sum(k.endswith("/kernel") for k in weights) == 1
    if kernel.ndim == 2 and kernel.shape[0] == int(np.prod(image_shape)):
        channels = kernel.reshape(*image_shape[:2], -1, kernel.shape[1])[:, :, 0]
        if only_layer and kernel.shape[1] == len(class_names):
            return _templates(channels, list(class_names), f"{title}: weights of each class")
        count = min(kernel.shape[1], MAX_UNITS)
        labels = [f"unit {k}" for k in range(count)]
        heading = f"{title}: input weights of the first {count} units of {name.split('/')[0]}"
        return _templates(channels[:, :, :count], labels, heading)
    if kernel.ndim == 4:
        count = min(kernel.shape[3], MAX_UNITS)
        labels = [f"filter {k}" for k in range(count)]
        heading = f"{title}: the {count} first filters of {name.split('/')[0]}"
        return _templates(kernel[:, :, 0, :count], labels, heading)
    return None


def _templates(images: np.ndarray, labels: list[str], heading: str) -> Figure:
    """`images` (H, W, n) side by side on one symmetric colour scale, each with its label."""
    count = images.shape[-1]
    limit = float(np.abs(images).max()) or 1.0  # an all-zero kernel still needs a range
    rows, cols = _grid(count, math.ceil(count / 2) if count <= 10 else 8)
    height = 2.6 * rows + 0.6
    fig = Figure(figsize=(2.4 * cols + 1, height))  # fixed margins, as in `predictions`
    axes = fig.subplots(
        rows,
        cols,
        squeeze=False,
        gridspec_kw={"left": 0.02, "right": 0.9, "bottom": 0.05, "top": 1 - 0.6 / height},
    ).ravel()
    for k, ax in enumerate(axes):
        if k >= count:
            ax.remove()
            continue
        im = ax.imshow(images[:, :, k], cmap="RdBu_r", vmin=-limit, vmax=limit)
        _no_ticks(ax)
        ax.set_title(labels[k])
    fig.colorbar(im, ax=list(axes[:count]), shrink=0.8)
    fig.suptitle(heading)
    return fig


def data_figures(cfg: ReportConfig, ds: Dataset, title: str) -> dict[str, Figure]:
    """The figures that need only the data."""
    return {"samples.png": samples(ds, cfg.num_samples, title)} if cfg.samples else {}


def report(
    cfg: ReportConfig,
    ds: Dataset,
    history: History,
    metrics: Metrics,
    weights: dict[str, np.ndarray],
    title: str,
) -> dict[str, Figure | str]:
    """The run's artifacts by file name: a Figure for each .png, the text of each .json.

    Args:
        cfg: which artifacts to make and how many images they show.
        weights: the model's weights by name, in layer order; the first layer's are drawn.
        title: shown on each figure, e.g. "linear / sgd / mnist".
    """
    return data_figures(cfg, ds, title) | result_artifacts(
        cfg, ds, history, metrics, weights, title
    )


def result_artifacts(
    cfg: ReportConfig,
    ds: Dataset,
    history: History,
    metrics: Metrics,
    weights: dict[str, np.ndarray],
    title: str,
) -> dict[str, Figure | str]:
    """The artifacts that need the trained model's results: all of `report` but data_figures."""
    out: dict[str, Figure | str] = {}
    if cfg.learning_curves:
        out["learning_curves.png"] = learning_curves(history, title)
    if cfg.predictions:
        out["predictions.png"] = predictions(ds, metrics, cfg.num_predictions, title)
    if cfg.confusion_matrix:
        out["confusion_matrix.png"] = confusion_matrix(ds, metrics, title)
        out["classification_report.json"] = json.dumps(
            metrics.report, indent=2, default=json_default
        )
    if cfg.mistakes:
        out["mistakes.png"] = mistakes(ds, metrics, cfg.num_mistakes, title)
    figure = (
        weights_figure(weights, ds.train_x.shape[1:], ds.class_names, title)
        if cfg.weights
        else None
    )
    if figure is not None:
        out["weights.png"] = figure
    return out

"""Stage `report`: figures of a run and an HTML page of them (returned, never written here)."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping
from io import BytesIO
from typing import Any

import numpy as np

# Figures are built from matplotlib.figure.Figure, not pyplot: they render with Agg and no
# window can ever open, whatever backend the environment selects.
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from pipeline.config import ReportConfig
from pipeline.stages.load import Dataset
from pipeline.stages.results import History, Metrics, json_default

RIGHT_COLOR = "blue"
WRONG_COLOR = "red"
BAR_COLOR = "#777777"
# Columns of the image grids in samples.png and of (image, bars) pairs in predictions.png,
# as the course notes lay them out.
SAMPLE_COLUMNS = 5
PREDICTION_COLUMNS = 3
HTML_DPI = 80


def _grid(n: int, columns: int) -> tuple[int, int]:
    """(rows, columns) of a grid holding `n` cells, at most `columns` wide."""
    cols = max(1, min(n, columns))
    return math.ceil(n / cols), cols


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def samples(ds: Dataset, num: int, title: str) -> Figure:
    """The first training image with a colour bar of its raw values, beside a grid of the first
    `num` training images (scaled to 0..1) labelled with their class names.

    The figure holds two subfigures: `fig.subfigs[0]` the single image and its colour bar,
    `fig.subfigs[1]` the grid, one axes per image in order.
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

    gs = right.add_gridspec(rows, cols)
    for i in range(n):
        ax = right.add_subplot(gs[i // cols, i % cols])
        ax.imshow(ds.train_x[i] / 255.0, cmap="binary", vmin=0.0, vmax=1.0)
        _no_ticks(ax)
        ax.set_xlabel(ds.class_names[int(ds.train_y[i])])
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

    Axes come in pairs, in order: image i is `fig.axes[2 * i]`, its bars `fig.axes[2 * i + 1]`.
    The image's x-label is blue when the prediction is right, red when wrong; the predicted bar
    is red and the true one blue (so a right prediction shows a single blue bar).
    """
    n = min(num, len(ds.test_x))
    rows, cols = _grid(n, PREDICTION_COLUMNS)
    num_classes = metrics.probabilities.shape[1]
    height = 2.2 * rows + 0.6
    # Fixed margins: a grid this regular does not need the layout solver, which would more
    # than double the time to draw it.
    fig = Figure(figsize=(4 * cols, height))
    gs = fig.add_gridspec(
        rows,
        2 * cols,
        left=0.01,
        right=0.99,
        bottom=0.35 / height,
        top=1 - 0.45 / height,
        wspace=0.12,
        hspace=0.3,
    )
    for i in range(n):
        probs = metrics.probabilities[i]
        pred, true = int(np.argmax(probs)), int(metrics.labels[i])
        row, col = i // cols, 2 * (i % cols)

        ax = fig.add_subplot(gs[row, col])
        ax.imshow(ds.test_x[i], cmap="binary", vmin=0, vmax=255)
        _no_ticks(ax)
        ax.set_xlabel(
            f"{ds.class_names[pred]} {100 * probs[pred]:2.0f}% ({ds.class_names[true]})",
            color=RIGHT_COLOR if pred == true else WRONG_COLOR,
        )

        ax = fig.add_subplot(gs[row, col + 1])
        bars = ax.bar(range(num_classes), probs, color=BAR_COLOR)
        ax.set_ylim(0, 1)
        ax.set_xticks(range(num_classes))
        ax.set_yticks([])
        # True after predicted: when they coincide the bar must read as right.
        bars[pred].set_color(WRONG_COLOR)
        bars[true].set_color(RIGHT_COLOR)
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
    """The `num` most confident wrong predictions, most confident first.

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
    height = 2.5 * rows + 1.0
    fig = Figure(figsize=(2.2 * cols, height))  # fixed margins, as in `predictions`
    gs = fig.add_gridspec(
        rows,
        cols,
        left=0.02,
        right=0.98,
        bottom=0.1 / height,
        top=1 - 0.95 / height,
        wspace=0.1,
        hspace=0.45,
    )
    for k, i in enumerate(chosen):
        ax = fig.add_subplot(gs[k // cols, k % cols])
        ax.imshow(ds.test_x[i], cmap="binary", vmin=0, vmax=255)
        _no_ticks(ax)
        ax.set_title(
            f"pred {ds.class_names[int(preds[i])]} {confidence[i]:.0%}\n"
            f"true {ds.class_names[int(metrics.labels[i])]}",
            fontsize=9,
        )
    fig.suptitle(f"{title}: the {len(chosen)} most confident mistakes of {len(wrong)}")
    return fig


def weights_figure(
    kernel: np.ndarray, image_shape: tuple[int, ...], class_names: tuple[str, ...], title: str
) -> Figure:
    """Each column of a linear model's (pixels, classes) kernel drawn as an image.

    One diverging colour scale, symmetric around 0, is shared by every image so that colours
    compare across classes: red pushes a pixel towards the class, blue away from it.
    """
    num_classes = kernel.shape[1]
    limit = float(np.abs(kernel).max()) or 1.0  # an all-zero kernel still needs a range
    rows, cols = _grid(num_classes, math.ceil(num_classes / 2))
    height = 2.6 * rows + 0.6
    fig = Figure(figsize=(2.4 * cols + 1, height))  # fixed margins, as in `predictions`
    axes = fig.subplots(
        rows,
        cols,
        squeeze=False,
        gridspec_kw={"left": 0.02, "right": 0.9, "bottom": 0.05, "top": 1 - 0.6 / height},
    ).ravel()
    for k, ax in enumerate(axes):
        if k >= num_classes:
            ax.remove()
            continue
        im = ax.imshow(kernel[:, k].reshape(image_shape), cmap="RdBu_r", vmin=-limit, vmax=limit)
        _no_ticks(ax)
        ax.set_title(class_names[k])
    fig.colorbar(im, ax=list(axes[:num_classes]), shrink=0.8)
    fig.suptitle(f"{title}: weights of each class")
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
    model_name: str,
    title: str,
) -> dict[str, Figure | str]:
    """The run's artifacts by file name: a Figure for each .png, the text of each .json.

    Args:
        cfg: which artifacts to make and how many images they show.
        weights: the model's weights by name; "dense/kernel" is drawn for the linear model.
        model_name: "linear" or "ann"; only the linear model's weights are images.
        title: shown on each figure, e.g. "linear / sgd / mnist".
    """
    return data_figures(cfg, ds, title) | result_artifacts(
        cfg, ds, history, metrics, weights, model_name, title
    )


def result_artifacts(
    cfg: ReportConfig,
    ds: Dataset,
    history: History,
    metrics: Metrics,
    weights: dict[str, np.ndarray],
    model_name: str,
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
    if cfg.weights and model_name == "linear":
        out["weights.png"] = weights_figure(
            weights["dense/kernel"], ds.train_x.shape[1:], ds.class_names, title
        )
    return out


def _png(fig: Figure) -> bytes:
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=HTML_DPI)
    return buf.getvalue()


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    esc = html.escape
    lines = [f"<table>\n<tr><th>{esc(header[0])}</th><th>{esc(header[1])}</th></tr>"]
    lines += [f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows]
    return "\n".join(lines) + "\n</table>"


_STYLE = """
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td:last-child { font-family: monospace; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


def render_html(
    title: str,
    settings: Mapping[str, Any],
    final_metrics: Mapping[str, float],
    artifacts: Mapping[str, Figure | bytes | str],
) -> str:
    """One self-contained HTML page: settings, final metrics, then every artifact inline.

    Figures are embedded as base64 PNG data URIs and texts as <pre> blocks, so the page needs
    no other file and no network.

    Args:
        settings: shown as a table of key and value (e.g. the run's parameters).
        final_metrics: shown as a table, values to 4 decimals.
        artifacts: as `report` returns them, shown in their order under their file names;
            a figure may come already rendered as PNG bytes, so it is rendered only once.
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        "<h2>Settings</h2>",
        _table([(str(k), str(v)) for k, v in settings.items()], ("setting", "value")),
        "<h2>Final metrics</h2>",
        _table(
            [(str(k), f"{float(v):.4f}") for k, v in final_metrics.items()], ("metric", "value")
        ),
    ]
    for name, artifact in artifacts.items():
        parts.append(f"<h2>{esc(name)}</h2>")
        if isinstance(artifact, Figure | bytes):
            png = artifact if isinstance(artifact, bytes) else _png(artifact)
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{esc(name)}">')
        elif isinstance(artifact, str):
            parts.append(f"<pre>{esc(artifact)}</pre>")
        else:
            raise TypeError(f"artifact {name!r} is a {type(artifact).__name__}")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)

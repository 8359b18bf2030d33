"""The report stage: what each figure shows, the switches, and the HTML page."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from sklearn.metrics import classification_report
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from pipeline.config.schema import ReportConfig
from pipeline.reporting.figures import report, weights_figure
from pipeline.reporting.pages import render_html
from pipeline.training.evaluate import Metrics
from pipeline.training.fit import History
from tests.helpers.data import tiny_dataset

NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
TITLE = "linear / sgd / fashion-mnist"
# Test image index -> confidence of a wrong prediction; every other image is right at RIGHT_CONF.
WRONG = {1: 0.9, 4: 0.6, 7: 0.95, 12: 0.7, 18: 0.6}
RIGHT_CONF = 0.8
# Most confident first; 4 and 18 tie and keep test-set order.
MISTAKE_ORDER = [7, 1, 12, 4, 18]
SWITCHES = {
    "samples": {"samples.png"},
    "learning_curves": {"learning_curves.png"},
    "predictions": {"predictions.png"},
    "confusion_matrix": {"confusion_matrix.png", "classification_report.json"},
    "mistakes": {"mistakes.png"},
    "weights": {"weights.png"},
}
ALL_ARTIFACTS = set().union(*SWITCHES.values())


# The tiny data every report test draws: 30 training and 20 test images with NAMES.
SMALL = {"n_train": 30, "n_test": 20, "class_names": NAMES}


def wrong_label(true: int) -> int:
    return (true + 3) % 10


def make_metrics(labels: np.ndarray, wrong: dict[int, float]) -> Metrics:
    """Metrics whose predictions are right except at `wrong`, with known confidences."""
    labels = labels.astype(np.int64)
    probs = np.empty((len(labels), 10), dtype=np.float32)
    for i, true in enumerate(labels):
        pred, conf = (wrong_label(true), wrong[i]) if i in wrong else (true, RIGHT_CONF)
        probs[i] = (1 - conf) / 9
        probs[i, pred] = conf
    preds = probs.argmax(axis=1)
    classes = np.arange(10)
    return Metrics(
        loss=float(-np.mean(np.log(probs[np.arange(len(labels)), labels]))),
        accuracy=float(np.mean(preds == labels)),
        probabilities=probs,
        predictions=preds,
        labels=labels,
        confusion=sk_confusion_matrix(labels, preds, labels=classes),
        report=classification_report(
            labels, preds, labels=classes, target_names=list(NAMES), output_dict=True,
            zero_division=0,
        ),
    )  # fmt: skip


def _history(with_val: bool) -> History:
    metrics = {"loss": (1.0, 0.5, 0.4), "accuracy": (0.5, 0.8, 0.9)}
    if with_val:
        metrics |= {"val_loss": (1.1, 0.6, 0.5), "val_accuracy": (0.4, 0.7, 0.85)}
    return History(metrics=metrics, epoch_seconds=(1.0, 1.0, 1.0), fit_seconds=3.0)


def make_kernel() -> np.ndarray:
    kernel = np.random.default_rng(1).normal(0.0, 0.1, (784, 10))
    kernel[100, 3] = -2.5  # the largest magnitude is negative: the range must still be ±2.5
    return kernel


def only(*switches: str, **counts: int) -> ReportConfig:
    """A ReportConfig with just `switches` on (fewer figures keep the tests fast)."""
    return ReportConfig(**{s: s in switches for s in [*SWITCHES, "html"]}, **counts)


def run_report(cfg: ReportConfig, ds=None, metrics=None, with_val=True):
    ds = ds or tiny_dataset(**SMALL)
    metrics = metrics or make_metrics(ds.test_y, WRONG)
    weights = {"dense/kernel": make_kernel(), "dense/bias": np.zeros(10)}
    return report(cfg, ds, _history(with_val), metrics, weights, TITLE)


@pytest.fixture(scope="module")
def artifacts() -> dict[str, Figure | str]:
    return run_report(ReportConfig())


def color(c) -> tuple[float, ...]:
    return to_rgba(c)


# --- which artifacts ---------------------------------------------------------------------


def test_default_report_makes_every_artifact_with_the_title(artifacts):
    assert set(artifacts) == ALL_ARTIFACTS
    for name, artifact in artifacts.items():
        if name.endswith(".png"):
            assert isinstance(artifact, Figure)
            assert TITLE in artifact.get_suptitle(), name
        else:
            assert isinstance(artifact, str)


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_makes_only_its_artifacts(switch):
    assert set(run_report(only(switch))) == SWITCHES[switch]


def test_report_can_be_switched_off():
    assert run_report(only()) == {}


def test_the_weights_figure_follows_the_first_layers_shape():
    rng = np.random.default_rng(3)
    hidden = rng.normal(size=(784, 128))
    ann = {"hidden/kernel": hidden, "hidden/bias": np.zeros(128)}
    ann |= {"dense/kernel": rng.normal(size=(128, 10)), "dense/bias": np.zeros(10)}
    fig = weights_figure(ann, (28, 28), NAMES, TITLE)
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == [f"unit {k}" for k in range(16)]
    np.testing.assert_array_equal(shown[5].images[0].get_array(), hidden[:, 5].reshape(28, 28))
    assert "first 16 units of hidden" in fig.get_suptitle()

    filters = rng.normal(size=(3, 3, 1, 32))
    cnn = {"conv1/kernel": filters, "conv1/bias": np.zeros(32), "dense/kernel": np.ones((5, 10))}
    fig = weights_figure(cnn, (28, 28), NAMES, TITLE)
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == [f"filter {k}" for k in range(16)]
    np.testing.assert_array_equal(shown[2].images[0].get_array(), filters[:, :, 0, 2])

    # A first layer that does not see the whole image draws nothing, whatever the model's name.
    assert weights_figure({"dense/kernel": np.ones((50, 10))}, (28, 28), NAMES, TITLE) is None
    assert run_report(only("weights")).keys() == {"weights.png"}


# --- samples -----------------------------------------------------------------------------


def labels(ax) -> list:
    """The texts of a montage axes with gid label0, label1, ... in that order."""
    found = {t.get_gid(): t for t in ax.texts if (t.get_gid() or "").startswith("label")}
    return [found[f"label{i}"] for i in range(len(found))]


def cells(ax, n: int, cols: int, h: int = 28) -> list[np.ndarray]:
    """The `n` images of a montage axes, found as the blocks that are not NaN."""
    grid = ax.images[0].get_array().filled(np.nan)
    rows_with = np.flatnonzero(~np.isnan(grid).all(axis=1))
    cols_with = np.flatnonzero(~np.isnan(grid).all(axis=0))
    tops = [r for r in rows_with if r == rows_with[0] or r - 1 not in rows_with]
    lefts = [c for c in cols_with if c == cols_with[0] or c - 1 not in cols_with]
    assert len(lefts) == min(n, cols)
    return [grid[tops[i // cols] : tops[i // cols] + h, lefts[i % cols] :][:, :h] for i in range(n)]


def test_samples_show_the_first_image_with_its_raw_values_and_a_labelled_grid(artifacts):
    ds = tiny_dataset(**SMALL)
    fig = artifacts["samples.png"]
    single, grid = fig.subfigs
    image_ax, colorbar_ax = single.axes
    np.testing.assert_array_equal(image_ax.images[0].get_array(), ds.train_x[0])
    assert image_ax.images[0].get_clim() == (0, 255)
    assert image_ax.images[0].colorbar.ax is colorbar_ax

    (ax,) = grid.axes  # one montage: 20 images, 5 to a row, in training order
    assert ax.images[0].get_cmap().name.startswith("binary")
    assert ax.images[0].get_clim() == (0, 1)
    for i, cell in enumerate(cells(ax, 20, 5)):
        np.testing.assert_allclose(cell, ds.train_x[i] / 255.0)
    assert [t.get_text() for t in labels(ax)] == [NAMES[y] for y in ds.train_y[:20]]
    # Row by row: five labels share a height, the sixth is lower.
    ys = [t.get_position()[1] for t in labels(ax)]
    assert len(set(ys[:5])) == 1 and ys[5] > ys[4]
    assert not ax.axison


def test_samples_grid_follows_num_samples():
    fig = run_report(only("samples", num_samples=7))["samples.png"]
    (ax,) = fig.subfigs[1].axes
    assert len(labels(ax)) == 7
    assert len(cells(ax, 7, 5)) == 7


# --- learning curves ---------------------------------------------------------------------


def test_learning_curves_training_vs_validation():
    fig = run_report(only("learning_curves"))["learning_curves.png"]
    acc, loss = fig.axes
    assert fig.get_suptitle() == TITLE
    assert acc.get_title() == "Training and validation accuracy"
    assert loss.get_title() == "Training and validation loss"
    assert [line.get_label() for line in acc.lines] == ["training accuracy", "validation accuracy"]
    np.testing.assert_array_equal(acc.lines[1].get_ydata(), [0.4, 0.7, 0.85])
    np.testing.assert_array_equal(loss.lines[0].get_xdata(), [1, 2, 3])


def test_learning_curves_without_validation_draw_training_only():
    fig = run_report(only("learning_curves"), with_val=False)["learning_curves.png"]
    assert [len(ax.lines) for ax in fig.axes] == [1, 1]
    assert fig.axes[0].get_title() == "Training accuracy"


# --- predictions -------------------------------------------------------------------------


def test_predictions_pair_each_image_with_its_probabilities(artifacts):
    ds = tiny_dataset(**SMALL)
    metrics = make_metrics(ds.test_y, WRONG)
    fig = artifacts["predictions.png"]
    (ax,) = fig.axes  # images, bars and labels drawn on one axes
    images = cells(ax, 15, 3)
    bars = ax.containers[0].patches
    assert len(bars) == 150
    for i in range(15):
        np.testing.assert_array_equal(images[i], ds.test_x[i])
        true = int(ds.test_y[i])
        pred = wrong_label(true) if i in WRONG else true
        conf = round(100 * WRONG.get(i, RIGHT_CONF))
        label = labels(ax)[i]
        assert label.get_text() == f"{NAMES[pred]} {conf}% ({NAMES[true]})"
        assert color(label.get_color()) == color("red" if i in WRONG else "blue")

        mine = bars[10 * i : 10 * i + 10]
        # Heights are probabilities times the image height, drawn upwards (negative rows).
        heights = [-bar.get_height() / 28 for bar in mine]
        np.testing.assert_allclose(heights, metrics.probabilities[i], rtol=1e-5)
        xs = [bar.get_x() for bar in mine]
        assert xs == sorted(xs)  # class 0 to 9, left to right
        # Beside its image, on the same row: right of the image's label, at its baseline.
        assert xs[0] > label.get_position()[0]
        assert mine[0].get_y() == pytest.approx(label.get_position()[1] - 1.5)
        for k, bar in enumerate(mine):
            expected = "blue" if k == true else "red" if k == pred else "#777777"
            assert bar.get_facecolor() == color(expected), (i, k)
    # Three pairs to a row: labels 0-2 share a row, label 3 starts the next.
    ys = [t.get_position()[1] for t in labels(ax)]
    assert ys[0] == ys[2] < ys[3]


def test_predictions_label_text_for_a_known_mistake(artifacts):
    # Image 7 is wrong at 95%: the label reads "<predicted> 95% (<true>)" in red.
    ds = tiny_dataset(**SMALL)
    label = labels(artifacts["predictions.png"].axes[0])[7]
    true = int(ds.test_y[7])
    assert label.get_text() == f"{NAMES[wrong_label(true)]} 95% ({NAMES[true]})"
    assert label.get_color() == "red"


# --- confusion matrix and classification report ------------------------------------------


def test_confusion_matrix_shows_the_counts_with_class_names(artifacts):
    ds = tiny_dataset(**SMALL)
    metrics = make_metrics(ds.test_y, WRONG)
    fig = artifacts["confusion_matrix.png"]
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the matrix and its colour bar
    np.testing.assert_array_equal(ax.images[0].get_array(), metrics.confusion)
    assert metrics.confusion.sum() == 20 and np.trace(metrics.confusion) == 15
    assert [t.get_text() for t in ax.get_xticklabels()] == list(NAMES)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(NAMES)
    assert {t.get_rotation() for t in ax.get_xticklabels()} == {45}
    assert ax.get_xlabel() == "Predicted label" and ax.get_ylabel() == "True label"
    counts = np.array([int(t.get_text()) for t in ax.texts]).reshape(10, 10)
    np.testing.assert_array_equal(counts, metrics.confusion)


def test_confusion_matrix_keeps_short_names_horizontal():
    ds = tiny_dataset(**{**SMALL, "class_names": [str(k) for k in range(10)]})
    fig = run_report(only("confusion_matrix"), ds=ds)["confusion_matrix.png"]
    assert {t.get_rotation() for t in fig.axes[0].get_xticklabels()} == {0}


def test_classification_report_json_parses_back_to_the_report(artifacts):
    metrics = make_metrics(tiny_dataset(**SMALL).test_y, WRONG)
    text = artifacts["classification_report.json"]
    assert json.loads(text) == metrics.report
    assert "\n  " in text  # indented for reading
    assert json.loads(text)["accuracy"] == pytest.approx(0.75)


# --- mistakes ----------------------------------------------------------------------------


def test_mistakes_most_confident_first(artifacts):
    ds = tiny_dataset(**SMALL)
    fig = artifacts["mistakes.png"]
    (ax,) = fig.axes
    captions = labels(ax)
    assert len(captions) == len(MISTAKE_ORDER)
    images = cells(ax, len(MISTAKE_ORDER), 3)  # 5 mistakes: 3 to a row
    for caption, image, i in zip(captions, images, MISTAKE_ORDER, strict=True):
        true = int(ds.test_y[i])
        assert caption.get_text() == (
            f"pred {NAMES[wrong_label(true)]} {WRONG[i]:.0%}\ntrue {NAMES[true]}"
        )
        np.testing.assert_array_equal(image, ds.test_x[i])
    assert captions[0].get_text().startswith(f"pred {NAMES[wrong_label(int(ds.test_y[7]))]} 95%")


def test_mistakes_keep_at_most_num_mistakes():
    ds = tiny_dataset(**SMALL)
    fig = run_report(only("mistakes", num_mistakes=2), ds=ds)["mistakes.png"]
    (ax,) = fig.axes
    assert len(labels(ax)) == 2
    for image, i in zip(cells(ax, 2, 2), MISTAKE_ORDER[:2], strict=True):
        np.testing.assert_array_equal(image, ds.test_x[i])


def test_mistakes_without_any_is_a_note():
    ds = tiny_dataset(**SMALL)
    fig = run_report(only("mistakes"), ds=ds, metrics=make_metrics(ds.test_y, {}))["mistakes.png"]
    assert isinstance(fig, Figure) and fig.axes == []
    assert [t.get_text() for t in fig.texts if t.get_text() != fig.get_suptitle()] == [
        "no mistakes"
    ]
    assert TITLE in fig.get_suptitle()


# --- weights -----------------------------------------------------------------------------


def test_weights_share_a_symmetric_colour_scale(artifacts):
    kernel = make_kernel()
    fig = artifacts["weights.png"]
    assert len(fig.axes) == 11  # ten templates and one shared colour bar
    templates = [ax for ax in fig.axes if ax.images]
    assert len(templates) == 10
    images = [ax.images[0] for ax in templates]
    assert all(im.colorbar is None for im in images[:-1])
    assert images[-1].colorbar.ax is fig.axes[-1]
    for k, (ax, im) in enumerate(zip(templates, images, strict=True)):
        assert ax.get_subplotspec().get_geometry()[:2] == (2, 5)
        assert ax.get_title() == NAMES[k]
        assert im.get_cmap().name == "RdBu_r"
        assert im.get_clim() == pytest.approx((-2.5, 2.5))
        np.testing.assert_array_equal(im.get_array(), kernel[:, k].reshape(28, 28))


# --- HTML --------------------------------------------------------------------------------


def test_render_html_is_one_self_contained_page(artifacts):
    title = "linear / sgd / <fashion> & co"
    settings = {"optimizer.learning_rate": 0.01, "model.name": "linear"}
    page = render_html(title, settings, {"test_accuracy": 0.75, "test_loss": 0.123456}, artifacts)

    assert "<title>linear / sgd / &lt;fashion&gt; &amp; co</title>" in page
    assert "<h1>linear / sgd / &lt;fashion&gt; &amp; co</h1>" in page
    assert "<fashion>" not in page
    assert "<td>optimizer.learning_rate</td><td>0.01</td>" in page
    assert "<td>model.name</td><td>linear</td>" in page
    assert "<td>test_accuracy</td><td>0.7500</td>" in page
    assert "<td>test_loss</td><td>0.1235</td>" in page

    figures = [name for name, a in artifacts.items() if isinstance(a, Figure)]
    payloads = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert page.count("<img ") == len(payloads) == len(figures) == 6
    assert all(base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in payloads)
    for name in artifacts:
        assert f"<h2>{name}</h2>" in page
    # The JSON is shown escaped: its quotes become &quot;.
    assert "<pre>{\n  &quot;T-shirt/top&quot;: {" in page

    # What a reader came for first; the settings last, folded.
    assert page.index("Final metrics") < page.index("<img ") < page.index("<details>")
    assert page.index("<details>") < page.index("<td>model.name</td>") < page.index("</details>")

    # Base64 text may spell "http" by chance; the rest of the page must not.
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", page)
    assert "http" not in text
    assert "<script" not in text and "<link" not in text
    assert re.findall(r'src="([^"]*)"', text) == ["data:image/png;base64,"] * 6


def test_one_html_builder_and_one_image_embedder():
    # The report and the comparison pages go through reporting/pages.py; the draw page is a
    # package file, and serving only reads data URLs that the browser sends.
    from tests.helpers.paths import PROJECT_ROOT

    root = PROJECT_ROOT / "pipeline"
    writers = {
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "<!DOCTYPE" in path.read_text() or "b64encode(png" in path.read_text()
    }
    assert writers == {"reporting/pages.py"}

"""Your own images: MNIST's preparation of real images, `python -m pipeline.predict`, and the
champion served by `make serve`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pipeline.data.load import load
from pipeline.serving.prepare import BOX, ImageError, prepare, prepare_file
from tests.helpers.cli import SILENT, make_config
from tests.helpers.data import real_data_dir
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.services import free_port, tail

CHAMPION = "models:/mnist-classifier@champion"


@pytest.fixture(scope="module")
def mnist_test():
    """MNIST's test digits and their labels."""
    found = real_data_dir()
    if found is None:
        pytest.skip("real MNIST files not found: set PIPELINE_DATA_DIR (see README)")
    from pipeline.config.schema import to_config

    ds = load(to_config(make_config([f"dataset.path={found}"])).dataset)
    return ds.test_x, ds.test_y


@pytest.fixture(scope="module")
def digits(mnist_test):
    """The first 12 MNIST test digits and their labels."""
    images, labels = mnist_test
    return images[:12], labels[:12]


def as_drawn(digit: np.ndarray, scale: int = 6, margin=(30, 80, 10, 50)) -> np.ndarray:
    """A digit as a person would give it: scaled up, black on white, off-centre with margins
    (top, left, bottom, right)."""
    size = (28 * scale, 28 * scale)
    big = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BILINEAR), float)
    top, left, bottom, right = margin
    page = np.zeros((top + size[0] + bottom, left + size[1] + right))
    page[top : top + size[0], left : left + size[1]] = big
    return 255.0 - page


def as_photo(digit: np.ndarray, seed: int) -> np.ndarray:
    """A digit photographed on grey paper: uneven light, grain, ink not quite black."""
    ink = 255.0 - as_drawn(digit, scale=5, margin=(40, 20, 60, 90))
    _, cols = np.mgrid[0 : ink.shape[0], 0 : ink.shape[1]]
    paper = 170 + 30 * cols / cols.max()  # light from the right
    noise = np.random.default_rng(seed).normal(0, 6, ink.shape)
    return np.clip(paper - 0.55 * ink + noise, 0, 255)


def as_scanned(digit: np.ndarray, side: int = 150, margin: int = 0) -> np.ndarray:
    """A digit as a scan or a tight crop gives it: cropped to its ink (which then touches every
    edge), its longer side scaled to `side` pixels, dark on white, inside `margin` white
    pixels."""
    rows, cols = np.flatnonzero(digit.max(axis=1)), np.flatnonzero(digit.max(axis=0))
    crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = side / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    big = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
    return np.pad(255 - big, margin, constant_values=255).astype(np.uint8)


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG file of a few bytes whose header gives `width` x `height` pixels (its data is an
    8x8 image's: decoding it would fail, or take width * height bytes)."""
    import io
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buffer, "PNG")
    raw = bytearray(buffer.getvalue())
    raw[16:24] = struct.pack(">II", width, height)  # IHDR's width and height, then its CRC
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    path.write_bytes(bytes(raw))
    return path


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


# --- the preparation -------------------------------------------------------------------------


def test_prepared_digits_look_like_mnist(digits):
    images, _ = digits
    for digit in images:
        for given in (as_drawn(digit), 255.0 - as_drawn(digit), as_photo(digit, 0)):
            out = prepare(given)
            assert out.shape == (28, 28) and out.dtype == np.uint8
            assert similarity(out, digit) > 0.7
            # MNIST's geometry: the ink fits a 20x20 box, its centre of mass at (14, 14).
            ink = np.argwhere(out > 30)
            extent = ink.max(axis=0) - ink.min(axis=0) + 1
            assert max(extent) <= BOX + 1 and max(extent) >= BOX - 2
            cy, cx = ndimage.center_of_mass(out.astype(float))
            assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_black_on_white_and_white_on_black_are_prepared_alike(digits):
    digit = digits[0][0]
    np.testing.assert_allclose(prepare(as_drawn(digit)), prepare(255.0 - as_drawn(digit)), atol=1)


def test_a_blank_image_has_no_ink(tmp_path):
    with pytest.raises(ImageError, match="no ink"):
        prepare(np.full((50, 40), 255.0), "blank.png")
    with pytest.raises(ImageError, match="no ink"):
        prepare(np.random.default_rng(0).normal(128, 3, (60, 60)), "grey.png")


def test_a_file_that_is_not_an_image_is_named(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(ImageError, match=r"notes\.png: not an image Pillow can read"):
        prepare_file(bad)
    good = tmp_path / "cut.png"
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(good)
    cut = tmp_path / "cut-short.png"
    cut.write_bytes(good.read_bytes()[:60])  # the header, half the pixels' data
    with pytest.raises(ImageError, match=r"cut-short\.png: not an image Pillow can read"):
        prepare_file(cut)


def test_ink_touching_the_edge_is_read_as_with_a_margin(digits):
    """A scan or a tight crop, whose ink runs off the edge, is prepared as the same digit with
    a white margin round it: neither refused as blank nor hollowed out."""
    for digit in digits[0]:
        tight = prepare(as_scanned(digit), "tight.png")
        framed = prepare(as_scanned(digit, margin=25), "framed.png")
        # (The two may lie a row apart: the centre of mass is rounded to a whole pixel.)
        assert similarity(tight, digit) >= similarity(framed, digit) - 0.03
        assert similarity(tight, digit) > 0.85
        assert (tight > 128).sum() >= 0.9 * (framed > 128).sum()  # its strokes all there


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (12000, 12000), (5000, 40)])
def test_a_huge_image_is_refused_from_its_header(tmp_path, monkeypatch, width, height):
    import pipeline.serving.prepare as prepare_module

    def never(*args):
        raise AssertionError("decoded")

    monkeypatch.setattr(prepare_module, "open_image", never)
    path = png_claiming(tmp_path / "huge.png", width, height)
    with pytest.raises(ImageError) as caught:
        prepare_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: image of {width}x{height} pixels is too large")
    assert f"at most {prepare_module.MAX_SIDE} pixels a side" in message
    assert "\n" not in message


def test_an_image_over_the_bound_is_refused_and_one_at_it_read(tmp_path):
    """A real (constant, so tiny) PNG one pixel over MAX_SIDE, and one at it with a stroke."""
    from pipeline.serving.prepare import MAX_SIDE

    wide = tmp_path / "wide.png"
    Image.new("L", (MAX_SIDE + 1, 4), 255).save(wide)
    with pytest.raises(ImageError, match=f"{MAX_SIDE + 1}x4 pixels is too large"):
        prepare_file(wide)
    ok = np.full((40, MAX_SIDE), 255, np.uint8)
    ok[5:35, 2000:2010] = 0
    tall = tmp_path / "ok.png"
    Image.fromarray(ok).save(tall)
    assert prepare_file(tall).max() == 255


def test_a_tiny_image_is_too_small(tmp_path):
    from pipeline.serving.prepare import MIN_SIDE

    dot = tmp_path / "dot.png"
    Image.new("L", (1, 1), 0).save(dot)
    expected = f"dot.png: image of 1x1 pixels is too small: at least {MIN_SIDE} pixels a side"
    with pytest.raises(ImageError, match=expected):
        prepare_file(dot)
    with pytest.raises(ImageError, match="image of 40x2 pixels is too small"):
        prepare(np.zeros((2, 40)))


def test_transparent_strokes_are_ink_on_paper(digits):
    digit = digits[0][0]
    ink = 255 - as_drawn(digit).astype(np.uint8)
    rgba = np.zeros((*ink.shape, 4), np.uint8)
    rgba[..., 3] = ink  # black strokes whose opacity is the ink, on nothing
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"strokes-{os.getpid()}.png"
    Image.fromarray(rgba, "RGBA").save(path)
    try:
        assert similarity(prepare_file(path), digit) > 0.7
    finally:
        path.unlink()


# --- a trained champion ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def champion_store(tmp_path_factory):
    """A store holding a registered champion: the ANN trained for 3 epochs on 10000 MNIST
    images (about 97% of digits right), registered by a single run that asks for it."""
    found = real_data_dir()
    if found is None:
        pytest.skip("real MNIST files not found: set PIPELINE_DATA_DIR (see README)")
    from pipeline.training.job import run

    db = tmp_path_factory.mktemp("champion") / "mlflow.db"
    uri = f"sqlite:///{db}"
    cfg = make_config(
        [
            f"dataset.path={found}",
            "dataset.limit=10000",
            "model=ann",
            "optimizer=adam",
            "trainer.epochs=3",
            f"tracking.uri={uri}",
            "tracking.register=true",
            *(f"report.{n}=false" for n in ("samples", "predictions", "mistakes", "html")),
            SILENT,
        ]
    )
    run(cfg)
    return uri


@pytest.fixture
def store(champion_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion_store)
    import mlflow

    mlflow.set_tracking_uri(champion_store)
    return champion_store


@pytest.fixture
def drawn_files(digits, tmp_path):
    """The test digits as drawn PNGs (black on white) and as photographed JPEGs."""
    images, labels = digits
    files = []
    for i, digit in enumerate(images[:6]):
        path = tmp_path / f"drawn-{i}.png"
        Image.fromarray(as_drawn(digit).astype(np.uint8)).save(path)
        files.append(path)
    for i, digit in enumerate(images[6:12], start=6):
        path = tmp_path / f"photo-{i}.jpg"
        Image.fromarray(as_photo(digit, i).astype(np.uint8)).convert("RGB").save(path)
        files.append(path)
    return files, labels


def predict_main(args: list[str], capsys) -> tuple[int, str, str]:
    from pipeline.cli.predict import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_champion_reads_drawn_and_photographed_digits(store, drawn_files, capsys, tmp_path):
    files, labels = drawn_files
    code, out, _ = predict_main([CHAMPION, *map(str, files), "--json"], capsys)
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["image"] for line in lines] == [str(f) for f in files]
    for line in lines:
        assert len(line["top"]) == 3
        probs = [p for _, p in line["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    right = sum(line["top"][0][0] == str(label) for line, label in zip(lines, labels, strict=True))
    assert right >= 11, [(line["top"][0], int(y)) for line, y in zip(lines, labels, strict=True)]


def test_a_folder_a_run_id_and_the_figure(store, drawn_files, capsys, tmp_path):
    from mlflow import MlflowClient

    files, _ = drawn_files
    version = MlflowClient().get_model_version_by_alias("mnist-classifier", "champion")
    out_dir = tmp_path / "figures"
    code, out, _ = predict_main(
        [version.run_id, str(files[0].parent), "--out", str(out_dir)], capsys
    )
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith(str(files[0].parent))]
    assert len(lines) == len(files)  # the folder's PNG and JPEG files, each with its top 3
    assert all(line.count("%") == 3 for line in lines)
    figure = Image.open(out_dir / "predictions.png")
    assert figure.size[1] > figure.size[0]  # one row (image, bars) per image


def test_examples_give_a_newcomer_images_the_champion_reads(
    store, real_data, capsys, tmp_path, monkeypatch
):
    from pipeline.cli.examples import main as examples_main

    monkeypatch.setenv("PIPELINE_DATA_DIR", str(real_data))
    folder = tmp_path / "my-digits"
    assert examples_main([str(folder)]) == 0
    files = sorted(folder.glob("*.png"))
    assert [f.name.split("-")[1] for f in files] == [f"{c}.png" for c in range(10)]  # one a class
    assert Image.open(files[0]).size == (112, 112)
    assert np.asarray(Image.open(files[0]))[0, 0] == 255  # white paper, dark ink
    capsys.readouterr()
    code, out, _ = predict_main([CHAMPION, str(folder), "--json"], capsys)
    assert code == 0
    answers = [json.loads(line) for line in out.splitlines()]
    right = sum(a["top"][0][0] == Path(a["image"]).stem.split("-")[1] for a in answers)
    assert len(answers) == 10 and right >= 9, answers
    assert examples_main([str(tmp_path / "x"), "--dataset", "fashion_mnist", "--count", "3"]) == 0
    assert len(list((tmp_path / "x").glob("*.png"))) == 3


def python_snippets() -> list[tuple[str, str]]:
    """(where, code) of every ```python block in the README and docs/."""
    import re

    docs = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
    return [
        (f"{path.name}#{n}", code)
        for path in docs
        for n, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S))
    ]


@pytest.mark.cli
def test_the_docs_python_snippets_run_from_another_folder(store, tmp_path):
    """Each snippet as a reader pastes it, in a folder of their own (where MLflow's default
    store would be a new, empty ./mlflow.db), `<run id>` being the champion's run."""
    from mlflow import MlflowClient

    snippets = python_snippets()
    assert any("load_model" in code for _, code in snippets)
    run_id = MlflowClient().get_model_version_by_alias("mnist-classifier", "champion").run_id
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for where, code in snippets:
        out = subprocess.run(
            [sys.executable, "-c", code.replace("<run id>", run_id)],
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "MLFLOW_TRACKING_URI": store},
        )
        assert out.returncode == 0, f"{where}: {out.stderr[-2000:]}"
    assert not (elsewhere / "mlflow.db").exists()


def test_use_store_is_the_projects_store_from_any_folder(tmp_path, monkeypatch):
    import mlflow

    import pipeline
    from pipeline.tracking.store import default_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    try:
        assert pipeline.use_store() == default_uri() == f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
        assert mlflow.get_tracking_uri().startswith(default_uri())
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///given.db")  # relative: from here
        assert pipeline.use_store() == f"sqlite:///{tmp_path / 'given.db'}"
    finally:
        mlflow.set_tracking_uri(before)


def test_bad_input_is_one_line_naming_it(store, drawn_files, capsys, tmp_path):
    import mlflow

    files, _ = drawn_files
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(blank)
    text = tmp_path / "readme.png"
    text.write_text("hello")
    dot = tmp_path / "dot.png"
    Image.new("L", (1, 1), 0).save(dot)
    huge = png_claiming(tmp_path / "huge.png", 20000, 20000)
    cases = {
        "blank.png: no ink": [CHAMPION, str(blank)],
        "readme.png: not an image Pillow can read": [CHAMPION, str(text)],
        "huge.png: image of 20000x20000 pixels is too large: at most 4096": [CHAMPION, str(huge)],
        "dot.png: image of 1x1 pixels is too small: at least 3": [CHAMPION, str(dot)],
        "model models:/nothing@champion not found": ["models:/nothing@champion", str(files[0])],
        "nowhere.png: no such file": [CHAMPION, str(tmp_path / "nowhere.png")],
    }
    # A model that does not take 28x28 images.
    from pipeline.training.backend import keras

    other = keras.Sequential([keras.Input((32, 32)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with mlflow.start_run() as run:
        mlflow.keras.log_model(other, name="model", pip_requirements=["keras"])
    capsys.readouterr()  # MLflow's own warning about the missing signature
    cases["takes inputs of shape (32, 32), not 28x28"] = [run.info.run_id, str(files[0])]
    for expected, args in cases.items():
        code, out, err = predict_main(args, capsys)
        assert code == 1 and out == "", expected
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert expected in err, err


def test_a_bad_image_is_named_and_the_others_answered(store, drawn_files, capsys, tmp_path):
    files, _ = drawn_files
    blank = tmp_path / "bad" / "blank.png"
    blank.parent.mkdir()
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(blank)
    huge = png_claiming(tmp_path / "bad" / "huge.png", 20000, 20000)
    text = tmp_path / "bad" / "notes.png"
    text.write_text("hello")
    good = [str(f) for f in files[:3]]
    given = [good[0], str(blank), good[1], str(huge), str(text), good[2]]
    for extra in ([], ["--json"], ["--out", str(tmp_path / "figures")]):
        code, out, err = predict_main([CHAMPION, *given, *extra], capsys)
        assert code == 1, err
        lines = [line for line in out.splitlines() if not line.startswith("figure:")]
        if extra == ["--json"]:
            assert [json.loads(line)["image"] for line in lines] == good
        else:
            assert [line.split(": ")[0] for line in lines] == good
            assert all(line.count("%") == 3 for line in lines)
        errors = err.splitlines()
        assert [line.split(": ")[1] for line in errors] == [str(blank), str(huge), str(text)]
        assert all(line.startswith("error: ") for line in errors), err
        assert "Traceback" not in err
    assert Image.open(tmp_path / "figures" / "predictions.png").size[1] > 3 * 100  # 3 rows
    # Nothing readable: no answer, no figure, exit 1.
    code, out, err = predict_main([CHAMPION, str(blank), "--out", str(tmp_path / "none")], capsys)
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert not (tmp_path / "none").exists()


def test_paths_are_checked_before_the_model_loads(monkeypatch, capsys, tmp_path):
    import pipeline.cli.predict as command

    loaded = []
    monkeypatch.setattr(command, "load_classifier", lambda model: loaded.append(model))
    good = tmp_path / "seven.png"
    Image.new("L", (40, 40), 255).save(good)
    code, out, err = predict_main([CHAMPION, str(good), str(tmp_path / "gone.png")], capsys)
    assert (code, out) == (1, "") and loaded == []
    assert err == f"error: {tmp_path / 'gone.png'}: no such file or folder\n"


def test_float_images_0_to_1_get_the_answers_of_uint8_ones(store, mnist_test):
    from pipeline.serving.classifier import load_classifier

    images, labels = mnist_test[0][:500], mnist_test[1][:500]
    classifier = load_classifier(CHAMPION)
    raw = classifier.probabilities(images)
    assert (raw.argmax(axis=1) == labels).mean() > 0.9
    for given in (images / 255.0, (images / 255.0).astype(np.float32), images.astype(float)):
        probs = classifier.probabilities(given)
        np.testing.assert_array_equal(probs.argmax(axis=1), raw.argmax(axis=1))
        np.testing.assert_allclose(probs, raw, atol=1e-6)
    with_channel = classifier.probabilities(images[:5, :, :, None] / 255.0)
    np.testing.assert_allclose(with_channel, raw[:5], atol=1e-6)


class Recorder:
    """Stands in for a Keras model taking 28x28 images: the batches it was given."""

    input_shape = (None, 28, 28)

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def predict(self, x, verbose=0):
        self.seen.append(np.array(x))
        return np.full((len(x), 10), 0.1)


@pytest.mark.parametrize(
    ("images", "says"),
    [
        pytest.param(np.full((2, 28, 28), np.nan), "NaN or infinite", id="nan"),
        pytest.param(np.full((2, 28, 28), -0.5), "values -0.5..-0.5", id="negative"),
        pytest.param(np.linspace(0, 255, 2 * 784).reshape(2, 28, 28), "0..255", id="fractions"),
        pytest.param(np.full((2, 28, 28), 300), "int64 with values 300..300", id="over-255"),
        pytest.param(np.zeros((2, 28, 28), bool), "type bool", id="bool"),
        pytest.param(np.full((2, 28, 28), "a"), "type <U1", id="text"),
        pytest.param(np.zeros((28, 28), np.uint8), "shape (28, 28)", id="one-image"),
        pytest.param(np.zeros((2, 32, 32), np.uint8), "shape (n, 28, 28)", id="other-size"),
    ],
)
def test_images_a_model_does_not_take_are_refused_saying_what_it_takes(images, says):
    from pipeline.errors import InputError
    from pipeline.serving.classifier import Classifier

    model = Recorder()
    classifier = Classifier(model, tuple("0123456789"), "test")
    with pytest.raises(InputError) as caught:
        classifier.probabilities(images)
    message = str(caught.value)
    assert says in message and "\n" not in message, message
    assert "the model takes" in message or "a model takes" in message
    assert isinstance(caught.value, ValueError)
    assert model.seen == []
    np.testing.assert_array_equal(
        classifier.probabilities(np.full((2, 28, 28), 0.5))[0], np.full(10, 0.1)
    )
    assert model.seen[0].dtype == np.uint8 and model.seen[0].max() == 128


@pytest.mark.cli
def test_make_serve_answers_as_the_model_does(store, digits, tmp_path):
    """`make serve` as the README gives it: the champion as a REST service on loopback."""
    import mlflow

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    with log.open("w") as fh:
        proc = subprocess.Popen(
            ["make", "-s", "serve", f"SERVE_PORT={port}", f"MODEL={CHAMPION}"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    images = digits[0][:8]
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(f"{url}/ping", proc, log)
        body = json.dumps({"inputs": images.tolist()}).encode()
        request = urllib.request.Request(
            f"{url}/invocations", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = np.asarray(json.loads(response.read())["predictions"])
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    local = mlflow.keras.load_model(CHAMPION).predict(images, verbose=0)
    assert served.shape == (8, 10)
    np.testing.assert_array_equal(served.argmax(axis=1), local.argmax(axis=1))
    np.testing.assert_allclose(served, local, atol=1e-5)


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make serve exited with {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"make serve did not answer within {timeout} s:\n{tail(log)}")

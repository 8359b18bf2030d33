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
def digits():
    """The first 12 MNIST test digits and their labels."""
    found = real_data_dir()
    if found is None:
        pytest.skip("real MNIST files not found: set PIPELINE_DATA_DIR (see README)")
    from pipeline.config.schema import to_config

    ds = load(to_config(make_config([f"dataset.path={found}"])).dataset)
    return ds.test_x[:12], ds.test_y[:12]


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
    with pytest.raises(ImageError, match=r"notes\.png is not an image"):
        prepare_file(bad)


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
    cases = {
        "blank.png: no ink": [CHAMPION, str(blank)],
        "readme.png is not an image": [CHAMPION, str(text)],
        "model models:/nothing@champion not found": ["models:/nothing@champion", str(files[0])],
        "nowhere.png: no such file": [CHAMPION, str(tmp_path / "nowhere.png")],
    }
    # A model that does not take 28x28 images.
    from pipeline.training.backend import keras

    other = keras.Sequential([keras.Input((32, 32)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with mlflow.start_run() as run:
        mlflow.keras.log_model(other, name="model")
    capsys.readouterr()  # MLflow's own warning about the missing signature
    cases["takes inputs of shape (32, 32), not 28x28"] = [run.info.run_id, str(files[0])]
    for expected, args in cases.items():
        code, out, err = predict_main(args, capsys)
        assert code == 1 and out == "", expected
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert expected in err, err


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

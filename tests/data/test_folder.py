"""dataset=folder: a folder the test writes (three classes of tiny generated images, PNG and
JPEG, grey and colour, two sizes) through the pipeline, its cache and digest, predict naming a
class by its folder, and each bad folder as one line before any training."""

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.config.schema import to_config
from pipeline.data.folder import load_folder
from pipeline.data.load import load
from pipeline.errors import ConfigError, DataError
from pipeline.training.job import run
from tests.helpers.cli import SILENT, make_config, run_main

CLASSES = ("circle", "cross", "stripe")


def draw(kind: str, size: tuple[int, int], rng) -> np.ndarray:
    """A light shape of `kind` on a dark noisy background, (height, width) uint8."""
    h, w = size
    yy, xx = np.mgrid[:h, :w] / np.array([h, w])[:, None, None]
    if kind == "circle":
        ink = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.09
    elif kind == "cross":
        ink = (np.abs(yy - 0.5) < 0.1) | (np.abs(xx - 0.5) < 0.1)
    else:
        ink = np.abs(yy - 0.3) < 0.12
    return np.clip(ink * 220 + rng.integers(0, 30, (h, w)), 0, 255).astype(np.uint8)


def write_folder(root, per_class: int = 12, classes=CLASSES, seed: int = 0):
    """`root`/<class>/NN.png|jpg: PNG and JPEG, grey and colour, 20x20 and 36x30."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.fromarray(draw(name, (20, 20) if i % 2 else (36, 30), rng))
            if i % 3 == 0:
                image = image.convert("RGB")
            image.save(root / name / f"{i:02d}.{'jpg' if i % 4 == 1 else 'png'}", quality=95)
    return root


def folder_cfg(path, *more):
    return to_config(make_config(["dataset=folder", f"dataset.path={path}", *more])).dataset


@pytest.fixture
def shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    return write_folder(tmp_path / "shapes")


def test_a_folder_loads_as_a_stratified_split_the_same_each_time(shapes):
    ds = load(folder_cfg(shapes))
    assert ds.name == "shapes" and ds.class_names == CLASSES
    # 0.2 of 36 images: 8 for test (rounded up, as scikit-learn does), stratified
    assert ds.train_x.shape == (28, 28, 28) and ds.test_x.shape == (8, 28, 28)
    assert ds.train_x.dtype == np.uint8
    assert sorted(np.bincount(ds.test_y).tolist()) == [2, 3, 3]
    again = load_folder(folder_cfg(shapes))  # from the cache: the same arrays
    np.testing.assert_array_equal(again.train_x, ds.train_x)
    np.testing.assert_array_equal(again.test_y, ds.test_y)
    assert again.digest == ds.digest
    other = load(folder_cfg(shapes, "dataset.split_seed=1"))
    assert other.digest != ds.digest and not np.array_equal(other.test_x, ds.test_x)


def test_colour_and_size_are_what_the_settings_say(shapes):
    ds = load(folder_cfg(shapes, "dataset.channels=3", "dataset.image_size=[16,12]"))
    assert ds.train_x.shape[1:] == (16, 12, 3)


def test_the_cache_is_read_the_second_time(shapes, caplog):
    load(folder_cfg(shapes))
    caplog.clear()
    with caplog.at_level("INFO", logger="pipeline.data.folder"):
        load(folder_cfg(shapes))
    assert "from the cache" in caplog.text
    (cache,) = (shapes.parent / "cache" / "folders").iterdir()
    cache.write_bytes(b"not an npz")  # a broken cache is decoded again
    caplog.clear()
    with caplog.at_level("INFO", logger="pipeline.data.folder"):
        assert len(load(folder_cfg(shapes)).train_y) == 28
    assert "decoded" in caplog.text


def test_the_digest_follows_the_files(shapes):
    before = load(folder_cfg(shapes)).digest
    path = shapes / "cross" / "03.png"
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(path)
    changed = load(folder_cfg(shapes)).digest
    assert changed != before
    path.unlink()
    removed = load(folder_cfg(shapes))
    assert (
        removed.digest not in (before, changed) and len(removed.train_y) + len(removed.test_y) == 35
    )


def test_given_train_and_test_folders_are_the_split(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    write_folder(tmp_path / "given" / "train", per_class=6)
    write_folder(tmp_path / "given" / "test", per_class=2, classes=CLASSES[:2], seed=1)
    ds = load(folder_cfg(tmp_path / "given"))
    assert ds.class_names == CLASSES
    assert len(ds.train_y) == 18 and sorted(ds.test_y.tolist()) == [0, 0, 1, 1]
    assert len(set(ds.train_y[-6:].tolist())) > 1  # shuffled: validation sees every class


def test_a_folder_trains_records_and_predicts_by_class_name(shapes, isolated_tracking):
    from pipeline.serving.classifier import load_classifier, predict_files

    run(make_config(["dataset=folder", f"dataset.path={shapes}", SILENT, "trainer.epochs=3"]))
    client = MlflowClient(isolated_tracking)
    (r,) = client.search_runs([client.get_experiment_by_name("shapes").experiment_id])
    assert r.info.status == "FINISHED"
    assert json.loads(r.data.params["dataset.class_names"].replace("'", '"')) == list(CLASSES)
    inputs = {i.dataset.name: i.dataset for i in r.inputs.dataset_inputs}
    assert set(inputs) == {"shapes-train[:22]", "shapes-train[22:28]", "shapes-test[:8]"}
    plots = {a.path for a in client.list_artifacts(r.info.run_id, "plots")}
    assert {"plots/samples.png", "plots/predictions.png", "plots/weights.png"} <= plots
    classifier = load_classifier(r.info.run_id)
    assert classifier.class_names == CLASSES
    assert classifier.preparation.mnist_centre is False
    files, images, probs = predict_files(classifier, [str(shapes / "stripe")])
    assert images.shape == (12, 28, 28)
    # the same image the loader made: no MNIST crop-and-centre on the way in
    from pipeline.data.images import decode

    np.testing.assert_array_equal(images[0], decode(files[0], (28, 28), 1))
    assert probs.shape == (12, 3)


def test_predict_prints_the_folders_class_names(shapes, isolated_tracking, capsys):
    from pipeline.cli.predict import main as predict

    overrides = [SILENT, "trainer.epochs=20", "optimizer=adam", "optimizer.learning_rate=0.01"]
    run(make_config(["dataset=folder", f"dataset.path={shapes}", *overrides]))
    client = MlflowClient(isolated_tracking)
    (r,) = client.search_runs([client.get_experiment_by_name("shapes").experiment_id])
    capsys.readouterr()
    assert predict([r.info.run_id, str(shapes / "circle" / "00.png")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{shapes / 'circle' / '00.png'}: circle ")


def _error(capsys, args) -> str:
    code = run_main(args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "holds no class folders"),
        (lambda root: (root / "a").mkdir(parents=True), "a of "),
        (lambda root: write_folder(root, classes=("only",)), "one class folder (only)"),
        (
            lambda root: (write_folder(root), (root / "cross" / "notes.txt").write_text("x")),
            "notes.txt: not a PNG or JPEG image, in class folder 'cross'",
        ),
        (
            lambda root: (write_folder(root), (root / "cross" / "bad.png").write_text("x")),
            "bad.png: not an image Pillow can read (PNG or JPEG), in class folder 'cross'",
        ),
        (
            lambda root: (
                write_folder(root / "train", classes=CLASSES[:2]),
                write_folder(root / "test", per_class=2),
            ),
            "lacks: stripe",
        ),
        (lambda root: write_folder(root / "train"), "has a train/ folder but no test/"),
        (
            lambda root: (write_folder(root), write_folder(root, per_class=1, classes=("rare",))),
            "class 'rare' has 1 image",
        ),
    ],
)
def test_a_bad_folder_is_one_line_before_any_training(
    tmp_path, isolated_tracking, capsys, make, message
):
    root = tmp_path / "bad"
    make(root)
    args = ["dataset=folder", f"dataset.path={root}", f"hydra.run.dir={tmp_path / 'run'}"]
    line = _error(capsys, args)
    assert message in line, line
    assert MlflowClient(isolated_tracking).search_experiments(filter_string="name='bad'") == []


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("dataset.channels=2", "dataset.channels"),
        ("dataset.image_size=[28]", "dataset.image_size"),
        ("dataset.test_split=1.0", "dataset.test_split"),
    ],
)
def test_bad_folder_settings_name_their_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        folder_cfg(tmp_path, override)


def test_a_folder_without_a_path_says_so():
    with pytest.raises(ConfigError, match=r"dataset\.path.*dataset\.path=DIR"):
        to_config(make_config(["dataset=folder"]))


def test_too_few_images_for_the_test_split_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    write_folder(tmp_path / "few", per_class=2)
    with pytest.raises(DataError, match=r"test_split=0\.2 of 6 images leaves 2 for test"):
        load(folder_cfg(tmp_path / "few"))

"""trainer.backend: Keras on TensorFlow (the default) or on JAX, one engine per process."""

import os
import subprocess
import sys
import warnings

import mlflow
import numpy as np
import pytest

from pipeline.config.schema import to_config
from pipeline.errors import ConfigError
from pipeline.training import engine
from tests.helpers.cli import cli, make_config
from tests.helpers.paths import PROJECT_ROOT


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["trainer.backend=torch"], ["trainer.backend='torch'", "tensorflow, jax"]),
        (
            ["trainer.backend=jax", "trainer.strategy=mirrored"],
            ["trainer.strategy", "tf.distribute"],
        ),
        (["trainer.backend=jax", "trainer.cpu_devices=2"], ["trainer.cpu_devices=2"]),
    ],
)
def test_a_backend_and_what_it_cannot_do_are_checked(overrides, names):
    with pytest.raises(ConfigError) as caught:
        to_config(make_config(overrides))
    for name in names:
        assert name in str(caught.value)


def test_the_engine_cannot_change_inside_a_process():
    # This process runs Keras on TensorFlow (the tests import it).
    engine.select(to_config(make_config([])).trainer)  # the same engine: nothing to do
    with pytest.raises(ConfigError, match="already runs Keras on tensorflow"):
        engine.select(to_config(make_config(["trainer.backend=jax"])).trainer)


@pytest.mark.cli
def test_a_jax_run_is_recorded_repeatable_and_its_model_loads_on_tensorflow(
    real_data, isolated_tracking, tmp_path
):
    args = [f"dataset.path={real_data}", "dataset.limit=2000", "trainer.epochs=2"]
    args += ["trainer.backend=jax", "report.html=false"]
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = cli([*args, f"seed={seed}", f"hydra.run.dir={tmp_path / name}"])
        assert out.returncode == 0, out.stderr[-3000:]
        assert "Traceback" not in out.stderr
    runs = mlflow.search_runs(
        search_all_experiments=True, output_format="list", order_by=["start_time ASC"]
    )
    a, b, c = runs
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert a.data.params["trainer.backend"] == "jax"
    same = {k: v for k, v in a.data.metrics.items() if "seconds" not in k}
    assert same == {k: b.data.metrics[k] for k in same}  # the same seed, the same numbers
    assert a.data.metrics["val_loss"] != c.data.metrics["val_loss"]

    # The model trained on JAX answers in this process, whose Keras runs on TensorFlow.
    from pipeline.data.load import load
    from pipeline.serving.classifier import load_classifier

    test_x = load(to_config(make_config(args)).dataset).test_x
    saved = np.load(tmp_path / "a" / "predictions.npz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probs = load_classifier(f"runs:/{a.info.run_id}/model").probabilities(test_x)
    assert not [w for w in caught if "jit_compile" in str(w.message)]  # XLA left to the client
    agree = np.mean(probs.argmax(1) == saved["predictions"])
    assert agree >= 0.999, agree
    model = mlflow.pyfunc.load_model(f"runs:/{a.info.run_id}/model")
    np.testing.assert_allclose(model.predict(test_x[:8]), probs[:8], rtol=1e-4, atol=1e-6)


@pytest.mark.cli
def test_the_in_process_tests_pass_on_jax(tmp_path):
    """The stages, every model, early stopping and resume (identical metrics), on JAX."""
    selection = [
        "tests/models",
        "tests/training/test_stages.py",
        "tests/training/test_resume.py",
        "tests/tracking/test_logged_model.py",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "KERAS_BACKEND": "jax", "PYTEST_ADDOPTS": ""},
    )
    assert out.returncode == 0, out.stdout[-4000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout.splitlines()[-1]


@pytest.mark.cli
def test_a_jax_process_never_imports_tensorflow():
    """Keras imports TensorFlow, where it is installed, to seed it; on JAX the pipeline keeps
    it out (half a gigabyte the process would hold for nothing)."""
    code = (
        "import sys, numpy as np\n"
        "from pipeline.training.backend import keras, tf\n"
        "keras.utils.set_random_seed(1)\n"
        "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation='softmax')])\n"
        "m.compile('sgd', 'sparse_categorical_crossentropy')\n"
        "m.fit(np.ones((8, 4)), np.zeros(8), epochs=1, verbose=0)\n"
        "print(keras.backend.backend(), tf is None, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["jax", "True", "False"]

"""The logged model answers every MLflow client the same, and silently."""

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pytest

from pipeline.training.job import run
from tests.helpers.cli import NO_REPORT, SILENT, make_config


@pytest.fixture
def logged(real_data, isolated_tracking, tmp_path):
    """A run's logged model trained with many steps per call (`steps_per_execution=50`), and
    four test images."""
    cfg = make_config(
        [
            f"dataset.path={real_data}",
            "dataset.limit=4000",
            "trainer.epochs=1",
            "trainer.steps_per_execution=50",
            SILENT,
            *NO_REPORT,
        ]
    )
    run(cfg, output_dir=tmp_path / "job", overrides=[])
    (found,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    x = np.random.default_rng(1).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    return f"runs:/{found.info.run_id}/model", x


def test_every_in_process_client_predicts_the_same_without_a_word(logged, capfd):
    from pipeline.serving.classifier import load_classifier

    uri, x = logged
    capfd.readouterr()
    keras_model = mlflow.keras.load_model(uri)
    assert keras_model.steps_per_execution == 1  # training's value stays with training
    expected = keras_model.predict(x, verbose=0)
    by_pyfunc = mlflow.pyfunc.load_model(uri).predict(x)
    by_classifier = load_classifier(uri).probabilities(x)
    out = capfd.readouterr().out
    assert out == "", out[:500]
    np.testing.assert_allclose(by_pyfunc, expected, rtol=1e-6)
    np.testing.assert_allclose(by_classifier, expected, rtol=1e-5)


@pytest.mark.cli
def test_mlflow_models_predict_prints_json_alone(logged, tmp_path):
    uri, x = logged
    (tmp_path / "in.json").write_text(json.dumps({"inputs": x.tolist()}))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    cmd = ["mlflow", "models", "predict", "-m", uri, "-i", str(tmp_path / "in.json")]
    out = subprocess.run(
        [*cmd, "--env-manager", "local"], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout)  # the predictions and nothing else
    expected = mlflow.keras.load_model(uri).predict(x, verbose=0)
    np.testing.assert_allclose(np.array(answer["predictions"]), expected, rtol=1e-5)

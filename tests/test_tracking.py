import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline._tf import keras
from pipeline.config import TrackingConfig, flatten
from pipeline.tracking import recorder, store
from tests.helpers import run_main


def test_flatten_nested_config():
    flat = flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]})
    assert flat == {"a.b": 1, "a.c.d": "x", "e": [1, 2]}


def _only_run(uri):
    exp = MlflowClient(uri).get_experiment_by_name("t")
    (r,) = MlflowClient(uri).search_runs([exp.experiment_id])
    return r


def test_epoch_logger_uses_epoch_numbers_as_steps(isolated_tracking):
    exp = store.setup(TrackingConfig(), "t")
    x = np.random.default_rng(0).random((32, 4)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    with recorder.start_run(exp, "r", {}) as run_id:
        model.fit(
            x,
            y,
            epochs=3,
            validation_split=0.25,
            verbose=0,
            callbacks=[recorder.EpochMetricsLogger()],
        )
    client = MlflowClient(isolated_tracking)
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert sorted(m.step for m in client.get_metric_history(run_id, name)) == [1, 2, 3]


def test_run_status_finished_failed_killed(isolated_tracking):
    exp = store.setup(TrackingConfig(), "t")
    client = MlflowClient(isolated_tracking)
    with recorder.start_run(exp, "ok", {"k": "v"}) as ok:
        pass
    with pytest.raises(ValueError), recorder.start_run(exp, "bad", {}) as bad:
        raise ValueError("no good")
    with pytest.raises(KeyboardInterrupt), recorder.start_run(exp, "stop", {}) as stop:
        raise KeyboardInterrupt
    assert client.get_run(ok).info.status == "FINISHED"
    assert client.get_run(ok).data.tags["k"] == "v"
    assert client.get_run(bad).info.status == "FAILED"
    assert client.get_run(bad).data.tags["error"] == "ValueError: no good"
    assert client.get_run(stop).info.status == "KILLED"
    assert mlflow.active_run() is None


def test_sweep_that_fails_leaves_no_run_running(isolated_tracking, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "nowhere"))
    assert run_main(["-m", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]) != 0
    assert "nowhere" in capsys.readouterr().err
    client = MlflowClient(isolated_tracking)
    exp = client.get_experiment_by_name("mnist")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]  # the parent; no child was started
    assert runs[0].data.tags["sweep"] == "true"


def test_long_run_names_and_tags_fit_the_store():
    name, tags = store.store_ready("sweep " + "x" * 400, {"overrides": "y" * 9000, "a": "b"})
    assert len(name) == store.MAX_RUN_NAME_CHARS and name.endswith("…")
    assert name.startswith("sweep xxx")
    assert len(tags["overrides"]) == store.MAX_TAG_CHARS
    assert tags["a"] == "b"
    assert store.store_ready(" short ", {})[0] == "short"

import time

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.naming import flatten
from pipeline.config.schema import TrackingConfig
from pipeline.errors import TrackingError
from pipeline.tracking import store
from pipeline.tracking.client import RecorderClient
from pipeline.tracking.protocol import RunSpec
from pipeline.training.backend import keras
from pipeline.training.callbacks import EpochsToRecorder
from tests.helpers.cli import run_main


def test_flatten_nested_config():
    flat = flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]})
    assert flat == {"a.b": 1, "a.c.d": "x", "e": [1, 2]}


def _spec(uri, name, **tags):
    return RunSpec(
        tracking=TrackingConfig(uri=uri), experiment="t", run_name=name, tags=tags, params={}
    )


def test_epochs_reach_the_recorder_with_epoch_numbers_as_steps(isolated_tracking):
    x = np.random.default_rng(0).random((32, 4)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rec = RecorderClient()
    rec.open(_spec(isolated_tracking, "r"))
    model.fit(x, y, epochs=3, validation_split=0.25, verbose=0, callbacks=[EpochsToRecorder(rec)])
    rec.close("FINISHED")
    client = MlflowClient(isolated_tracking)
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert sorted(m.step for m in client.get_metric_history(rec.run_id, name)) == [1, 2, 3]


def test_run_status_finished_failed_killed(isolated_tracking):
    client = MlflowClient(isolated_tracking)
    ids = {}
    for status, error, tags in (
        ("FINISHED", None, {}),
        ("FAILED", "ValueError: no good", {"failed_stage": "fit"}),
        ("KILLED", "interrupted", {}),
    ):
        rec = RecorderClient()
        rec.open(_spec(isolated_tracking, status.lower(), k="v"))
        rec.close(status, error, tags)
        ids[status] = rec.run_id
    ok, bad, stop = (client.get_run(ids[s]) for s in ("FINISHED", "FAILED", "KILLED"))
    assert ok.info.status == "FINISHED" and ok.data.tags["k"] == "v"
    assert "error" not in ok.data.tags
    assert bad.info.status == "FAILED"
    assert bad.data.tags["error"] == "ValueError: no good"
    assert bad.data.tags["failed_stage"] == "fit"
    assert stop.info.status == "KILLED"
    assert mlflow.active_run() is None  # the run lives in the recorder, never here


def test_a_store_that_refuses_the_run_stops_the_job(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rec = RecorderClient()
    rec.open(_spec(f"sqlite:///{blocker}/mlflow.db", "r"))
    with pytest.raises(TrackingError, match=str(blocker)):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rec.check()
            time.sleep(0.1)
    rec.close("FAILED", "TrackingError")


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


def test_make_ui_prints_each_experiments_runs_view(isolated_tracking, capsys):
    from pipeline.cli import ui
    from pipeline.tracking import links

    assert ui.main(["http://127.0.0.1:5999"]) == 0
    assert "no runs yet" in capsys.readouterr().out
    experiment = store.setup(TrackingConfig(uri=isolated_tracking), "mnist")
    assert ui.main(["http://127.0.0.1:5999"]) == 0
    assert capsys.readouterr().out == (
        f"mnist: http://127.0.0.1:5999/#/experiments/{experiment}/runs?workflowType=machine_learning\n"
    )
    assert links.ui_base("http://server:5000/") == "http://server:5000"
    assert links.ui_base(isolated_tracking) == links.UI_DEFAULT


def test_a_relative_sqlite_uri_is_taken_from_the_working_directory(tmp_path, monkeypatch):
    from pipeline.tracking.store import resolve_uri

    monkeypatch.chdir(tmp_path)
    assert resolve_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"
    assert resolve_uri("sqlite:///a/b.db?timeout=5") == f"sqlite:///{tmp_path / 'a/b.db'}?timeout=5"
    assert resolve_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert resolve_uri("http://host:5000") == "http://host:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_uri(None) == f"sqlite:///{tmp_path / 'env.db'}"


def test_every_record_has_one_handler_in_the_recorder_and_travels_whole():
    import dataclasses
    import pickle

    from pipeline.tracking import protocol, recorder

    assert set(recorder.HANDLERS) == set(protocol.RUN_RECORDS)
    assert set(recorder.STAGES) == set(protocol.RUN_RECORDS)
    assert recorder.STAGES[protocol.DrawReport] == "report"
    assert recorder.STAGES[protocol.LogModel] == "recording (model)"
    record = protocol.LogMetrics({"loss": 0.5}, step=3)
    assert pickle.loads(pickle.dumps(record)) == record
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.step = 4  # type: ignore[misc]


def test_the_client_sends_records_only(isolated_tracking):
    from pipeline.tracking.protocol import CloseRun

    rec = RecorderClient()
    with pytest.raises(TypeError, match="not a record for the run: CloseRun"):
        rec.send(CloseRun(rec.job, "FINISHED"))
    with pytest.raises(TypeError, match="tuple"):
        rec.send(("metrics", {"loss": 1.0}, 1))
    rec.close("KILLED")


def test_a_dataset_another_job_added_first_is_found_on_the_second_try(
    isolated_tracking, monkeypatch
):
    """Parallel jobs of a sweep add the same dataset row at once; the store rolls back the loser
    with an IntegrityError, and the loser's second try must find the winner's row."""
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import recorder

    x = np.zeros((4, 3), np.float32)
    dataset = mlflow.data.from_numpy(x, targets=np.arange(4), source="/d", name="train")
    mlflow.set_experiment("race")
    with mlflow.start_run() as winner:
        mlflow.log_input(dataset, context="training")
    real, calls = mlflow.log_input, []

    def lose_once(ds, context):
        calls.append(context)
        if len(calls) == 1:
            raise MlflowException(
                "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.name"
            )
        real(ds, context=context)

    monkeypatch.setattr(mlflow, "log_input", lose_once)
    with mlflow.start_run() as loser:
        recorder._log_input(dataset, "training")
    assert calls == ["training", "training"]
    client = MlflowClient(isolated_tracking)
    for run in (winner, loser):
        (logged,) = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert logged.dataset.name == "train" and logged.dataset.digest == dataset.digest

    def refuse(ds, context):
        raise MlflowException("the store is read-only")

    monkeypatch.setattr(mlflow, "log_input", refuse)  # any other failure is not retried
    with mlflow.start_run(), pytest.raises(MlflowException, match="read-only"):
        recorder._log_input(dataset, "training")

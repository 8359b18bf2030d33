"""The registered champion: a new version per registration, the alias moved only by a better
run measured on the same data."""

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking import registry
from pipeline.training.backend import keras


@pytest.fixture(scope="module")
def tiny_model():
    return keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)])


def logged_run(model, val_accuracy, data="digestA", metric="val_accuracy"):
    """A finished run with a logged model and the tags a pipeline run carries."""
    tags = {"dataset": "mnist", "model": "linear", "config_key": "linear-sgd-mnist-1234abcd"}
    tags["selection_data"] = data
    with mlflow.start_run(run_name="r", tags=tags) as run:
        # Requirements given: inferring them loads the model in a subprocess (8 s a model).
        mlflow.keras.log_model(model, name="model", pip_requirements=["keras"])
        mlflow.log_metrics({metric: val_accuracy, "test_accuracy": 0.5})
    metrics = {metric: val_accuracy, "test_accuracy": 0.5}
    return run.info.run_id, metrics, tags


def register(run):
    run_id, metrics, tags = run
    return registry.register(run_id, "mnist", metrics, tags, {"seed": "3"})


def champion_run(client):
    return client.get_model_version_by_alias("mnist-classifier", "champion").run_id


def test_the_alias_moves_only_for_a_better_run_on_the_same_data(isolated_tracking, tiny_model):
    client = MlflowClient()
    first = logged_run(tiny_model, 0.90)
    assert "the first champion" in register(first)
    assert champion_run(client) == first[0]
    version = client.get_model_version("mnist-classifier", "1")
    assert version.tags["val_accuracy"] == "0.900000" and version.tags["seed"] == "3"
    assert version.tags["selection_data"] == "digestA"

    worse = logged_run(tiny_model, 0.85)
    message = register(worse)
    assert "champion stays version 1" in message and "0.9000" in message
    assert champion_run(client) == first[0]

    other_data = logged_run(tiny_model, 0.99, data="digestB")
    message = register(other_data)
    assert "champion stays version 1" in message and "other data" in message
    assert champion_run(client) == first[0]

    better = logged_run(tiny_model, 0.95)
    assert "the new champion, ahead of version 1" in register(better)
    assert champion_run(client) == better[0]
    # Every registration is a version; the loser ones stay in the registry, without the alias.
    versions = client.search_model_versions("name='mnist-classifier'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]


def test_the_best_run_of_a_sweep_is_chosen_by_validation_else_test_accuracy():
    from pipeline.tracking.runs import RunRecord

    def record(name, **metrics):
        return RunRecord(name, name, {}, {}, metrics, {})

    runs = [record("a", val_accuracy=0.9, test_accuracy=0.99), record("b", val_accuracy=0.95)]
    assert registry.best_run(runs).name == "b"
    assert registry.best_run([record("c", test_accuracy=0.7), record("d")]).name == "c"
    assert registry.best_run([record("e")]) is None
    assert registry.model_name("fashion_mnist") == "fashion-mnist-classifier"


def child(name, dataset, val_accuracy):
    from pipeline.tracking.runs import RunRecord

    tags = {"dataset": dataset}
    return RunRecord(f"id-{name}", name, tags, {"seed": "1"}, {"val_accuracy": val_accuracy}, {})


@pytest.fixture
def registrations(monkeypatch):
    """Every call that reaches `registry.register_run`, as (run_id, name, dataset)."""
    calls = []

    def register_run(run_id, name, dataset, metrics, tags, params):
        calls.append((run_id, name, dataset))
        return "registered"

    monkeypatch.setattr(registry, "register_run", register_run)
    return calls


def test_a_single_run_and_a_sweep_register_through_one_function(
    isolated_tracking, registrations, monkeypatch, tmp_path
):
    from pipeline.config.schema import TrackingConfig
    from pipeline.tracking import sweep_results
    from pipeline.tracking.protocol import RunSpec
    from pipeline.tracking.recorder import _Run
    from pipeline.tracking.sweep import MlflowSweepCallback

    # A single run with tracking.register=true, closed as the recorder closes it.
    run = _Run(enabled=True)
    tracking = TrackingConfig(uri=isolated_tracking, register=True)
    run_id = run.open(RunSpec(tracking, "mnist", "single", {"dataset": "mnist"}, params={}))
    run.latest = {"val_accuracy": 0.9}
    run.model_logged = True
    run.close("FINISHED", None, {})
    assert registrations == [(run_id, "single", "mnist")]

    # A sweep: the best finished child of each dataset.
    children = [child("a", "mnist", 0.9), child("b", "mnist", 0.95), child("c", "fashion", 0.8)]
    monkeypatch.setattr(sweep_results, "log_comparison", lambda uri, parent, out: children)
    callback = MlflowSweepCallback()
    callback.run_id = "parent"
    callback._compare(tmp_path)
    assert registrations[1:] == [("id-c", "c", "fashion"), ("id-b", "b", "mnist")]


def test_a_failed_registration_is_logged_and_the_others_go_on(monkeypatch, caplog):
    def register(run_id, dataset, metrics, tags, params):
        if dataset == "fashion":
            raise RuntimeError("the registry is down\nmore")
        return f"registered {run_id}"

    monkeypatch.setattr(registry, "register", register)
    children = [child("a", "mnist", 0.9), child("c", "fashion", 0.8)]
    with caplog.at_level("INFO", logger="pipeline.tracking.registry"):
        assert registry.register_best(children) == ["registered id-a"]
    assert "registering c failed: RuntimeError: the registry is down" in caplog.text
    assert "more" not in caplog.text
    assert "run a: registered id-a" in caplog.text

"""Data-parallel training: `trainer.strategy=mirrored|multi_worker`."""

import json
import re

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.schema import TrainerConfig
from pipeline.errors import ConfigError
from pipeline.training.backend import tf
from pipeline.training.devices import strategy
from pipeline.training.fit import steps_per_execution
from tests.helpers.cli import QUIET, assert_one_line_error, cli
from tests.helpers.stores import runs_in


def _tf_config(monkeypatch, cluster, kind, index):
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})
    )


def test_tf_config_is_checked_before_any_strategy_is_made(monkeypatch):
    multi = TrainerConfig(strategy="multi_worker")
    workers = {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]}
    for cluster in (workers, {"chief": ["127.0.0.1:2000"], "worker": ["127.0.0.1:2001"]}):
        _tf_config(monkeypatch, cluster, "worker", 0)
        with pytest.raises(ConfigError, match="2 workers of TF_CONFIG"):
            strategy(multi)
    # TF_CONFIG means nothing without the strategy.
    assert strategy(TrainerConfig()) is tf.distribute.get_strategy()
    for bad in ("{not json", "", "[1, 2]"):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(ConfigError, match="TF_CONFIG"):
            strategy(multi)


def test_strategy_settings_are_checked():
    with pytest.raises(ConfigError, match=r"trainer\.strategy"):
        TrainerConfig(strategy="tpu")
    with pytest.raises(ConfigError, match=r"trainer\.steps_per_execution"):
        TrainerConfig(strategy="mirrored", steps_per_execution=4)
    with pytest.raises(ConfigError, match=r"trainer\.cpu_devices"):
        TrainerConfig(cpu_devices=0)
    # Under a strategy a null steps_per_execution means one step per call.
    assert steps_per_execution(TrainerConfig(strategy="mirrored"), 1000) == 1
    assert steps_per_execution(TrainerConfig(), 1000) == 16


@pytest.mark.cli
def test_multi_worker_cluster_is_refused_before_anything_is_recorded(
    tiny_data, isolated_tracking, tmp_path, monkeypatch
):
    workers = {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]}
    _tf_config(monkeypatch, workers, "worker", 0)
    out = cli(["trainer.strategy=multi_worker", *tiny_data, f"hydra.run.dir={tmp_path / 'r'}"])
    assert_one_line_error(out, "trainer.strategy=multi_worker", "2 workers")
    assert runs_in(isolated_tracking) == []


@pytest.mark.cli
def test_multi_worker_without_a_cluster_trains_as_one_worker(
    tiny_data, isolated_tracking, tmp_path, monkeypatch
):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    out = cli(
        [
            "trainer.strategy=multi_worker",
            *tiny_data,
            "trainer.epochs=2",
            *QUIET,
            f"hydra.run.dir={tmp_path / 'r'}",
        ]
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (only,) = runs_in(isolated_tracking)
    assert only.info.status == "FINISHED"
    assert only.data.params["trainer.strategy"] == "multi_worker"
    assert "test_accuracy" in only.data.metrics


def test_unknown_device_is_named():
    with pytest.raises(ConfigError, match="/gpu:7"):
        strategy(TrainerConfig(strategy="mirrored", devices=["/gpu:7"]))


@pytest.mark.cli
def test_bad_strategy_override_is_one_line(tmp_path, isolated_tracking):
    out = cli(["trainer.strategy=tpu", f"hydra.run.dir={tmp_path / 'run'}"])
    assert_one_line_error(out, "trainer.strategy", "tpu")
    assert runs_in(isolated_tracking) == []


@pytest.mark.cli
def test_mirrored_on_two_cpu_devices_matches_one_device(real_data, isolated_tracking, tmp_path):
    common = [
        "model=ann",
        "optimizer=adam",
        f"dataset.path='{real_data}'",
        "dataset.limit=10000",
        "trainer.epochs=3",
        *QUIET,
        "report.samples=false",
        "report.mistakes=false",
    ]
    single = cli([*common, f"hydra.run.dir={tmp_path / 'single'}"], timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    # The job's last word says where to see its run in the UI.
    name = "ann-adam limit=10000 epochs=3"  # named by what the command overrides
    (seen,) = [line for line in single.stdout.splitlines() if f"run {name} FINISHED" in line]
    assert re.search(r": http://127\.0\.0\.1:5000/#/experiments/\d+/runs/[0-9a-f]{32}$", seen)
    mirrored = cli(
        [
            *common,
            "trainer.strategy=mirrored",
            "trainer.cpu_devices=2",  # and no trainer.devices: every logical CPU
            "tracking.run_name=mirrored",
            f"hydra.run.dir={tmp_path / 'mirrored'}",
        ],
        timeout=600,
    )
    assert mirrored.returncode == 0, mirrored.stderr[-3000:]
    assert "MirroredStrategy over 2 replicas" in mirrored.stderr + mirrored.stdout

    runs = {r.info.run_name: r for r in runs_in(isolated_tracking)}
    assert set(runs) == {name, "mirrored"}
    one, two = runs[name], runs["mirrored"]
    assert one.data.params["num_replicas"] == "1"
    assert two.data.params["num_replicas"] == "2"
    # Each epoch's metrics are logged once, not once per replica.
    client = MlflowClient(isolated_tracking)
    for name in ("loss", "accuracy", "val_accuracy"):
        steps = [m.step for m in client.get_metric_history(two.info.run_id, name)]
        assert sorted(steps) == [1, 2, 3], (name, steps)
    assert abs(two.data.metrics["test_accuracy"] - one.data.metrics["test_accuracy"]) <= 0.01
    assert abs(two.data.metrics["val_accuracy"] - one.data.metrics["val_accuracy"]) <= 0.01

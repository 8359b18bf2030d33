"""Hyperparameter search with Hydra's Optuna sweeper: `hparams_search=optuna`."""

import math

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from tests.helpers import CONF_DIR, NO_REPORT, QUIET, cli, run_main, runs_in, sweep_runs
from tests.helpers import free_port as closed_port


def test_search_space_and_objective_direction():
    from pipeline.config import register

    register()  # the schema the config's defaults name, also when this test runs alone
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=["hparams_search=optuna"], return_hydra_config=True
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize"
    assert sweeper.n_trials == 20
    assert set(sweeper.params) == {
        "optimizer.learning_rate",
        "trainer.batch_size",
        "model.hidden_units",
    }
    assert sweeper.params["optimizer.learning_rate"].startswith("tag(log,")
    assert cfg.model.name == "ann"
    assert cfg.trainer.validation_split > 0


def test_search_records_trials_under_a_parent_with_the_best(tiny_data, isolated_tracking, tmp_path):
    code = run_main(
        [
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=4",
            *tiny_data,
            "trainer.epochs=2",
            *QUIET,
            *NO_REPORT,
            f"hydra.sweep.dir={tmp_path / 'search'}",
        ]
    )
    assert code == 0
    parent, trials = sweep_runs(isolated_tracking)
    assert len(trials) == 4
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweeper"] == "OptunaSweeper"
    assert [t.info.run_name for t in trials] == [f"ann-sgd-trial-{i}" for i in range(4)]

    # Every trial's settings come from the search space.
    for t in trials:
        assert 1e-4 <= float(t.data.params["optimizer.learning_rate"]) <= 0.1
        assert t.data.params["trainer.batch_size"] in {"32", "64", "128", "256"}
        assert t.data.params["model.hidden_units"] in {"32", "64", "128", "256", "512"}
    assert len({t.data.params["optimizer.learning_rate"] for t in trials}) == 4

    # The parent holds the best trial: its value is the highest validation accuracy, and its
    # parameters and run are that trial's.
    best = max(trials, key=lambda t: t.data.metrics["val_accuracy"])
    assert math.isclose(
        parent.data.metrics["best_val_accuracy"], best.data.metrics["val_accuracy"], rel_tol=1e-9
    )
    assert parent.data.tags["best_run_id"] == best.info.run_id
    for key in ("optimizer.learning_rate", "trainer.batch_size", "model.hidden_units"):
        assert float(parent.data.params[f"best.{key}"]) == pytest.approx(
            float(best.data.params[key])
        )
    artifacts = {a.path for a in MlflowClient(isolated_tracking).list_artifacts(parent.info.run_id)}
    assert {"search", "comparison"} <= artifacts
    assert (tmp_path / "search" / "optimization_results.yaml").is_file()


@pytest.mark.cli
def test_search_without_validation_is_refused(tiny_data, isolated_tracking, tmp_path):
    out = cli(
        [
            "hparams_search=optuna",
            *tiny_data,
            "trainer.validation_split=0",
            f"hydra.sweep.dir={tmp_path / 'search'}",
        ]
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: trainer.validation_split=0"), out.stderr[-2000:]
    assert runs_in(isolated_tracking) == []


@pytest.mark.cli
def test_sweep_against_an_unreachable_server_stops_before_any_job(tiny_data, tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    out = cli(["-m", f"tracking.uri={uri}", *tiny_data, f"hydra.sweep.dir={tmp_path / 's'}"])
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: MLflow tracking server {uri}")
    assert "Launching" not in out.stdout + out.stderr

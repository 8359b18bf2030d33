"""Hyperparameter search with the project's Optuna sweeper: `hparams_search=optuna`."""

import math
import signal
import time

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline.config.schema import register
from tests.helpers.cli import NO_REPORT, QUIET, cli, run_main, start_pipeline
from tests.helpers.paths import CONF_DIR
from tests.helpers.services import free_port as closed_port
from tests.helpers.stores import runs_in, sweep_runs


def test_search_space_and_objective_direction():
    from pipeline.config.schema import register

    register()  # the schema the config's defaults name, also when this test runs alone
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=["hparams_search=optuna"], return_hydra_config=True
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize"
    assert sweeper.n_trials == 20
    assert set(sweeper.params) == {"optimizer.learning_rate", "trainer.batch_size"}
    # And the chosen model's own keys: the ANN's width, the CNN's kernel and dropout.
    assert set(sweeper.model_params.ann) == {"model.hidden_units"}
    assert set(sweeper.model_params.cnn) == {"model.kernel_size", "model.dropout"}
    assert sweeper.params["optimizer.learning_rate"].startswith("tag(log,")
    assert cfg.model.name == "ann"
    assert cfg.trainer.validation_split > 0


@pytest.mark.parametrize(
    ("model", "own"),
    [
        ("ann", {"model.hidden_units"}),
        ("cnn", {"model.kernel_size", "model.dropout"}),
        ("linear", set()),
    ],
)
def test_the_search_space_holds_the_chosen_models_own_keys(model, own):
    from hydra_plugins.pipeline_optuna.sweeper import OptunaSweeper

    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hparams_search=optuna", f"model={model}"],
            return_hydra_config=True,
        )
    sweeper = OptunaSweeper(**OmegaConf.to_container(cfg.hydra.sweeper, resolve=False))
    sweeper.config = cfg
    space, _ = sweeper._space([])
    assert set(space) == {"optimizer.learning_rate", "trainer.batch_size", *own}


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
    assert [t.info.run_name.split()[0] for t in trials] == [f"ann-sgd-trial-{i}" for i in range(4)]
    for t in trials:  # each name shows the trial's own values, in short
        assert f" bs={t.data.params['trainer.batch_size']}" in t.info.run_name
        assert f" hidden={t.data.params['model.hidden_units']}" in t.info.run_name

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


# --- Optuna 4+: shared studies, pruning, resuming ---------------------------------------------


def search_args(tiny_data, sweep_dir, *more):
    return [
        "hparams_search=optuna",
        *tiny_data,
        "trainer.epochs=2",
        *QUIET,
        *NO_REPORT,
        f"hydra.sweep.dir={sweep_dir}",
        *more,
    ]


def load_study(storage: str, name: str = "mnist-ann-sgd"):
    import optuna

    from hydra_plugins.pipeline_optuna.sweeper import make_storage

    return optuna.load_study(study_name=name, storage=make_storage(storage))


def test_optuna_is_current():
    import optuna

    assert int(optuna.__version__.split(".")[0]) >= 4


def test_a_pruner_that_must_prune_prunes(tiny_data, isolated_tracking, tmp_path):
    # Half the learning rates cannot learn in an epoch: once a good trial has finished, the
    # median pruner stops the hopeless ones after their first epoch. The study is in memory
    # (its sampler seeded, so the trials are the same on every run) and the jobs run here.
    code = run_main(
        search_args(
            tiny_data,
            tmp_path / "search",
            "hydra.sweeper.n_trials=6",
            "hydra.sweeper.sampler=random",
            "hydra.sweeper.pruner_startup_trials=1",
            "hydra.sweeper.params={optimizer.learning_rate: 'choice(0.5, 0.0000001)'}",
            "trainer.epochs=3",
        )
    )
    assert code == 0
    parent, trials = sweep_runs(isolated_tracking)
    pruned = [t for t in trials if t.info.status == "KILLED"]
    assert pruned, [(t.info.run_name, t.data.params["optimizer.learning_rate"]) for t in trials]
    for run in pruned:  # recorded as stopped on purpose, not as failed, after epoch 1
        assert float(run.data.params["optimizer.learning_rate"]) < 0.001
        assert run.data.tags["pruned_at_epoch"] == "1"
        assert run.data.tags["optuna_trial_state"] == "PRUNED"
    assert all(t.info.status in ("FINISHED", "KILLED") for t in trials)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_pruned"] == len(pruned)
    assert parent.data.tags["optuna_study"] == "mnist-ann-sgd"


@pytest.mark.cli
def test_two_processes_share_one_study(tiny_data, isolated_tracking, tmp_path):
    storage = f"journal:{tmp_path / 'shared' / 'optuna.log'}"
    procs = [
        start_pipeline(
            search_args(
                tiny_data, tmp_path / f"search-{k}", "hydra.sweeper.n_trials=3",
                f"hydra.sweeper.storage={storage}",
            )
        )
        for k in range(2)
    ]  # fmt: skip
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    study = load_study(storage)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(6))  # 2 x 3 trials, each number once
    runs = runs_in(isolated_tracking)
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    trials = [r for r in runs if r.data.tags.get("sweep") != "true"]
    assert len(parents) == 2  # one per search process, both on the study
    assert {p.data.tags["optuna_study"] for p in parents} == {"mnist-ann-sgd"}
    assert sorted(int(t.data.params["search.trial_number"]) for t in trials) == numbers
    # Each parent reports the study's best trial as it stood when that process ended, whichever
    # process ran it: at least as good as its own trials; the last to end, the study's best.
    for parent in parents:
        reported = study.trials[int(parent.data.tags["best_trial"])]
        assert parent.data.metrics["best_val_accuracy"] == pytest.approx(reported.value)
        own = [
            t
            for t in trials
            if t.data.tags["mlflow.parentRunId"] == parent.info.run_id
            and t.info.status == "FINISHED"
        ]
        assert all(t.data.metrics["val_accuracy"] <= reported.value + 1e-9 for t in own)
    last = max(parents, key=lambda p: p.info.end_time)
    assert last.data.tags["best_trial"] == str(study.best_trial.number)


@pytest.mark.cli
def test_a_stopped_search_resumes_its_study(tiny_data, isolated_tracking, tmp_path):
    from optuna.trial import TrialState

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = search_args(tiny_data, tmp_path / "first", f"hydra.sweeper.storage={storage}")
    proc = start_pipeline([*args, "hydra.sweeper.n_trials=20", "trainer.epochs=4"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            done = [t for t in load_study(storage).trials if t.state == TrialState.COMPLETE]
        except Exception:  # the study is not there yet
            done = []
        if len(done) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130, proc.stderr.read()[-3000:]
    before = load_study(storage).trials
    kept = [t.number for t in before if t.state == TrialState.COMPLETE]
    assert len(kept) >= 2 and len(before) < 20
    assert all(t.state != TrialState.RUNNING for t in before)  # the stopped one is FAIL

    args = search_args(tiny_data, tmp_path / "again", f"hydra.sweeper.storage={storage}")
    assert run_main([*args, "hydra.sweeper.n_trials=2"]) == 0
    after = load_study(storage).trials
    assert [t.number for t in after] == list(range(len(before) + 2))
    assert [t.number for t in after if t.state == TrialState.COMPLETE][: len(kept)] == kept


def test_bad_storage_and_settings_are_one_line(tiny_data, isolated_tracking, tmp_path, capsys):
    import optuna

    journal = tmp_path / "optuna.log"
    from hydra_plugins.pipeline_optuna.sweeper import make_storage

    kept = optuna.create_study(
        study_name="mnist-ann-sgd", storage=make_storage(f"journal:{journal}"), direction="minimize"
    )
    kept.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    cases = {
        f"hydra.sweeper.storage=postgresql+psycopg2://nobody@127.0.0.1:{closed_port()}/x": (
            "does not answer"
        ),
        "hydra.sweeper.n_trials=0": "hydra.sweeper.n_trials=0 is invalid",
        "hydra.sweeper.storage=journal:/proc/nowhere/optuna.log": "cannot be written",
        f"hydra.sweeper.storage=journal:{journal}": "Optuna cannot change a study's direction",
    }
    for override, expected in cases.items():
        code = run_main(search_args(tiny_data, tmp_path / "s", override))
        err = capsys.readouterr().err
        assert code == 1, (override, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[-1].startswith("error: ") and expected in lines[-1], (override, err)
    # The existing study is as it was.
    assert [t.value for t in load_study(f"journal:{journal}").trials] == [0.5]


def test_a_multi_objective_search_records_its_pareto_front(tiny_data, isolated_tracking, tmp_path):
    """Accuracy against the model's size: the parent holds the front, each point a trial whose
    run has those values, none dominated by another trial, and Optuna's figures of the study."""
    code = run_main(
        search_args(
            tiny_data,
            tmp_path / "search",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.direction=[maximize,minimize]",
            "hydra.sweeper.objectives=[val_accuracy,num_params]",
        )
    )
    assert code == 0
    parent, trials = sweep_runs(isolated_tracking)
    assert len(trials) == 4 and all(t.info.status == "FINISHED" for t in trials)
    result = OmegaConf.load(tmp_path / "search" / "optimization_results.yaml")
    by_number = {int(t.data.params["search.trial_number"]): t for t in trials}
    points = {
        n: (t.data.metrics["val_accuracy"], int(t.data.params["num_params"]))
        for n, t in by_number.items()
    }
    front = {p.trial for p in result.pareto_front}
    assert front and parent.data.metrics["pareto_front_size"] == len(front)

    def dominated(a, b):  # b at least as good in both, better in one
        return b[0] >= a[0] and b[1] <= a[1] and b != a

    for number, point in points.items():
        beaten = any(dominated(point, other) for other in points.values())
        assert (number in front) == (not beaten), (number, points)
    for p in result.pareto_front:
        assert p["values"]["val_accuracy"] == pytest.approx(points[p.trial][0])
        assert p["values"]["num_params"] == points[p.trial][1]
    assert parent.data.tags["objectives"] == "maximize val_accuracy, minimize num_params"
    assert f"trial {min(front)}:" in parent.data.tags["pareto_front"]
    client = MlflowClient(isolated_tracking)
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "search")}
    assert "search/pareto_front.png" in figures
    assert {"search/history_val_accuracy.png", "search/history_num_params.png"} <= figures


def test_the_grid_sampler_runs_each_point_once(tiny_data, isolated_tracking, tmp_path):
    code = run_main(
        search_args(
            tiny_data,
            tmp_path / "search",
            "model=linear",
            "hydra.sweeper.sampler=grid",
            "hydra.sweeper.n_trials=10",  # capped at the grid's 4 points
            "optimizer.learning_rate=choice(0.01,0.1)",
            "trainer.batch_size=range(32,97,64)",  # 32, 96: Hydra's range, stop excluded
        )
    )
    assert code == 0
    _, trials = sweep_runs(isolated_tracking)
    got = sorted(
        (float(t.data.params["optimizer.learning_rate"]), int(t.data.params["trainer.batch_size"]))
        for t in trials
    )
    assert got == [(0.01, 32), (0.01, 96), (0.1, 32), (0.1, 96)]


def test_a_fixed_value_wins_and_a_failed_trials_error_is_in_the_summary(
    tiny_data, isolated_tracking, tmp_path
):
    """`optimizer.learning_rate=1e9` on the command line is fixed (the space's rate leaves the
    search) and every trial diverges: each trial's error is on the parent and in the result."""
    code = run_main(
        search_args(
            tiny_data,
            tmp_path / "search",
            "hydra.sweeper.n_trials=2",
            "optimizer.learning_rate=1e9",
        )
    )
    assert code == 0
    parent, trials = sweep_runs(isolated_tracking)
    assert [t.data.params["optimizer.learning_rate"] for t in trials] == ["1000000000.0"] * 2
    assert all(t.info.status == "FAILED" and "diverged" in t.data.tags["error"] for t in trials)
    result = OmegaConf.load(tmp_path / "search" / "optimization_results.yaml")
    assert result.fail == 2 and set(result.failed_trials) == {0, 1}
    assert all("diverged" in e for e in result.failed_trials.values())
    assert "diverged" in parent.data.tags["failed_trial_0"]
    assert parent.data.metrics["trials_fail"] == 2

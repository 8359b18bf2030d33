"""The Optuna sweeper's search space, samplers, pruners and seeds, parsed as Hydra and the
upstream plugin do (no training here)."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.pipeline_optuna import samplers, space
from hydra_plugins.pipeline_optuna.sweeper import OptunaSweeper
from pipeline.errors import SearchError


def parse(*arguments, params=None, seed=1):
    return space.parse([f"{k}={v}" for k, v in (params or {}).items()], list(arguments), seed)


def test_a_value_fixed_on_the_command_line_wins_and_leaves_the_space():
    searched, fixed = parse("y=0", params={"x": "choice(1,2)", "y": "interval(0,1)"})
    assert set(searched) == {"x"} and fixed == ["y=0"]
    # and a sweep there replaces the config's
    searched, _ = parse("x=choice(3,4)", params={"x": "choice(1,2)"})
    assert searched["x"] == CategoricalDistribution([3, 4])


def test_a_fixed_value_in_params_is_passed_on_not_refused():
    searched, fixed = parse(params={"x": "choice(1,2)", "trainer.epochs": "3"})
    assert set(searched) == {"x"} and fixed == ["trainer.epochs=3"]


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("a=range(1,4)", IntDistribution(1, 3)),  # Hydra's range: the stop is excluded
        ("a=range(0,10,3)", IntDistribution(0, 9, step=3)),
        ("a=range(0.5,5.5,step=1)", FloatDistribution(0.5, 4.5, step=1.0)),
        ("a=range(0.1,0.35,step=0.05)", FloatDistribution(0.1, 0.3, step=0.05)),
        ("a=tag(log,interval(0.001,0.1))", FloatDistribution(0.001, 0.1, log=True)),
        ("a=interval(1,8)", FloatDistribution(1.0, 8.0)),  # Hydra: an interval is of floats
    ],
)
def test_ranges_and_intervals_keep_their_values(line, want):
    (searched, _) = parse(line)
    assert searched["a"] == want


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("a=range(1,1)", "holds no value"),
        ("a=range(1,5,step=-1)", "step > 0"),
        ("a=range(0.5,5.5,step=0)", "step > 0"),
    ],
)
def test_a_range_without_values_is_one_line(line, says):
    with pytest.raises(SearchError, match=says):
        parse(line)


def test_shuffle_searches_the_values_in_an_order_set_by_the_seed():
    orders = {parse("a=shuffle(range(1,9))", seed=s)[0]["a"].choices for s in range(6)}
    assert all(sorted(o) == list(range(1, 9)) for o in orders)
    assert len(orders) > 1  # the seed sets the order ...
    again = parse("a=shuffle(choice(1,2,3,4,5))", seed=3)[0]["a"]
    assert again == parse("a=shuffle(choice(1,2,3,4,5))", seed=3)[0]["a"]  # ... and repeats it


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("grid", optuna.samplers.GridSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("qmc", optuna.samplers.QMCSampler),
        ("nsgaii", optuna.samplers.NSGAIISampler),
    ],
)
def test_each_sampler_by_its_short_name(name, cls):
    searched, _ = parse("x=choice(1,2)", "y=range(0,3)")
    assert isinstance(samplers.make_sampler(name, 1, searched), cls)


def test_a_sampler_by_target_with_its_options():
    made = samplers.make_sampler(
        {"_target_": "optuna.samplers.TPESampler", "n_startup_trials": 2}, 5, {}
    )
    assert isinstance(made, optuna.samplers.TPESampler) and made._n_startup_trials == 2


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("tpee", "did you mean hydra.sweeper.sampler=tpe"),
        ({"_target_": "optuna.samplers.TPESampler", "n_startup_trial": 2}, "n_startup_trials"),
        ({"_target_": "optuna.samplers.TPESamplr"}, "did you mean optuna.samplers.TPESampler"),
        ({"n_startup_trials": 2}, "needs _target_"),
    ],
)
def test_a_bad_sampler_or_option_is_one_line(value, says):
    with pytest.raises(SearchError, match=says):
        samplers.make_sampler(value, 1, {})


def test_a_sampler_that_needs_a_missing_package_says_how_to_get_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(SearchError, match="needs torch, which is not installed: pip install torch"):
        samplers.make_sampler("gp", 1, {})


def test_the_grid_is_the_spaces_values_and_an_interval_has_none():
    searched, _ = parse("x=choice(a,b)", "y=range(0,6,2)", "z=range(0.5,1.5,step=0.5)")
    assert space.grid(searched) == {"x": ["a", "b"], "y": [0, 2, 4], "z": [0.5, 1.0]}
    assert samplers.grid_size(searched) == 12
    with pytest.raises(SearchError, match="an interval has no grid"):
        space.grid(parse("w=interval(0,1)")[0])


@pytest.mark.parametrize(
    ("value", "cls"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
        ({"_target_": "optuna.pruners.PercentilePruner", "percentile": 25.0}, None),
    ],
)
def test_pruners_by_name_or_target(value, cls):
    made = samplers.make_pruner(value, 2, 3)
    assert isinstance(made, cls or optuna.pruners.PercentilePruner)


def test_a_process_seed_is_the_seed_for_the_first_process_and_distinct_for_others():
    assert samplers.process_seed(7, 0) == 7
    joined = {samplers.process_seed(7, n) for n in (3, 4, 20)}
    assert len(joined) == 3 and 7 not in joined
    assert samplers.process_seed(7, 3) == samplers.process_seed(7, 3)
    assert samplers.process_seed(None, 3) is None


@pytest.mark.parametrize(
    ("conf", "says"),
    [
        ({"direction": ["maximize", "minimize"]}, "one direction per objective"),
        ({"objectives": ["test_accuracy"]}, "test set stays out"),
        ({"direction": "maximise"}, "expected maximize or minimize"),
        ({"pruner": "medain"}, "did you mean hydra.sweeper.pruner=median"),
    ],
)
def test_bad_directions_objectives_and_pruners_are_one_line(conf, says):
    with pytest.raises(SearchError, match=says):
        OptunaSweeper(**conf)._check()


def test_a_seeded_study_proposes_alike_and_a_joining_process_otherwise(tmp_path):
    """What the sweeper does with a stored study: the first process's proposals repeat for the
    same seed; a second process on the same study proposes its own."""
    searched, _ = parse("x=interval(0.0,1.0)", "y=choice(1,2,3,4,5,6,7,8)")

    def proposals(storage, name, n=4):
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=samplers.deferred("random", 11, searched),
            load_if_exists=True,
        )
        drawn = []
        for _ in range(n):
            trial = study.ask()
            space.suggest(trial, searched)
            drawn.append(tuple(trial.params.values()))
            study.tell(trial, 0.5)
        return drawn

    first = proposals(f"sqlite:///{tmp_path / 'a.db'}", "s")
    assert first == proposals(f"sqlite:///{tmp_path / 'b.db'}", "s")  # the same command again
    joined = proposals(f"sqlite:///{tmp_path / 'a.db'}", "s")  # another process on study a
    assert not set(joined) & set(first)


def test_hydra_hands_the_sampler_over_as_config_for_the_sweeper_to_make():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from pipeline.config.schema import register
    from tests.helpers.paths import CONF_DIR

    register()
    overrides = [
        "hparams_search=optuna",
        "hydra.sweeper.sampler._target_=optuna.samplers.QMCSampler",
        "+hydra.sweeper.sampler.scramble=true",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    sweeper = instantiate(cfg.hydra.sweeper)
    assert sweeper.conf.sampler == {"_target_": "optuna.samplers.QMCSampler", "scramble": True}
    made = samplers.make_sampler(sweeper.conf.sampler, 3, {})
    assert isinstance(made, optuna.samplers.QMCSampler) and made._scramble is True


def test_a_signal_while_a_trial_is_asked_leaves_it_failed_not_running(tmp_path, monkeypatch):
    """SIGTERM between asking the study for a trial and launching it (the moment after a job
    ends): the trial is told FAIL, so a resumed study does not wait on it."""
    import os
    import signal

    from omegaconf import OmegaConf

    from hydra_plugins.pipeline_optuna import sweeper as module
    from pipeline.tracking import interrupts

    suggest = module.space.suggest

    def suggest_then_signal(trial, searched):
        suggest(trial, searched)
        os.kill(os.getpid(), signal.SIGTERM)

    class NeverLaunched:
        def launch(self, overrides, initial_job_idx):
            raise AssertionError("the trial was launched after the signal")

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep = OptunaSweeper(storage=storage, study_name="s", params={"x": "interval(0.0,1.0)"})
    sweep.config, sweep.launcher = OmegaConf.create({}), NeverLaunched()
    monkeypatch.setattr(module.space, "suggest", suggest_then_signal)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            sweep.sweep([])
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == [optuna.trial.TrialState.FAIL]

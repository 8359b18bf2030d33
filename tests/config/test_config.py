import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from pipeline.config.schema import Config, to_config
from pipeline.errors import ConfigError
from tests.helpers.cli import cli, make_config
from tests.helpers.paths import CONF_DIR, PROJECT_ROOT


@pytest.mark.parametrize(
    ("dataset", "model", "optimizer"),
    list(itertools.product(["mnist", "fashion_mnist"], ["linear", "ann"], ["sgd", "adam"])),
)
def test_every_group_combination_composes(dataset, model, optimizer):
    conf = to_config(
        make_config([f"dataset={dataset}", f"model={model}", f"optimizer={optimizer}"])
    )
    assert isinstance(conf, Config)
    assert (conf.dataset.name, conf.model.name, conf.optimizer.name) == (dataset, model, optimizer)
    assert conf.optimizer.learning_rate == {"sgd": 0.01, "adam": 0.001}[optimizer]
    assert len(conf.dataset.class_names) == 10
    assert all(len(getattr(conf.dataset.files, r).sha256) == 64 for r in ("train_images",))


def test_defaults_are_the_first_seed_experiment():
    conf = to_config(make_config())
    assert (conf.dataset.name, conf.model.name, conf.optimizer.name) == ("mnist", "linear", "sgd")
    assert conf.optimizer.learning_rate == 0.01
    assert (conf.trainer.epochs, conf.trainer.batch_size) == (30, 64)
    assert conf.trainer.validation_split == 0.2
    assert conf.seed == 42
    assert conf.tracking.run_name == "linear-sgd"


def test_preset_seed_linear_mnist_equals_defaults():
    assert make_config(["experiment=seed_linear_mnist"]) == make_config()


def test_preset_seed_ann_fashion():
    conf = to_config(make_config(["experiment=seed_ann_fashion"]))
    assert (conf.dataset.name, conf.model.name, conf.optimizer.name) == (
        "fashion_mnist",
        "ann",
        "adam",
    )
    assert conf.model.keys == {"hidden_units": 128, "activation": "relu"}
    assert conf.optimizer.learning_rate == 0.001
    assert (conf.trainer.epochs, conf.trainer.batch_size) == (20, 32)
    assert conf.trainer.validation_split == 0.0
    assert conf.dataset.class_names[0] == "T-shirt/top"
    assert conf.dataset.class_names[-1] == "Ankle boot"


def test_study_preset_sweeps_model_optimizer_and_five_seeds_on_every_core():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["experiment=study", "dataset=fashion_mnist"],
            return_hydra_config=True,
        )
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {
        "model": "linear,ann",
        "optimizer": "sgd,adam",
        "seed": "range(1,6)",
    }
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == -1
    assert cfg.dataset.name == "fashion_mnist" and cfg.trainer.epochs == 10


def test_preset_then_override():
    conf = to_config(make_config(["experiment=seed_ann_fashion", "trainer.epochs=3"]))
    assert conf.trainer.epochs == 3
    assert conf.model.name == "ann"


def test_ordinary_overrides():
    conf = to_config(
        make_config(
            [
                "optimizer.learning_rate=0.05",
                "trainer.epochs=2",
                "trainer.batch_size=16",
                "trainer.validation_split=0",
                "model=ann",
                "model.hidden_units=32",
                "seed=7",
                "dataset.limit=100",
            ]
        )
    )
    assert conf.optimizer.learning_rate == 0.05
    assert (conf.trainer.epochs, conf.trainer.batch_size) == (2, 16)
    assert conf.trainer.validation_split == 0
    assert conf.model.keys["hidden_units"] == 32
    assert (conf.seed, conf.dataset.limit) == (7, 100)


def test_data_dir_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("PIPELINE_DATA_DIR", "/some/where")
    assert to_config(make_config()).dataset.path == "/some/where"
    monkeypatch.delenv("PIPELINE_DATA_DIR")
    assert to_config(make_config()).dataset.path is None


@pytest.mark.parametrize(
    ("override", "error", "names"),
    [
        ("model=rnn", ConfigCompositionException, "model"),
        ("optimizer=adagrad", ConfigCompositionException, "optimizer"),
        ("trainer.epoch=3", ConfigCompositionException, "trainer.epoch"),
        ("trainer.epochs=abc", ConfigCompositionException, "trainer.epochs=abc"),
    ],
)
def test_bad_override_fails_while_composing(override, error, names):
    with pytest.raises(error, match=names):
        make_config([override])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.epochs=0", "trainer.epochs"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("optimizer.learning_rate=-1", "optimizer.learning_rate"),
        ("optimizer.learning_rate=0", "optimizer.learning_rate"),
        ("trainer.validation_split=1.5", "trainer.validation_split"),
        ("trainer.validation_split=1", "trainer.validation_split"),
        ("trainer.validation_split=-0.1", "trainer.validation_split"),
        ("model=ann model.hidden_units=0", "model.hidden_units"),
        ("model=cnn model.dropout=1", "model.dropout"),
        ("optimizer.schedule=linear", "optimizer.schedule"),
        ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience"),
        ("dataset.limit=0", "dataset.limit"),
    ],
)
def test_out_of_range_value_names_the_key(override, key):
    cfg = make_config(override.split())
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_config(cfg)


@pytest.mark.cli
def test_cli_bad_value_fails_before_reading_data(tmp_path):
    # A data directory that does not exist: reading data would fail with a different message.
    out = cli(
        ["trainer.epochs=0", f"hydra.run.dir={tmp_path}"],
        env={"PIPELINE_DATA_DIR": str(tmp_path / "nowhere")},
    )
    said = out.stdout + out.stderr
    assert out.returncode != 0
    assert "trainer.epochs=0 is invalid" in said
    assert "nowhere" not in said
    assert "Traceback" not in said


@pytest.mark.cli
def test_cfg_job_does_not_import_tensorflow_or_mlflow():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline", "--cfg", "job"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "epochs: 30" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "tensorflow" not in imported
    assert "mlflow" not in imported
    assert "keras" not in imported


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "linear-sgd"),
        (["model=ann", "optimizer=adam", "dataset=fashion_mnist"], "linear-sgd"),
        (["optimizer.learning_rate=0.1", "trainer.batch_size=128"], "linear-sgd lr=0.1 bs=128"),
        (["seed=3", "trainer.epochs=5"], "linear-sgd epochs=5 seed=3"),
        (["dataset.files.train_images.sha256=ab12", "dataset.limit=500"], "linear-sgd limit=500"),
        (["model.hidden_units=64", "trainer.validation_split=0"], "linear-sgd hidden=64 val=0"),
        (["optimizer.learning_rate=0.012345678"], "linear-sgd lr=0.0123"),  # a search's floats
        # what does not change what is learnt stays out of the name (it is in the tag)
        (["tracking.uri=sqlite:////x.db", "report.html=false", "trainer.verbose=0"], "linear-sgd"),
        (["experiment=study", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "linear-sgd"),
    ],
)
def test_run_names_show_the_overrides_that_set_a_run_apart(overrides, name):
    from pipeline.config.naming import run_name

    assert run_name("linear-sgd", overrides) == name


def test_long_run_names_are_capped_readably():
    from pipeline.config.naming import MAX_NAME_CHARS, run_name

    name = run_name("ann-adam", [f"dataset.limit={n}" for n in range(1000, 1030)])
    assert len(name) == MAX_NAME_CHARS and name.endswith("…")
    assert name.startswith("ann-adam limit=1000 limit=1001")


def options(group: str) -> str:
    """A config group's options as Hydra lists them: sorted, comma-separated."""
    return ", ".join(sorted(p.stem for p in Path(CONF_DIR, group).glob("*.yaml")))


@pytest.mark.parametrize(
    ("overrides", "line", "guess"),
    [
        (
            ["model=lineer"],
            "In 'config': Could not find 'model/lineer'; Available options in 'model': {model}"
            "; did you mean model=linear?",
            "model=linear",
        ),
        (
            ["model=transformer"],
            "In 'config': Could not find 'model/transformer'; "
            "Available options in 'model': {model}",
            None,
        ),
        (
            ["trainer.epoch=1"],
            "Could not override 'trainer.epoch'; Key 'epoch' not in 'TrainerConfig'"
            "; did you mean trainer.epochs?",
            "trainer.epochs",
        ),
        (
            ["optimizer.learning_rat=0.1"],
            "Could not override 'optimizer.learning_rat'; "
            "Key 'learning_rat' is not in struct; did you mean optimizer.learning_rate?",
            "optimizer.learning_rate",
        ),
        (
            ["modle=ann"],
            "Could not override 'modle'; Key 'modle' not in 'Config'; did you mean model?",
            "model",
        ),
        (
            ["completely_else=1"],
            "Could not override 'completely_else'; Key 'completely_else' not in 'Config'",
            None,
        ),
        # A bad value of a real key: no guess, which would name the key itself.
        (
            ["trainer.epochs=abc"],
            "Error merging override trainer.epochs=abc; "
            "Value 'abc' of type 'str' could not be converted to Integer",
            None,
        ),
        (
            ["trainer.epochs=[1"],
            "Could not parse 'trainer.epochs=[1': no viable alternative at input '[1'",
            None,
        ),
        (
            ["hydra.job.nme=x"],
            "Could not override 'hydra.job.nme'; Key 'nme' not in 'JobConf'",
            None,
        ),
    ],
)
def test_a_composition_error_is_one_line_with_a_did_you_mean(overrides, line, guess):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.cli.failure import did_you_mean, one_line

    with pytest.raises((HydraException, OmegaConfBaseException)) as info:
        make_config(overrides)
    assert one_line(info.value) == line.format(model=options("model"))
    assert did_you_mean(info.value) == guess


def test_a_user_error_is_one_line_on_stderr_and_exit_code_1(capsys):
    from pipeline.cli.failure import fail

    assert fail(ConfigError("trainer.epochs=0: must be at least 1.\n(see --cfg job)")) == 1
    assert capsys.readouterr().err == "error: trainer.epochs=0: must be at least 1\n"


def test_known_keys_are_the_schemas():
    from pipeline.config.schema import known_keys

    keys = known_keys()
    assert {"trainer", "trainer.epochs", "optimizer.learning_rate", "model.hidden_units"} <= set(
        keys
    )
    assert "dataset.files.train_images.sha256" in keys


def test_an_option_of_a_preset_group_must_exist():
    from pipeline.cli.failure import did_you_mean, one_line

    make_config(["experiment=study", "hparams_search=optuna"])
    # Hydra would skip a missing option of an `optional` group without a word.
    with pytest.raises(ConfigCompositionException) as info:
        make_config(["experiment=studdy"])
    assert one_line(info.value) == (
        "In 'config': Could not find 'experiment/studdy'; Available options in 'experiment': "
        f"{options('experiment')}; did you mean experiment=study?"
    )
    assert did_you_mean(info.value) == "experiment=study"


@pytest.mark.cli
def test_help_says_what_the_tool_does_without_tensorflow():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline", "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    head = out.stdout.splitlines()[:12]
    assert head[0].startswith("python -m pipeline")
    assert "powered by Hydra" not in out.stdout
    assert any("Trains a linear softmax classifier, an ANN or a CNN" in line for line in head)
    for command in ("model=ann optimizer=adam", "experiment=study"):
        assert any(command in line for line in head), command
    assert "model: ann, cnn, custom, linear" in out.stdout  # the groups and the config follow
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "tensorflow" not in imported and "mlflow" not in imported


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("model=linear,ann", "add --multirun to your command line"),
        ("+trainer.epochs=3", "Either remove + prefix: 'trainer.epochs=3'"),
    ],
)
def test_hydras_hints_stay_on_the_one_line(override, hint):
    from hydra import compose, initialize_config_dir

    from pipeline.cli.failure import one_line

    with (
        initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"),
        pytest.raises(Exception) as caught,
    ):
        compose("config", overrides=[override])
    line = one_line(caught.value)
    assert hint in line and "\n" not in line, line

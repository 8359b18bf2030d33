"""The open bench: every built-in model, optimizer and schedule trains on tiny data; a user's
own builder from its folder; early stopping; each bad key and target, before any data."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.schema import EarlyStoppingConfig, TrainerConfig, to_config
from pipeline.data.preprocess import preprocess
from pipeline.errors import ConfigError
from pipeline.models.build import build, check_optimizer, named_weights, total_steps
from pipeline.training.callbacks import LearningRateToLogs
from pipeline.training.fit import fit
from pipeline.training.job import run
from tests.helpers.cli import QUIET, SILENT, make_config
from tests.helpers.data import tiny_dataset


def built(*overrides: str, num_train: int = 80, batch_size: int = 16, epochs: int = 1):
    """A model built from the config of `overrides`, as a job builds it."""
    conf = to_config(make_config(list(overrides)))
    steps = total_steps(num_train, batch_size, epochs)
    return build(conf.model, conf.optimizer, (28, 28), 10, total_steps=steps)


def trained(model, epochs: int = 1, **trainer):
    splits = preprocess(tiny_dataset(n_train=100), 0.2)
    cfg = TrainerConfig(epochs=epochs, batch_size=16, verbose=0, **trainer)
    return fit(cfg, model, splits, [LearningRateToLogs()])


@pytest.mark.parametrize(
    ("model", "params"),
    [("linear", 7850), ("ann", 101_770), ("cnn", 34_826)],
)
def test_every_built_in_model_trains(model, params):
    net = built(f"model={model}", "optimizer=adam")
    assert net.count_params() == params
    history = trained(net)
    assert np.isfinite(history.metrics["loss"][0])
    assert net.predict(np.zeros((2, 28, 28), np.uint8), verbose=0).shape == (2, 10)


def test_the_cnn_is_keras_simple_mnist_convnet_layer_for_layer():
    network = built("model=cnn").get_layer("cnn")
    kinds = [type(layer).__name__ for layer in network.layers]
    assert kinds == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dropout",
        "Dense",
    ]
    conv1, conv2 = network.get_layer("conv1"), network.get_layer("conv2")
    assert (conv1.filters, conv1.kernel_size, conv2.filters) == (32, (3, 3), 64)
    assert network.get_layer("dropout").rate == 0.5
    assert next(iter(named_weights(built("model=cnn")))) == "conv1/kernel"


@pytest.mark.parametrize(
    ("optimizer", "cls", "setting"),
    [
        (["optimizer=sgd", "optimizer.momentum=0.9", "optimizer.nesterov=true"], "SGD", "momentum"),
        (["optimizer=adam"], "Adam", "beta_1"),
        (["optimizer=adamw", "optimizer.weight_decay=0.01"], "AdamW", "weight_decay"),
        (["optimizer=rmsprop", "optimizer.rho=0.8"], "RMSprop", "rho"),
        (["optimizer=adam", "optimizer._target_=keras.optimizers.Nadam"], "Nadam", "beta_1"),
    ],
)
def test_every_optimizer_trains_with_its_own_keys(optimizer, cls, setting):
    net = built(*optimizer)
    assert type(net.optimizer).__name__ == cls
    expected = {"momentum": 0.9, "weight_decay": 0.01, "rho": 0.8, "beta_1": 0.9}[setting]
    assert float(getattr(net.optimizer, setting)) == pytest.approx(expected)
    assert np.isfinite(trained(net).metrics["loss"][0])


@pytest.mark.parametrize("schedule", ["cosine", "exponential"])
def test_a_schedule_lowers_the_rate_to_decay_to_by_the_last_step(schedule):
    net = built("optimizer.learning_rate=0.1", f"optimizer.schedule={schedule}", epochs=3)
    rates = trained(net, epochs=3).metrics["learning_rate"]
    assert rates[0] < 0.1 and rates[0] > rates[1] > rates[2]
    assert rates[2] == pytest.approx(0.1 * 0.01, rel=1e-3)  # decay_to's default, at the end


def test_a_constant_rate_is_logged_too():
    rates = trained(built("optimizer.learning_rate=0.05"), epochs=2).metrics["learning_rate"]
    assert rates == pytest.approx((0.05, 0.05))


def test_early_stopping_stops_and_keeps_the_best_epoch():
    net = built("optimizer.learning_rate=0.05")
    # No improvement is ever large enough: it stops after `patience` epochs past the first.
    rule = EarlyStoppingConfig(patience=2, min_delta=100.0)
    history = trained(net, epochs=10, early_stopping=rule)
    assert len(history.metrics["loss"]) == 3
    assert (history.stopped_epoch, history.best_epoch) == (3, 1)


def test_early_stopping_off_lets_every_epoch_run():
    history = trained(built(), epochs=3)
    assert len(history.metrics["loss"]) == 3
    assert (history.stopped_epoch, history.best_epoch) == (None, None)


MY_MODELS = """
import keras


def lenet(input_shape, num_classes, filters: int = 6):
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(filters, 5, activation="relu", name="c1"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_classes, activation="softmax", name="out"),
    ])


def wrong_width(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(3, activation="softmax")])
"""


@pytest.fixture
def lab_builders(tmp_path, monkeypatch):
    """A user's own module of builders in the folder the command runs in."""
    (tmp_path / "lab_builders.py").write_text(MY_MODELS)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_a_users_own_builder_from_the_folder_it_runs_in(lab_builders):
    net = built("model=custom", "model._target_=lab_builders.lenet", "+model.filters=4")
    assert net.layers[-1].get_layer("c1").filters == 4
    assert np.isfinite(trained(net).metrics["loss"][0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model._target_=lab_builders.lenet", "+model.filterz=4"],
            "model.filterz is not a key of lab_builders.lenet (it takes filters); "
            "did you mean model.filters?",
        ),
        (["model._target_=lab_builders.lenet", "+model.filters=abc"], "expected int"),
        (["model._target_=lab_builders.lenett"], "lab_builders has no lenett; did you mean"),
        (["model._target_=their_models.lenet"], "cannot import their_models"),
        (["model._target_=lenet"], "expected a dotted path"),
    ],
)
def test_a_bad_builder_or_key_is_one_line_before_any_data(lab_builders, overrides, message):
    with pytest.raises(ConfigError, match=r"^model") as caught:
        to_config(make_config(["model=custom", *overrides]))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_builder_that_gives_the_wrong_outputs_is_named(lab_builders):
    with pytest.raises(ConfigError, match=r"gives outputs of shape \(None, 3\), not \(None, 10\)"):
        built("model=custom", "model._target_=lab_builders.wrong_width")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer=sgd", "optimizer._target_=keras.optimizers.Nadam"], "optimizer.momentum"),
        (["optimizer=adam", "optimizer._target_=keras.optimizers.Adamm"], "did you mean"),
        (["optimizer=adam", "+optimizer.beta1=0.8"], "did you mean optimizer.beta_1?"),
    ],
)
def test_an_optimizer_key_its_class_does_not_take_is_named(overrides, message):
    conf = to_config(make_config(overrides))
    with pytest.raises(ConfigError, match=r"^optimizer") as caught:
        check_optimizer(conf.optimizer)
    assert message in str(caught.value)


def test_a_cnn_run_records_its_rate_its_stop_and_its_filters(tiny_data, isolated_tracking):
    from pipeline.serving.classifier import load_classifier

    overrides = [
        *tiny_data,
        SILENT,
        "model=cnn",
        "model.filters=[4,8]",
        "optimizer=adam",
        "optimizer.schedule=cosine",
        "trainer.epochs=6",
        "trainer.early_stopping.patience=1",
        "trainer.early_stopping.min_delta=100",
    ]
    run(make_config(overrides))
    client = MlflowClient(isolated_tracking)
    (r,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert r.info.status == "FINISHED"
    assert r.data.tags["optimizer_class"] == "keras.optimizers.Adam"
    assert r.data.tags["model_builder"] == "pipeline.models.conv.cnn"
    assert r.data.params["precision_used"] == "float32"
    assert (r.data.metrics["stopped_epoch"], r.data.metrics["best_epoch"]) == (2, 1)
    rates = sorted(client.get_metric_history(r.info.run_id, "learning_rate"), key=lambda m: m.step)
    assert [m.step for m in rates] == [1, 2] and rates[0].value > rates[1].value
    plots = {a.path for a in client.list_artifacts(r.info.run_id, "plots")}
    assert "plots/weights.png" in plots
    classifier = load_classifier(r.info.run_id)
    assert classifier.probabilities(np.zeros((3, 28, 28), np.uint8)).shape == (3, 10)


def test_an_unknown_builder_key_leaves_no_run(tiny_data, isolated_tracking):
    with pytest.raises(ConfigError, match=r"model\.hidden_units"):
        run(make_config([*tiny_data, *QUIET, "model=linear", "+model.hidden_units=3"]))
    assert MlflowClient(isolated_tracking).search_experiments(filter_string="name='mnist'") == []

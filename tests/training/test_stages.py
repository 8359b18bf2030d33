"""One unit test (or a few) per stage, on tiny data."""

import numpy as np
import pytest

from pipeline.config.schema import ModelConfig, OptimizerConfig, TrainerConfig, to_config
from pipeline.data.preprocess import Split, Splits, preprocess
from pipeline.errors import ConfigError
from pipeline.models.build import build, named_weights
from pipeline.training.backend import keras
from pipeline.training.evaluate import evaluate
from pipeline.training.fit import fit, steps_per_execution
from tests.helpers.cli import make_config
from tests.helpers.data import tiny_dataset

# --- preprocess ---------------------------------------------------------------------------


def test_preprocess_holds_out_the_last_fraction():
    ds = tiny_dataset(n_train=100)
    s = preprocess(ds, 0.2)
    assert (len(s.train), len(s.val), len(s.test)) == (80, 20, 30)
    assert s.train.x.dtype == np.uint8 and s.train.x.shape == (80, 28, 28)
    assert s.train.y.dtype == np.int32
    np.testing.assert_array_equal(s.val.x, ds.train_x[80:])
    np.testing.assert_array_equal(s.val.y, ds.train_y[80:])
    np.testing.assert_array_equal(s.train.y, ds.train_y[:80])


def test_preprocess_matches_keras_validation_split_arithmetic():
    # Keras: split_at = int(n * (1 - validation_split)); 60000 at 0.2 -> 48000 (750 batches of 64).
    ds = tiny_dataset(n_train=101)
    assert len(preprocess(ds, 0.2).train) == int(101 * 0.8)


def test_preprocess_without_validation():
    s = preprocess(tiny_dataset(), 0.0)
    assert s.val is None and len(s.train) == 100


def test_preprocess_refuses_a_split_that_leaves_no_training_data():
    ds = tiny_dataset(n_train=1)
    with pytest.raises(ConfigError, match=r"validation_split=0\.5 leaves no training"):
        preprocess(ds, 0.5)


# --- build --------------------------------------------------------------------------------


def parts(*overrides: str) -> tuple[ModelConfig, OptimizerConfig]:
    """The model and optimizer configs of `overrides`, as a job composes them."""
    conf = to_config(make_config(list(overrides)))
    return conf.model, conf.optimizer


def test_build_linear_is_score_w_x_plus_b():
    model = build(*parts(), (28, 28), 10)
    assert model.count_params() == 7850
    weights = named_weights(model)
    assert {k: v.shape for k, v in weights.items()} == {
        "dense/kernel": (784, 10),
        "dense/bias": (10,),
    }
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    scores = (x.reshape(3, 784) / 255.0) @ weights["dense/kernel"] + weights["dense/bias"]
    expected = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert type(model.optimizer).__name__ == "SGD"
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.01)


def test_build_ann():
    model = build(*parts("model=ann", "optimizer=adam"), (28, 28), 10)
    assert model.count_params() == 784 * 128 + 128 + 128 * 10 + 10
    network = model.get_layer("ann")
    assert [layer.name for layer in model.layers] == ["image", "scale", "channels", "ann"]
    assert [layer.name for layer in network.layers] == ["flatten", "hidden", "dense"]
    assert network.get_layer("hidden").activation.__name__ == "relu"
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.001)


# --- fit ----------------------------------------------------------------------------------


def test_fit_learns_and_records_every_epoch():
    s = preprocess(tiny_dataset(n_train=200), 0.25)
    model = build(*parts("optimizer=adam", "optimizer.learning_rate=0.01"), (28, 28), 10)
    h = fit(TrainerConfig(epochs=4, batch_size=16, verbose=0), model, s)
    assert h.epochs == 4 and len(h.epoch_seconds) == 4
    assert set(h.metrics) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 4 for v in h.metrics.values())
    assert h.metrics["loss"][-1] < h.metrics["loss"][0]
    assert h.metrics["val_accuracy"][-1] > 0.5  # the bands are easy to tell apart
    assert h.fit_seconds >= sum(h.epoch_seconds) * 0.9


def test_fit_runs_whole_epochs_per_execution_with_a_partial_last_batch():
    s = preprocess(tiny_dataset(n_train=150), 0.0)
    cfg = TrainerConfig(epochs=2, batch_size=16, verbose=0)
    assert steps_per_execution(cfg, len(s.train)) == 10  # 9 full batches and one of 6
    assert steps_per_execution(TrainerConfig(batch_size=16, steps_per_execution=4), 150) == 4
    results = []
    for spe in (1, steps_per_execution(cfg, len(s.train))):
        keras.utils.set_random_seed(1)
        model = build(*parts("optimizer.learning_rate=0.1"), (28, 28), 10, spe)
        results.append(fit(cfg, model, s).metrics["loss"])
    # Same batches, same updates: only where the Python loop sits differs.
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5)


def test_fit_without_validation():
    s = preprocess(tiny_dataset(), 0.0)
    model = build(*parts(), (28, 28), 10)
    h = fit(TrainerConfig(epochs=1, batch_size=32, verbose=0), model, s)
    assert set(h.metrics) == {"loss", "accuracy"} and not h.has_validation


# --- evaluate -----------------------------------------------------------------------------


class FixedModel:
    """Stands in for a Keras model: predicts fixed probabilities."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, dtype=np.float32)

    def predict(self, x, batch_size=None, verbose=0):
        return self.probs[: len(x)]

    def evaluate(self, x, y, batch_size=None, verbose=0, return_dict=False):
        return {"loss": float(-np.mean(np.log(self.probs[np.arange(len(y)), y])))}


def test_evaluate_derives_metrics_from_one_prediction():
    probs = np.full((4, 3), 0.1, dtype=np.float32)
    probs[np.arange(4), [0, 1, 2, 2]] = 0.8
    test = Split(x=np.zeros((4, 28, 28), np.float32), y=np.array([0, 1, 2, 1], np.int32))
    m = evaluate(FixedModel(probs), test, ("a", "b", "c"))
    assert m.accuracy == pytest.approx(0.75)
    expected_loss = -np.mean(np.log([0.8, 0.8, 0.8, 0.1]))
    assert m.loss == pytest.approx(expected_loss, rel=1e-4)
    np.testing.assert_array_equal(m.predictions, [0, 1, 2, 2])
    np.testing.assert_array_equal(m.confusion, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    assert m.report["b"]["recall"] == pytest.approx(0.5)
    assert m.report["c"]["precision"] == pytest.approx(0.5)


def test_test_loss_is_computed_as_keras_computes_val_loss():
    # Far too high a learning rate: the softmax saturates, and a loss computed from clipped
    # probabilities (scikit-learn's log_loss) would stay near 16 while Keras' grows with the
    # logits. Validating on the test set itself, both losses must be the same number.
    s = preprocess(tiny_dataset(n_train=200), 0.0)
    shuffled = Split(x=s.test.x, y=np.random.default_rng(0).permutation(s.test.y))
    splits = Splits(train=s.train, val=shuffled, test=shuffled)  # labels it cannot learn
    keras.utils.set_random_seed(3)
    model = build(*parts("optimizer.learning_rate=1e4"), (28, 28), 10)
    h = fit(TrainerConfig(epochs=2, batch_size=16, verbose=0), model, splits)
    m = evaluate(model, splits.test, tuple("abcdefghij"))
    if keras.backend.backend() == "tensorflow":  # (Keras on JAX clips as scikit-learn does)
        assert h.metrics["val_loss"][-1] > 100  # far beyond what clipped probabilities give
    assert m.loss == pytest.approx(h.metrics["val_loss"][-1], rel=1e-5)

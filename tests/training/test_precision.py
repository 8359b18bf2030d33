"""trainer.precision: mixed bfloat16 trains and serves with float32 outputs; `auto` measures
both policies on this model once, takes bfloat16 only when clearly faster, and keeps the choice."""

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.schema import to_config
from pipeline.errors import ConfigError
from pipeline.models.build import build
from pipeline.training import precision
from pipeline.training.job import run
from tests.helpers.cli import SILENT, make_config


def tiny_model():
    conf = to_config(make_config(["model=ann", "model.hidden_units=8"]))
    return build(conf.model, conf.optimizer, (28, 28), 10)


def test_a_mixed_bfloat16_run_computes_in_bfloat16_and_serves_float32(tiny_data, isolated_tracking):
    from pipeline.serving.classifier import load_classifier

    run(
        make_config(
            [
                *tiny_data,
                SILENT,
                "model=cnn",
                "model.filters=[4,8]",
                "trainer.precision=mixed_bfloat16",
            ]
        )
    )
    client = MlflowClient(isolated_tracking)
    (r,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert r.info.status == "FINISHED"
    assert r.data.params["precision_used"] == "mixed_bfloat16"
    assert np.isfinite(r.data.metrics["test_loss"])
    assert precision.computes_in_float32()  # the next job in this process starts from float32
    classifier = load_classifier(r.info.run_id)
    probs = classifier.probabilities(np.zeros((3, 28, 28), np.uint8))
    assert classifier.model.layers[-1].compute_dtype == "float32"
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-2)


def test_under_mixed_precision_the_output_layer_is_float32():
    precision.apply("mixed_bfloat16")
    try:
        model = tiny_model()
    finally:
        precision.apply("float32")
    assert model.layers[-1].name == "float32_output"
    assert model.layers[-1].compute_dtype == "float32"
    assert model.get_layer("ann").compute_dtype == "bfloat16"
    assert "float32_output" not in [layer.name for layer in tiny_model().layers]


@pytest.mark.parametrize(
    ("seconds", "choice"),
    [
        ({"float32": 1.0, "mixed_bfloat16": 0.5}, "mixed_bfloat16"),
        ({"float32": 1.0, "mixed_bfloat16": 0.95}, "float32"),  # within the margin: not worth it
        ({"float32": 1.0, "mixed_bfloat16": 6.0}, "float32"),
    ],
)
def test_auto_takes_bfloat16_only_when_clearly_faster_and_keeps_the_choice(
    tmp_path, monkeypatch, seconds, choice
):
    timed = []

    def fake_time(policy, build, shape, batch, enough=float("inf")):
        timed.append(policy)
        return seconds[policy]

    monkeypatch.setattr(precision, "_time_steps", fake_time)
    cache = tmp_path / "precision.json"
    args = (tiny_model, (28, 28), 16)
    assert precision.choose("auto", *args, {"model": "a"}, cache) == choice
    assert timed == ["float32", "mixed_bfloat16"]
    (entry,) = json.loads(cache.read_text()).values()
    assert entry == {"choice": choice, "seconds": seconds}
    assert precision.choose("auto", *args, {"model": "a"}, cache) == choice
    assert len(timed) == 2  # measured once
    precision.choose("auto", *args, {"model": "b"}, cache)  # another model: measured anew
    assert len(timed) == 4


def test_auto_measures_again_over_an_unreadable_choice_file(tmp_path):
    cache = tmp_path / "precision.json"
    cache.write_text("{not json")
    choice = precision.choose("auto", tiny_model, (28, 28), 16, {"model": "a"}, cache)
    assert choice in precision.POLICIES
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["choice"] == choice and all(s > 0 for s in entry["seconds"].values())
    assert precision.computes_in_float32()


def test_a_named_precision_is_not_measured(tmp_path):
    cache = tmp_path / "precision.json"
    assert precision.choose("mixed_bfloat16", tiny_model, (28, 28), 16, {}, cache) == (
        "mixed_bfloat16"
    )
    assert not cache.exists()


def test_an_unknown_precision_is_one_line():
    with pytest.raises(ConfigError, match=r"trainer\.precision='half'.*float32, mixed_bfloat16"):
        to_config(make_config(["trainer.precision=half"]))

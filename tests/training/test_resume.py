"""resume=: the checkpoint a run leaves after each epoch, and a stopped run or sweep going on."""

import json
import signal
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from pipeline.config.schema import TrainerConfig
from pipeline.data.preprocess import preprocess
from pipeline.errors import ResumeError
from pipeline.models.build import build
from pipeline.training import checkpoint
from pipeline.training.backend import keras
from pipeline.training.fit import fit
from tests.helpers.cli import assert_one_line_error, cli, start_pipeline
from tests.helpers.data import tiny_dataset
from tests.training.test_stages import parts


def _model(seed: int = 3):
    keras.utils.set_random_seed(seed)
    # The CNN: its dropout draws from a random state that the checkpoint must carry.
    model_cfg, opt_cfg = parts("model=cnn", "model.filters=[4,4]", "optimizer=adam")
    return build(model_cfg, opt_cfg, (28, 28), 10)


def _trainer(epochs: int) -> TrainerConfig:
    cfg = TrainerConfig(epochs=epochs, batch_size=16, verbose=0)
    cfg.early_stopping.patience = 10  # its state is carried too
    return cfg


def test_a_resumed_fit_ends_where_an_unbroken_one_does(tmp_path):
    splits = preprocess(tiny_dataset(n_train=160), 0.25)
    whole_model = _model()
    whole = fit(_trainer(4), whole_model, splits)
    whole_weights = whole_model.get_weights()

    first = _model()
    fit(_trainer(2), first, splits, checkpoint=tmp_path / "ck")  # stopped after epoch 2
    saved = checkpoint.read(tmp_path / "ck")
    assert saved.epoch == 2 and len(saved.history["loss"]) == 2
    second = _model()
    resumed = fit(_trainer(4), second, splits, checkpoint=tmp_path / "ck", saved=saved)

    assert resumed.metrics == whole.metrics  # every epoch's numbers, the first two included
    assert len(resumed.epoch_seconds) == 4
    for a, b in zip(second.get_weights(), whole_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "ck" / checkpoint.LATEST).read_text() == "epoch-0004"
    assert [p.name for p in (tmp_path / "ck").glob("epoch-*")] == ["epoch-0004"]


def test_a_checkpoint_that_is_gone_or_corrupt_is_refused(tmp_path):
    with pytest.raises(ResumeError, match="is gone"):
        checkpoint.read(tmp_path / "nothing")
    (tmp_path / "ck").mkdir()
    assert checkpoint.read(tmp_path / "ck") is None  # stopped before its first epoch ended
    splits = preprocess(tiny_dataset(n_train=80), 0.25)
    fit(_trainer(1), _model(), splits, checkpoint=tmp_path / "ck")
    weights = tmp_path / "ck" / "epoch-0001" / checkpoint.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ResumeError, match="corrupt"):
        checkpoint.read(tmp_path / "ck")
    (tmp_path / "ck" / "epoch-0001" / checkpoint.STATE).write_text("{")
    with pytest.raises(ResumeError, match="corrupt"):
        checkpoint.read(tmp_path / "ck")


def _runs(uri):
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, order_by=["attributes.start_time ASC"])


def _stop_after(args, latest: Path, epoch: int, sig) -> None:
    """Start `python -m pipeline ARGS`; send `sig` once `latest` names `epoch`."""
    proc = start_pipeline(args)
    want = f"epoch-{epoch:04d}"
    deadline = time.monotonic() + 240
    while not (latest.is_file() and latest.read_text() == want):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=120)


@pytest.mark.cli
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_run_resumes_in_the_same_run_with_the_same_result(tmp_path, sig, real_data):
    uri = f"sqlite:///{tmp_path}/m.db"
    args = [
        f"dataset.path={real_data}",
        "model=ann",
        "optimizer=adam",
        "dataset.limit=2000",
        "trainer.epochs=12",
        f"tracking.uri={uri}",
        "tracking.log_model=false",
    ]
    _stop_after([*args, f"hydra.run.dir={tmp_path}/a"], tmp_path / "a/checkpoint/latest", 3, sig)
    time.sleep(3)  # the recorder closes the run
    (stopped,) = _runs(uri)
    assert stopped.info.status == ("FAILED" if sig == signal.SIGKILL else "KILLED")

    out = cli([*args, "resume=last", f"hydra.run.dir={tmp_path}/b"])
    assert out.returncode == 0, out.stderr[-3000:]
    out = cli([*args, f"hydra.run.dir={tmp_path}/c"])  # never stopped
    assert out.returncode == 0, out.stderr[-3000:]
    resumed, whole = _runs(uri)
    assert resumed.info.run_id == stopped.info.run_id
    assert resumed.info.status == "FINISHED" and resumed.data.tags["resumed_from_epoch"] == "3"
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "loss"):
        assert resumed.data.metrics[key] == whole.data.metrics[key], key
    steps = mlflow.MlflowClient().get_metric_history(resumed.info.run_id, "val_loss")
    assert sorted({m.step for m in steps}) == list(range(1, 13))
    assert not (tmp_path / "a/checkpoint").exists()  # finished: nothing left to resume

    # A finished run cannot be resumed; nor can a run of another store or configuration.
    assert_one_line_error(cli([*args, f"resume={resumed.info.run_id}"]), "finished")
    assert_one_line_error(cli([*args, "resume=0123abcd", "hydra.run.dir=" + str(tmp_path / "d")]),
                          "no run 0123abcd")  # fmt: skip
    assert_one_line_error(cli([*args, "resume=last"]), "no stopped run")
    other = [a if a != "trainer.epochs=12" else "trainer.epochs=10" for a in args]
    out = cli([*other, f"resume={resumed.info.run_id}"])
    assert_one_line_error(out, "another configuration", "trainer.epochs")
    assert len(_runs(uri)) == 2


@pytest.mark.cli
def test_a_killed_sweep_closes_its_parent_and_resumes_under_it(tmp_path, real_data):
    uri = f"sqlite:///{tmp_path}/m.db"
    args = [
        "-m",
        f"dataset.path={real_data}",
        "model=linear,ann",
        "dataset.limit=2000",
        "trainer.epochs=8",
        f"tracking.uri={uri}",
        "tracking.log_model=false",
    ]
    sweep = tmp_path / "s1"
    _stop_after([*args, f"hydra.sweep.dir={sweep}"], sweep / "1/checkpoint/latest", 2,
                signal.SIGKILL)  # fmt: skip
    time.sleep(4)  # the recorder closes the child and the parent
    runs = _runs(uri)
    parent = next(r for r in runs if r.data.tags.get("sweep") == "true")
    assert parent.info.status == "FAILED" and "died" in parent.data.tags["error"]
    assert sorted(r.info.status for r in runs if r is not parent) == ["FAILED", "FINISHED"]
    finished = next(r for r in runs if r.info.status == "FINISHED" and r is not parent)

    out = cli([*args, "resume=last", f"hydra.sweep.dir={tmp_path}/s2"])
    assert out.returncode == 0, out.stderr[-3000:]
    runs = _runs(uri)
    assert len(runs) == 3  # one parent, its two children: none again
    assert all(r.info.status == "FINISHED" for r in runs)
    again = next(r for r in runs if r.info.run_id == finished.info.run_id)
    assert again.info.end_time == finished.info.end_time  # kept, not trained again
    compared = json.loads((tmp_path / "s2/comparison/verdicts.json").read_text())
    assert compared

"""Bad input, faults during a run, interruption, reproducibility and parallel sweeps.

Tests marked `cli` start `python -m pipeline` as a user does: its exit code, its one-line
errors, Ctrl-C and SIGTERM. The rest run in this process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import pipeline.training.job as run_module
from pipeline.config.schema import to_config
from pipeline.data.load import load
from pipeline.errors import ConfigError, DataError, StageError, TrainingError
from pipeline.tracking import interrupts
from pipeline.training.backend import keras
from pipeline.training.job import run
from tests.helpers.cli import (
    NO_REPORT,
    QUIET,
    SILENT,
    assert_one_line_error,
    cli,
    make_config,
    run_main,
    start_pipeline,
)
from tests.helpers.data import (
    TINY_FILES,
    tiny_arrays,
    tiny_overrides,
    write_idx,
    write_tiny_dataset,
)
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.services import free_port as closed_port
from tests.helpers.stores import init_store, runs_in, sweep_runs

# --- bad config: one line naming the key, exit 1, nothing in the store ----------------------


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["model=rnn"], ["model/rnn", "ann, cnn, custom, linear"]),
        (["optimizer=adagrad"], ["optimizer/adagrad", "adam, adamw, rmsprop, sgd"]),
        (["trainer.epoch=3"], ["trainer.epoch", "did you mean trainer.epochs?"]),
        (["model=lineer"], ["model/lineer", "did you mean model=linear?"]),
        (["experiment=studdy"], ["experiment/studdy", "did you mean experiment=study?"]),
        (["trainer.devices=[gpu0]", "trainer.strategy=mirrored"], ["trainer.devices", "/gpu:1"]),
        (["trainer.devices=[/gpu:0]"], ["trainer.devices", "trainer.strategy=mirrored"]),
        (["trainer.epochs=abc"], ["trainer.epochs=abc"]),
        (["trainer.epochs=0"], ["trainer.epochs=0"]),
        (["trainer.batch_size=0"], ["trainer.batch_size=0"]),
        (["optimizer.learning_rate=0"], ["optimizer.learning_rate=0"]),
        (["optimizer.learning_rate=-1"], ["optimizer.learning_rate=-1"]),
        (["trainer.validation_split=1"], ["trainer.validation_split=1"]),
        (["trainer.validation_split=-0.1"], ["trainer.validation_split=-0.1"]),
        (["model=ann", "model.hidden_units=0"], ["model.hidden_units=0"]),
        (["model=linear", "+model.hidden_units=64"], ["model.hidden_units", "takes no keys"]),
        (["model=custom"], ["model._target_ is missing"]),
        (["optimizer.momentun=0.9"], ["optimizer.momentun", "did you mean optimizer.momentum?"]),
        (["dataset.limit=0"], ["dataset.limit=0"]),
        (["seed=-1"], ["seed=-1", "0 to 4294967295"]),
        (["dataset.split_seed=4294967296"], ["dataset.split_seed=4294967296"]),
        (["model=ann", "model.hidden_units=2000000000"], ["hidden_units=2000000000", "GiB"]),
    ],
)
@pytest.mark.cli
def test_bad_config_is_one_line_and_touches_nothing(overrides, names, isolated_tracking, tmp_path):
    out = cli([*overrides, f"hydra.run.dir={tmp_path / 'job'}"])
    assert_one_line_error(out, *names)
    assert runs_in(isolated_tracking) == []
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.epochs=0"],  # stopped before Hydra makes the folder
        ["-m", "model=linear,ann", "trainer.epochs=0"],  # a sweep: before its first job
        ["dataset.path=/nowhere"],  # stopped inside the job, which wrote nothing yet
        ["trainer.strategy=mirrored", "trainer.devices=[/gpu:7]"],  # inside, before the data
        # A sweep checks each value, its folder and its store before its parent run exists.
        ["hydra.run.dir=/proc/nope/out"],  # a folder that cannot be made
        ["-m", "model=linear,anm"],
        ["-m", "seed=1,-1"],
        ["-m", "model=linear,ann", "hydra.sweep.dir=/proc/nope/out"],
        ["-m", "model=linear,ann", "tracking.uri=sqlite:////proc/x.db"],
    ],
)
@pytest.mark.cli
def test_a_mistake_leaves_no_folder_behind(overrides, isolated_tracking, tmp_path):
    work = tmp_path / "work"  # the user's folder, where outputs/<date>/<time>/ would go
    work.mkdir()
    out = cli(overrides, cwd=work)
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith("error: ")
    assert sorted(p.name for p in work.iterdir()) == []
    assert runs_in(isolated_tracking) == []


def test_device_names_are_checked_before_any_data_is_read(isolated_tracking, tmp_path):
    from pipeline.training.job import run

    cfg = make_config(
        [
            f"dataset.path={tmp_path / 'nowhere'}",
            "trainer.strategy=mirrored",
            "trainer.devices=[/gpu:7]",
        ]
    )
    with pytest.raises(ConfigError, match=r"trainer\.devices: no device '/gpu:7' here"):
        run(cfg)
    assert runs_in(isolated_tracking) == []


def test_a_relative_sqlite_store_is_the_working_directorys(tiny_data, tmp_path, monkeypatch):
    from pipeline.training.job import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run(make_config([*tiny_data, "tracking.uri=sqlite:///runs/rel.db", *QUIET, *NO_REPORT]))
    runs = runs_in(f"sqlite:///{tmp_path / 'runs' / 'rel.db'}")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert (tmp_path / "runs" / "mlruns").is_dir()  # the artifacts beside it


@pytest.mark.cli
def test_full_traceback_on_request(tmp_path):
    out = cli(["trainer.epochs=0", f"hydra.run.dir={tmp_path}"], env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "trainer.epochs=0" in out.stderr


@pytest.mark.cli
def test_split_leaving_no_training_data(tiny_data, tmp_path):
    store = tmp_path / "untouched.db"
    out = cli(
        [
            *tiny_data,
            "dataset.limit=1",
            "trainer.validation_split=0.5",
            f"hydra.run.dir={tmp_path}",
        ],
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"},
    )
    assert_one_line_error(out, "trainer.validation_split=0.5", "no training data")
    assert not store.exists()


# --- bad data -------------------------------------------------------------------------------


@pytest.mark.cli
def test_bad_data_file_is_one_line_naming_it(tmp_path):
    store = tmp_path / "untouched.db"
    root = tmp_path / "data"
    digests = {}
    arrays = tiny_arrays(40, 10)
    for role, fname in TINY_FILES.items():
        digests[role] = write_idx(root / "mnist" / fname, arrays[role])
    bad = root / "mnist" / TINY_FILES["test_images"]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    out = cli(
        [*tiny_overrides(root, digests), f"hydra.run.dir={tmp_path / 'job'}"],
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"},
    )
    assert_one_line_error(out, str(bad))
    assert not store.exists()


@pytest.mark.cli
def test_missing_data_dir_is_one_line(tmp_path, isolated_tracking):
    out = cli([f"dataset.path={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'job'}"])
    assert_one_line_error(out, "dataset.path", str(tmp_path / "nowhere"))
    assert runs_in(isolated_tracking) == []


def test_one_missing_file_names_it_and_where_it_looked(tmp_path):
    root = tmp_path / "data"
    digests = write_tiny_dataset(root)
    (root / "mnist" / TINY_FILES["train_labels"]).unlink()
    overrides = [
        *tiny_overrides(root, digests),
        f"dataset.cache_dir={tmp_path / 'cache'}",
        f"dataset.mirrors=[http://127.0.0.1:{closed_port()}/]",
    ]
    with pytest.raises(DataError, match=r"cannot get train-labels-idx1-ubyte\.gz"):
        load(to_config(make_config(overrides)).dataset)


# --- tracking store ----------------------------------------------------------------------------


@pytest.mark.cli
def test_unreachable_server_fails_in_seconds_before_data(tmp_path):
    start = time.monotonic()
    out = cli(
        [
            f"tracking.uri=http://127.0.0.1:{closed_port()}",
            f"dataset.path={tmp_path / 'nowhere'}",  # reached only if tracking were skipped
            f"hydra.run.dir={tmp_path / 'job'}",
        ]
    )
    elapsed = time.monotonic() - start
    assert_one_line_error(out, "tracking server http://127.0.0.1", "unreachable")
    assert elapsed < 60  # MLflow's own retries would take minutes


@pytest.mark.cli
def test_store_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = cli([f"tracking.uri=sqlite:///{blocker}/mlflow.db", f"hydra.run.dir={tmp_path / 'job'}"])
    assert_one_line_error(out, str(blocker))


@pytest.mark.cli
@pytest.mark.parametrize("what", ["folder", "not sqlite"])
def test_a_store_that_cannot_be_opened_fails_before_training(what, tmp_path):
    db = Path("/proc/x.db") if what == "folder" else tmp_path / "mlflow.db"
    if what == "not sqlite":
        db.write_text("a text file, not a database\n" * 100)
    start = time.monotonic()
    out = cli([f"tracking.uri=sqlite:///{db}", f"hydra.run.dir={tmp_path / 'job'}"])
    assert_one_line_error(out, f"the tracking store {db} cannot be opened")
    assert time.monotonic() - start < 60  # not MLflow's retries
    assert not (tmp_path / "job").exists()


def test_a_sweep_value_one_letter_off_gets_a_did_you_mean(isolated_tracking, tmp_path, capsys):
    code = run_main(["-m", "model=linear,anm", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("error: ") and err[0].endswith("did you mean model=ann?")
    assert not (tmp_path / "sweep").exists() and runs_in(isolated_tracking) == []


# --- faults during a run --------------------------------------------------------------------


def test_too_high_learning_rate_fails_the_run(tiny_data, isolated_tracking):
    cfg = make_config([*tiny_data, *QUIET, "optimizer.learning_rate=1e37", "trainer.epochs=20"])
    with pytest.raises(TrainingError, match=r"diverged at epoch 1: the loss became (inf|nan)"):
        run(cfg)
    (r,) = runs_in(isolated_tracking)
    assert r.info.status == "FAILED"
    assert r.data.tags["diverged_epoch"] == "1"


class PoisonAfter(keras.callbacks.Callback):
    """Fault injection: makes the weights NaN once `epochs` epochs are done."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            kernel = self.model.get_layer("linear").get_layer("dense").kernel
            kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))


def test_divergence_mid_run_stops_at_once_and_keeps_earlier_epochs(
    tiny_data, isolated_tracking, monkeypatch
):
    real_fit = run_module.fit
    monkeypatch.setattr(
        run_module,
        "fit",
        lambda cfg, model, splits, cbs, *rest: real_fit(
            cfg, model, splits, [*cbs, PoisonAfter(2)], *rest
        ),
    )
    cfg = make_config([*tiny_data, *QUIET, "trainer.epochs=20"])
    with pytest.raises(TrainingError, match="diverged at epoch 3: the loss became nan"):
        run(cfg)
    (r,) = runs_in(isolated_tracking)
    assert r.info.status == "FAILED"
    assert r.data.tags["diverged_epoch"] == "3"  # stopped at once, not after 20 epochs
    assert "diverged at epoch 3" in r.data.tags["error"]
    history = MlflowClient(isolated_tracking).get_metric_history(r.info.run_id, "loss")
    finite = sorted(m.step for m in history if np.isfinite(m.value))
    assert finite == [1, 2]


def test_report_failure_keeps_model_and_metrics(tiny_data, isolated_tracking, monkeypatch):
    # The report is drawn in the recorder process, from arrays the job saves: saved broken,
    # the drawing fails there.
    def broken(path, *args, **kwargs):
        Path(path).write_bytes(b"not the report's arrays")

    monkeypatch.setattr(run_module, "save_report_inputs", broken)
    with pytest.raises(StageError, match=r"stage report failed: \w+Error: "):
        run(make_config([*tiny_data, SILENT, "trainer.epochs=1"]))
    (r,) = runs_in(isolated_tracking)
    assert r.info.status == "FAILED"
    assert r.data.tags["failed_stage"] == "report"
    assert r.data.tags["error"].startswith("stage report failed: ")
    assert "test_accuracy" in r.data.metrics
    model = mlflow.keras.load_model(f"runs:/{r.info.run_id}/model")
    assert model.predict(np.zeros((1, 28, 28), np.uint8), verbose=0).shape == (1, 10)


def _wait_for_epochs(uri, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        for r in runs_in(uri):
            if r.info.status == "RUNNING":
                hist = MlflowClient(uri).get_metric_history(r.info.run_id, "loss")
                if len(hist) >= n:
                    return r
        time.sleep(0.3)
    raise AssertionError("no epochs logged in time")


@pytest.mark.cli
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_during_fit_kills_the_run_and_keeps_epochs(
    sig, tiny_data, isolated_tracking, tmp_path
):
    init_store(isolated_tracking)
    proc = start_pipeline(
        [
            *tiny_data,
            *QUIET,
            "trainer.epochs=100000",
            f"hydra.run.dir={tmp_path / 'job'}",
        ]
    )
    try:
        r = _wait_for_epochs(isolated_tracking, 3, proc)
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert time.monotonic() - sent < 5
    finally:
        proc.kill()
    assert proc.returncode == 130
    run_after = MlflowClient(isolated_tracking).get_run(r.info.run_id)
    assert run_after.info.status == "KILLED"
    steps = [
        m.step for m in MlflowClient(isolated_tracking).get_metric_history(r.info.run_id, "loss")
    ]
    assert len(steps) >= 3 and sorted(steps) == list(range(1, len(steps) + 1))


def test_an_interruption_wrapped_by_another_error_still_counts_as_one():
    try:
        try:
            raise KeyboardInterrupt("signal 15")
        except KeyboardInterrupt as inner:
            raise RuntimeError("while tracing") from inner
    except RuntimeError as outer:
        assert run_module._interrupted(outer)
    assert not run_module._interrupted(RuntimeError("no interruption"))


@pytest.mark.cli
def test_sigkill_of_the_trainer_fails_its_run_at_once_and_keeps_the_epochs(
    tiny_data, isolated_tracking, tmp_path
):
    # What the out-of-memory killer or a preempted cluster job does: no handler runs.
    proc = start_pipeline(
        [*tiny_data, *QUIET, "trainer.epochs=100000", f"hydra.run.dir={tmp_path / 'job'}"]
    )
    try:
        r = _wait_for_epochs(isolated_tracking, 3, proc)
        proc.kill()
        proc.wait(timeout=30)
        killed = time.monotonic()
        client = MlflowClient(isolated_tracking)
        while client.get_run(r.info.run_id).info.status == "RUNNING":
            assert time.monotonic() - killed < 5, "the run stayed RUNNING"
            time.sleep(0.1)
    finally:
        proc.kill()
    after = client.get_run(r.info.run_id)
    assert after.info.status == "FAILED"
    assert "training process" in after.data.tags["error"]
    assert "died before it closed the run" in after.data.tags["error"]
    steps = [m.step for m in client.get_metric_history(r.info.run_id, "loss")]
    assert len(steps) >= 3 and sorted(steps) == list(range(1, len(steps) + 1))


@pytest.mark.cli
def test_a_dead_recorder_leaves_training_to_finish_and_says_so(
    tiny_data, isolated_tracking, tmp_path
):
    job = tmp_path / "job"
    proc = start_pipeline([*tiny_data, *QUIET, "trainer.epochs=40", f"hydra.run.dir={job}"])
    try:
        _wait_for_epochs(isolated_tracking, 2, proc)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        recorders = [
            p for p in children if "tracking.recorder" in Path(f"/proc/{p}/cmdline").read_text()
        ]
        assert len(recorders) == 1, children
        os.kill(int(recorders[0]), signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    # Hydra's job log holds what the console showed.
    log = "\n".join(p.read_text() for p in job.glob("*.log"))
    said = [line for line in log.splitlines() if "recording stopped" in line]
    assert len(said) == 1, log[-3000:]
    assert "training goes on" in said[0]
    # The job's own files are all there.
    for name in ("metrics.json", "weights.npz", "predictions.npz", "timings.json"):
        assert (job / name).is_file(), name
    assert json.loads((job / "metrics.json").read_text())["test_accuracy"] > 0


@pytest.mark.cli
def test_interrupted_sweep_keeps_parent_and_finished_children(
    tiny_data, isolated_tracking, tmp_path
):
    init_store(isolated_tracking)
    proc = start_pipeline(
        [
            "-m",
            *tiny_data,
            "trainer.epochs=2,100000",
            *QUIET,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            finished = [r for r in runs_in(isolated_tracking) if r.info.status == "FINISHED"]
            running = [
                r
                for r in runs_in(isolated_tracking)
                if r.info.status == "RUNNING"
                and "mlflow.parentRunId" in r.data.tags
                # an epoch in: the second job is training, past its set-up
                and MlflowClient(isolated_tracking).get_metric_history(r.info.run_id, "loss")
            ]
            if finished and running:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, proc.stderr.read()[-3000:]
    parent, children = sweep_runs(isolated_tracking)
    assert parent.info.status == "KILLED"
    assert sorted(c.info.status for c in children) == ["FINISHED", "KILLED"]


# --- reproducibility ----------------------------------------------------------------------------


def _curves(uri, run_id):
    client = MlflowClient(uri)
    return {
        name: [
            m.value for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
        ]
        for name in ("loss", "accuracy", "val_loss", "val_accuracy")
    }


def test_same_seed_same_curves_other_seed_other_curves(tiny_data, isolated_tracking):
    results = []
    for seed in (7, 7, 8):
        run(
            make_config(
                [
                    *tiny_data,
                    *QUIET,
                    *NO_REPORT,
                    "trainer.epochs=3",
                    "optimizer=adam",
                    "model=ann",
                    f"seed={seed}",
                ]
            )
        )
    runs = sorted(runs_in(isolated_tracking), key=lambda r: r.info.start_time)
    for r in runs:
        results.append((_curves(isolated_tracking, r.info.run_id), r.data.metrics["test_accuracy"]))
    assert results[0] == results[1]  # to the last digit
    assert results[0][0]["loss"] != results[2][0]["loss"]


# --- parallel sweep on one SQLite store -----------------------------------------------------------


@pytest.mark.cli
def test_parallel_sweep_records_every_job(tiny_data, isolated_tracking, tmp_path):
    # Not a speed target: a process that waits out its worker pool's idle timeout (300 s)
    # after the last job has hung, and the timeout below says so.
    out = cli(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=4",
            *tiny_data,
            "seed=1,2,3,4,5,6,7,8",
            "trainer.epochs=1",
            *QUIET,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        timeout=240,
    )
    said = out.stdout + out.stderr
    assert out.returncode == 0, said[-3000:]
    assert "database is locked" not in said
    parent, children = sweep_runs(isolated_tracking)
    assert parent.info.status == "FINISHED"
    assert len(children) == 8
    assert {r.data.params["seed"] for r in children} == {str(i) for i in range(1, 9)}
    assert all(r.info.status == "FINISHED" for r in children)


@pytest.mark.cli
def test_two_processes_can_open_a_new_store_at_once(tiny_data, tmp_path):
    # Both would create the new store's tables; one used to fail half-way through.
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", *tiny_data, "trainer.epochs=1", *QUIET,
             *NO_REPORT, f"hydra.run.dir={tmp_path / f'job{k}'}"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]  # fmt: skip
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    runs = runs_in(uri)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}


# --- security -----------------------------------------------------------------------------


def test_ui_listens_on_loopback_only():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    ui = [line for line in makefile.splitlines() if "mlflow ui" in line]
    assert ui and all("--host 127.0.0.1" in line for line in ui)


def test_model_is_keras_format_and_loads_in_safe_mode(tiny_data, isolated_tracking, tmp_path):
    run(
        make_config([*tiny_data, SILENT, "trainer.epochs=1"]),
        output_dir=tmp_path / "job",
    )
    (r,) = runs_in(isolated_tracking)
    local = mlflow.artifacts.download_artifacts(
        f"runs:/{r.info.run_id}/model", dst_path=str(tmp_path / "m")
    )
    saved = [p.name for p in Path(local).rglob("*") if p.is_file()]
    assert "model.keras" in saved
    assert not any(name.endswith((".pkl", ".pickle", ".h5")) for name in saved)
    model = mlflow.keras.load_model(
        f"runs:/{r.info.run_id}/model", load_model_kwargs={"safe_mode": True}
    )
    assert model.count_params() == 7850
    with np.load(tmp_path / "job" / "weights.npz", allow_pickle=False) as weights:
        assert weights["dense/kernel"].shape == (784, 10)
    json.loads((tmp_path / "job" / "metrics.json").read_text())


def test_an_interruption_inside_a_finaliser_is_not_lost():
    """Python ignores an exception raised in a finaliser or a garbage collector's callback
    (JAX's, in a TensorFlow process where JAX is installed): the interruption comes again."""

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler raises here, inside the finaliser

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            Finalised()  # dropped at once: its finaliser runs here
            time.sleep(5)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        sys.unraisablehook = hook


def test_an_interruption_inside_a_record_write_waits_for_its_end():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    try:
        finished = False
        with pytest.raises(KeyboardInterrupt, match="signal 15"), interrupts.held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs meanwhile: it must not raise here
            finished = True
        assert finished
        with pytest.raises(KeyboardInterrupt):  # outside held(): at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_errors_survive_the_trip_back_from_a_parallel_worker():
    import pickle

    from pipeline.errors import StageError, SweepAborted

    # A parallel launcher pickles a failed job's error in the worker and unpickles it in the
    # sweep's process: an error that cannot be rebuilt there breaks the whole pool.
    for error in (
        StageError("report", "OSError: disk full"),
        StageError("model", ValueError("bad")),
        TrainingError("training diverged at epoch 3", {"diverged_epoch": "3"}),
        ConfigError("trainer.epochs=0 is invalid"),
        SweepAborted(ConfigError("seed=1,1 lists 1 more than once")),
    ):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error)
        assert getattr(back, "tags", None) == getattr(error, "tags", None)

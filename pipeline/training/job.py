"""run(cfg): one job's steps in order; what they produce is handed to the recorder process.

This is the training process: it imports TensorFlow, never MLflow or matplotlib. The recorder
(`pipeline.tracking.client`) owns the MLflow run, draws the report and closes the run.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline.config.naming import config_key, flatten, run_name
from pipeline.config.schema import Config, to_config
from pipeline.data.images import Preparation
from pipeline.data.load import Dataset, load
from pipeline.data.preprocess import Splits, preprocess
from pipeline.errors import ConfigError
from pipeline.models.build import (
    build,
    check_optimizer,
    named_weights,
    save_for_clients,
    total_steps,
)
from pipeline.reporting.inputs import ReportRequest, save_report_inputs
from pipeline.tracking import store
from pipeline.tracking.client import RecorderClient
from pipeline.tracking.protocol import (
    DatasetInput,
    DrawReport,
    DrawSamples,
    LogDatasets,
    LogFiles,
    LogFolder,
    LogMetrics,
    LogModel,
    LogParams,
    RunSpec,
)
from pipeline.tracking.sweep import PARENT_RUN_FILE
from pipeline.training import backend, checkpoint, devices, precision
from pipeline.training.backend import keras, tf
from pipeline.training.callbacks import EpochsToRecorder, LearningRateToLogs, ReportToTrial
from pipeline.training.evaluate import evaluate
from pipeline.training.fit import fit, set_threads, steps_per_execution
from pipeline.training.results import History, Metrics

log = logging.getLogger(__name__)

REPORT_INPUTS = "report_inputs.npz"


class Stopwatch:
    """Wall seconds of each named step of a job, for timings.json."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - began

    def as_dict(self) -> dict[str, float]:
        out = {f"{step}_seconds": s for step, s in self.seconds.items()}
        return out | {"total_seconds": time.perf_counter() - self.started}


@contextmanager
def _folder(path: Path | None) -> Iterator[Path]:
    """The run's output folder, or a temporary one when the caller has none."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="pipeline-run-") as tmp:
        yield Path(tmp)


def _tags(conf: Config, overrides: Sequence[str], resolved: Mapping) -> dict[str, str]:
    tags = {
        "dataset": conf.dataset.name,
        "model": conf.model.name,
        "optimizer": conf.optimizer.name,
        # What was built and what trained it (a `_target_` may be any builder or class).
        "model_builder": conf.model.target,
        "optimizer_class": conf.optimizer.target,
        "overrides": " ".join(overrides),
        # The same for runs that differ only in seed: MLflow's "Group by" and compare use it.
        "config_key": config_key(flatten(resolved)),
    }
    commit = store.git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    return tags


def dataset_inputs(conf: Config, ds: Dataset, split_at: int) -> tuple[DatasetInput, ...]:
    """The run's training, validation and test data as MLflow dataset inputs: each a slice of
    the (limited) training or test arrays, named after it (`mnist-train[:48000]`), its digest
    made of the IDX files' checked SHA-256 (a folder's: its files' contents and settings), the
    limit and the slice, its source the data folder."""
    import hashlib

    from pipeline.data.load import locate

    files = conf.dataset.files
    if ds.digest:
        source, keys = ds.source, {"train": ds.digest, "test": ds.digest}
    else:
        first = files.train_images
        source = str(locate(conf.dataset, first.name, first.sha256).parent)
        keys = {
            part: f"{getattr(files, f'{part}_images').sha256}:"
            f"{getattr(files, f'{part}_labels').sha256}"
            for part in ("train", "test")
        }
    num_train, num_test = len(ds.train_y), len(ds.test_y)
    slices = [("training", "train", 0, split_at), ("testing", "test", 0, num_test)]
    if split_at < num_train:
        slices.insert(1, ("validation", "train", split_at, num_train))
    out = []
    for context, part, start, stop in slices:
        key = f"{keys[part]}:{conf.dataset.limit}:{start}:{stop}"
        name = f"{conf.dataset.name}-{part}[{start or ''}:{stop}]"
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        out.append(DatasetInput(context, part, start, stop, name, digest, source))
    return tuple(out)


def run(
    cfg: DictConfig,
    parent_run_id: str | None = None,
    output_dir: Path | None = None,
    overrides: Sequence[str] = (),
) -> float:
    """Train, evaluate and record one job.

    Args:
        cfg: the composed config (checked here before anything is read or written).
        parent_run_id: the sweep's parent MLflow run; this run is created as its child.
        output_dir: the job's folder (Hydra's output dir): every file the run makes is written
            there, and its `.hydra/` is logged too; None writes to a temporary folder.
        overrides: the command-line overrides, recorded as a tag.
    Returns:
        The objective for sweeps: final validation accuracy, or test accuracy without validation.
    """
    conf = to_config(cfg)
    # The process's recorder (started by the entry point before TensorFlow, else now).
    rec = RecorderClient(enabled=conf.tracking.enabled)
    try:
        if conf.tracking.enabled:  # an unreachable store fails now, in seconds, writing nothing
            store.check_store(store.resolve_uri(conf.tracking.uri))
        return _steps(conf, cfg, rec, parent_run_id, output_dir, overrides)
    except KeyboardInterrupt:
        rec.close("KILLED", "interrupted")
        raise
    except BaseException as exc:
        if _interrupted(exc):  # e.g. Ctrl-C while TensorFlow traced a function, which wraps it
            rec.close("KILLED", "interrupted")
            raise KeyboardInterrupt("interrupted") from exc
        rec.close("FAILED", f"{type(exc).__name__}: {exc}", getattr(exc, "tags", {}))
        raise


def _pruned(rec: RecorderClient, conf: Config, epoch: int) -> None:
    """End a trial the search pruned: its run KILLED (stopped on purpose, not failed), tagged
    with the epoch; Optuna's TrialPruned tells the sweeper."""
    import optuna

    message = f"trial {conf.search.trial_number} pruned by the search at epoch {epoch}"
    rec.close("KILLED", message, {"pruned_at_epoch": str(epoch), "optuna_trial_state": "PRUNED"})
    log.info("%s", message)
    raise optuna.TrialPruned(message)


def _interrupted(exc: BaseException) -> bool:
    """Whether an interruption is what `exc` carries, as its cause or context."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass(frozen=True)
class Loaded:
    """The job's data: as loaded, as split, and as its run records it."""

    ds: Dataset
    splits: Splits
    inputs: tuple[DatasetInput, ...]


@dataclass(frozen=True)
class Trained:
    """The fitted model's history, test metrics and final numbers (the last epoch's, the test
    set's and the fit's seconds)."""

    history: History
    metrics: Metrics
    final: dict[str, float]


def _steps(
    conf: Config,
    cfg: DictConfig,
    rec: RecorderClient,
    parent_run_id: str | None,
    output_dir: Path | None,
    overrides: Sequence[str],
) -> float:
    """Set up, load, build, open the run, fit, evaluate, record, report: each a phase, timed."""
    clock = Stopwatch()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with _folder(output_dir) as out:
        with clock("build"):  # a strategy the machine cannot give fails now, before the data
            _set_up_devices(conf)
        with clock("load"):  # data problems surface here, before anything is recorded
            data = _load(conf)
        if conf.dataset.format == "folder":  # the run records what the folder gave
            names = list(data.ds.class_names)
            resolved["dataset"] |= {"name": conf.dataset.name, "class_names": names}
        spec = _run_spec(conf, resolved, overrides, parent_run_id, data)
        start = _start(conf, rec, spec, out if output_dir is not None else None)
        if isinstance(start, float):  # a resumed sweep's job that had finished: kept
            return start
        with clock("build"):  # a strategy the machine cannot give fails here, unrecorded
            model, replicas = _build(conf, data.ds, len(data.splits.train))
        request = ReportRequest(
            config=conf.report,
            title=f"{conf.model.name} / {conf.optimizer.name} / {conf.dataset.name}",
            ink_on_black=data.ds.ink_on_black,
        )
        _open_run(rec, start.spec, conf, cfg, out, model, replicas, data, request)
        with clock("fit"):
            trained = _train(conf, rec, model, data, start)
        with clock("record"):  # metrics, weights and model first: a failed report keeps them
            _record(rec, conf, out, model, data, trained)
        with clock("report"):  # drawn by the recorder, from the arrays saved here
            _report(rec, conf, out, data, trained, replace(request, settings=flatten(resolved)))
        with clock("recorder"):  # the recorder's remaining work; it raises what failed there
            rec.close("FINISHED")  # (in a sweep, it goes on while the next job trains)
        if start.folder is not None:  # the run is done: nothing left to resume
            shutil.rmtree(start.folder, ignore_errors=True)
        (out / "timings.json").write_text(json.dumps(clock.as_dict(), indent=2) + "\n")
    log.info(
        "done: %s (files in %s)",
        " ".join(f"{k}={v:.4f}" for k, v in trained.final.items()),
        output_dir or "a temporary folder",
    )
    return objectives(conf, trained, model.count_params())


def objectives(conf: Config, trained: Trained, num_params: int) -> float | list[float]:
    """What the job returns to a search: its final validation accuracy (the test accuracy
    without validation), or the values of `search.objectives` in order when there are more."""
    names = list(conf.search.objectives)
    if names == ["val_accuracy"]:
        return trained.final.get("val_accuracy", trained.metrics.accuracy)
    values = trained.final | {"num_params": num_params}
    found = [float(values[n]) for n in names if n in values]
    if len(found) != len(names):
        missing = [n for n in names if n not in values]
        raise ConfigError(f"search.objectives: this run has no {', '.join(missing)}")
    return found[0] if len(found) == 1 else found


@dataclass(frozen=True)
class Start:
    """Where a job's training starts: its run (a new one, or a stopped one to go on with), the
    folder its checkpoints go to (None: none are written), and the state it resumes from."""

    spec: RunSpec
    folder: Path | None
    saved: checkpoint.Saved | None = None


def _start(conf: Config, rec: RecorderClient, spec: RunSpec, out: Path | None) -> Start | float:
    """The run this job trains in. With `resume=`, the stopped run it names (read from its
    checkpoint, which is checked before anything changes), or, in a resumed sweep, the result
    of this job's run if it finished before."""
    folder = out / "checkpoint" if out is not None and conf.trainer.checkpoint else None
    if conf.resume is None:
        if folder is None or not conf.tracking.enabled:
            return Start(spec, None)
        return Start(replace(spec, tags=spec.tags | {"checkpoint_dir": str(folder)}), folder)
    found = rec.find(spec, conf.resume)
    if found.state == "finished":
        log.info("kept: run %s (%s) finished in the earlier sweep", found.name, found.run_id)
        return float(found.objective) if found.objective is not None else float("nan")
    if found.state == "new":  # a sweep's job that had not run
        return _start(replace(conf, resume=None), rec, spec, out)
    folder = Path(found.checkpoint)
    saved = checkpoint.read(folder)
    epoch = saved.epoch if saved else 0
    log.info("resuming run %s (%s) after epoch %d", found.name, found.run_id, epoch)
    tags = spec.tags | {"resumed_from_epoch": str(epoch)}
    return Start(replace(spec, resume_run_id=found.run_id, tags=tags), folder, saved)


def _report(rec, conf: Config, out: Path, data: Loaded, trained: Trained, request) -> None:
    """Save the report's arrays and have the recorder draw and log it."""
    request = replace(request, weights=str(out / "weights.npz"), final=trained.final)
    save_report_inputs(
        out / REPORT_INPUTS, data.ds, trained.history, trained.metrics, conf.report.num_samples
    )
    rec.send(DrawReport(str(out / REPORT_INPUTS), str(out), request))


def _set_up_devices(conf: Config) -> None:
    """TensorFlow's threads and devices, checked against what the machine has; the
    optimizer's keys, checked against its class now that Keras is here."""
    check_optimizer(conf.optimizer)
    set_threads(conf.trainer)
    devices.split_cpu(conf.trainer)
    devices.check(conf.trainer)


def _load(conf: Config) -> Loaded:
    ds = load(conf.dataset)
    splits = preprocess(ds, conf.trainer.validation_split)
    inputs = dataset_inputs(conf, ds, len(splits.train))
    return Loaded(ds, splits, inputs)


def _run_spec(
    conf: Config,
    resolved: Mapping,
    overrides: Sequence[str],
    parent_run_id: str | None,
    data: Loaded,
) -> RunSpec:
    tags = _tags(conf, overrides, resolved)
    # The data the run is chosen by (validation, else test): a champion moves only for a run
    # measured on the same data.
    tags["selection_data"] = data.inputs[1].digest
    return RunSpec(
        # The recorder may outlive this job's environment (it serves a whole sweep).
        tracking=replace(conf.tracking, uri=store.resolve_uri(conf.tracking.uri)),
        experiment=conf.dataset.name,
        run_name=conf.tracking.run_name,
        tags=tags,
        parent_run_id=parent_run_id,
        # `resume` says where a run starts, not what it is: a resumed run's params stay.
        params={k: v for k, v in flatten(resolved).items() if k != "resume"},
    )


def _open_run(rec, spec, conf, cfg, out, model, replicas, data: Loaded, request) -> None:
    """Open the run and give it what is known before training: data, config, model summary,
    and the samples figure (drawn by the recorder while the model trains)."""
    rec.open(spec)
    if spec.resume_run_id is None:  # a resumed run has its inputs
        rec.send(LogDatasets(conf.dataset, data.inputs))
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    rec.send(LogFiles((str(out / "config.yaml"),)))
    rec.send(LogFolder(str(out / ".hydra"), ".hydra"))
    summary: list[str] = []
    model.summary(print_fn=lambda line, *a, **k: summary.append(line))
    (out / "model_summary.txt").write_text("\n".join(summary) + "\n")
    rec.send(
        LogParams(
            {
                "num_params": model.count_params(),
                "num_replicas": replicas,
                "precision_used": model.dtype_policy.name,
            }
        )
    )
    if conf.report.samples:
        n = conf.report.num_samples
        ds = data.ds
        rec.send(DrawSamples(str(out), request, ds.train_x[:n], ds.train_y[:n], ds.class_names))


def _train(
    conf: Config, rec: RecorderClient, model: keras.Model, data: Loaded, start: Start
) -> Trained:
    """Fit, then evaluate on the test set; a trial the search pruned ends here."""
    # Nothing else runs in this process while the model trains: recording happens in the
    # recorder process, on the other core.
    callbacks: list[keras.callbacks.Callback] = [LearningRateToLogs(), EpochsToRecorder(rec)]
    if conf.search.trial_id is not None and len(conf.search.objectives) == 1:
        callbacks.append(ReportToTrial(conf.search))  # Optuna prunes one objective only
    history = fit(conf.trainer, model, data.splits, callbacks, start.folder, start.saved)
    trial = next((cb for cb in callbacks if isinstance(cb, ReportToTrial)), None)
    if trial is not None and trial.pruned_at is not None:
        _pruned(rec, conf, trial.pruned_at)
    metrics = evaluate(model, data.splits.test, data.ds.class_names)
    final = {k: v[-1] for k, v in history.metrics.items()}
    final |= {
        "test_loss": metrics.loss,
        "test_accuracy": metrics.accuracy,
        "fit_seconds": history.fit_seconds,
    }
    # Where early stopping ended the run and which epoch's weights it kept.
    final |= {
        name: float(epoch)
        for name, epoch in (
            ("stopped_epoch", history.stopped_epoch),
            ("best_epoch", history.best_epoch),
        )
        if epoch is not None
    }
    return Trained(history, metrics, final)


def _record(rec, conf: Config, out: Path, model, data: Loaded, trained: Trained) -> None:
    """The run's test metrics, weights, per-example predictions and the model."""
    final, metrics = trained.final, trained.metrics
    once = ("test_loss", "test_accuracy", "fit_seconds", "stopped_epoch", "best_epoch")
    rec.send(LogMetrics({k: final[k] for k in once if k in final}))
    f1 = {
        f"test_f1_{name}": metrics.report[name]["f1-score"]
        for name in data.ds.class_names
        if name in metrics.report
    }
    rec.send(LogMetrics(f1))
    np.savez(out / "weights.npz", **named_weights(model))
    # Per-example results, for McNemar's test between two single runs (compare).
    np.savez_compressed(
        out / "predictions.npz",
        predictions=metrics.predictions.astype(np.uint8),
        labels=metrics.labels.astype(np.uint8),
    )
    (out / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
    names = ("model_summary.txt", "weights.npz", "predictions.npz", "metrics.json")
    rec.send(LogFiles(tuple(str(out / name) for name in names)))
    if conf.tracking.log_model and conf.tracking.enabled:
        save_for_clients(model, out / "model.keras")
        example = data.splits.test.x[:5]
        versions = backend.version()
        output = metrics.probabilities[:5]  # the test pass's: equal to predicting them anew
        metadata = {
            "class_names": list(data.ds.class_names),
            "preparation": Preparation.of(data.ds).as_dict(),
        }
        rec.send(LogModel(str(out / "model.keras"), example, output, versions, metadata))


def _build(conf: Config, ds, num_train: int) -> tuple[keras.Model, int]:
    """The compiled model, seeded and placed under the configured strategy; its replica count."""
    # Keras' global state from an earlier job in this process (a sweep) goes; a full garbage
    # collection on top would cost about a second a job with TensorFlow loaded.
    keras.backend.clear_session(free_memory=False)
    shape, classes = ds.train_x.shape[1:], len(ds.class_names)
    policy = precision.choose(
        conf.trainer.precision,
        lambda: build(conf.model, conf.optimizer, shape, classes),
        shape,
        conf.trainer.batch_size,
        {
            "model": [conf.model.target, dict(conf.model.keys)],
            "optimizer": conf.optimizer.target,
            "threads": conf.trainer.intra_op_threads,
        },
        Path(conf.dataset.cache_dir).expanduser() / "precision.json",
    )
    precision.apply(policy)
    strategy = devices.strategy(conf.trainer)
    keras.utils.set_random_seed(conf.seed)
    if tf is not None:  # JAX's CPU ops are deterministic as they are
        tf.config.experimental.enable_op_determinism()
    with strategy.scope():  # the model's variables live on every replica
        model = build(
            conf.model,
            conf.optimizer,
            shape,
            classes,
            steps_per_execution(conf.trainer, num_train),
            total_steps(num_train, conf.trainer.batch_size, conf.trainer.epochs),
        )
    precision.apply("float32")  # the model keeps its policy; the next job starts from float32
    return model, strategy.num_replicas_in_sync


def run_from_hydra(cfg: DictConfig) -> float:
    """Call :func:`run` with what Hydra knows of this job (output dir, overrides, sweep parent)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    parent = None
    if hc.mode == RunMode.MULTIRUN:
        marker = Path(hc.sweep.dir) / PARENT_RUN_FILE
        parent = marker.read_text().strip() if marker.is_file() else None
    # Runs are told apart by what was overridden (`linear-sgd lr=0.1 seed=3`), unless named.
    if not any(o.lstrip("+~").startswith("tracking.run_name=") for o in hc.overrides.task):
        cfg.tracking.run_name = run_name(cfg.tracking.run_name, list(hc.overrides.task))
    return run(
        cfg,
        parent_run_id=parent,
        output_dir=Path(hc.runtime.output_dir),
        overrides=list(hc.overrides.task),
    )

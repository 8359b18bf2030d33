"""run(cfg): the stages in order, and the one place that records their results."""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from pipeline import distribute
from pipeline._tf import keras, tf
from pipeline.config import Config, config_key, flatten, to_config
from pipeline.errors import StageError
from pipeline.stages.build import build, named_weights
from pipeline.stages.evaluate import evaluate
from pipeline.stages.fit import fit, set_threads, steps_per_execution
from pipeline.stages.load import load
from pipeline.stages.preprocess import preprocess
from pipeline.stages.report import render_html, report
from pipeline.sweep import PARENT_RUN_FILE
from pipeline.tracking import parents, recorder, store

log = logging.getLogger(__name__)

PLOT_DPI = 90


@contextmanager
def _folder(path: Path | None) -> Iterator[Path]:
    """The run's output folder, or a temporary one when the caller has none."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="pipeline-run-") as tmp:
        yield Path(tmp)


@contextmanager
def _stage(name: str) -> Iterator[None]:
    """Name the stage in any unexpected error raised inside (the run records it)."""
    try:
        yield
    except Exception as exc:
        raise StageError(name, exc) from exc


def _experiment(conf: Config, parent_run_id: str | None) -> str | None:
    """Point MLflow at the store and return the experiment id (None when tracking is off)."""
    if not conf.tracking.enabled:
        return None
    if parent_run_id is not None:
        return parents.parent_experiment_after_setup(conf.tracking, parent_run_id)
    return store.setup(conf.tracking, conf.dataset.name)


def _tags(conf: Config, overrides: Sequence[str], resolved: Mapping) -> dict[str, str]:
    tags = {
        "dataset": conf.dataset.name,
        "model": conf.model.name,
        "optimizer": conf.optimizer.name,
        "overrides": " ".join(overrides),
        # The same for runs that differ only in seed: MLflow's "Group by" and compare use it.
        "config_key": config_key(flatten(resolved)),
    }
    commit = store.git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    return tags


def _write_artifacts(artifacts: Mapping[str, Figure | str], out: Path) -> dict[str, bytes | str]:
    """Write texts to `out` and figures, rendered once, to `out/plots`; return what was written
    (PNG bytes for figures), for the HTML page."""
    written: dict[str, bytes | str] = {}
    for name, item in artifacts.items():
        if isinstance(item, str):
            (out / name).write_text(item)
            written[name] = item
        else:
            buf = io.BytesIO()
            item.savefig(buf, format="png", dpi=PLOT_DPI)
            (out / "plots").mkdir(parents=True, exist_ok=True)
            (out / "plots" / name).write_bytes(buf.getvalue())
            written[name] = buf.getvalue()
    return written


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
    started = time.perf_counter()
    conf = to_config(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if conf.tracking.enabled:  # an unreachable store fails now, in seconds, writing nothing
        store.check_store(store.resolve_uri(conf.tracking.uri))

    # Data problems surface here, before anything is written to the store.
    ds = load(conf.dataset)
    splits = preprocess(ds, conf.trainer.validation_split)
    store_started = time.perf_counter()
    experiment_id = _experiment(conf, parent_run_id)

    set_threads(conf.trainer)
    distribute.split_cpu(conf.trainer)
    # Keras' global state from an earlier job in this process (a sweep) goes; a full garbage
    # collection on top would cost about a second a job with TensorFlow loaded.
    keras.backend.clear_session(free_memory=False)
    strategy = distribute.strategy(conf.trainer)
    keras.utils.set_random_seed(conf.seed)
    tf.config.experimental.enable_op_determinism()

    tags = _tags(conf, overrides, resolved)
    with (
        recorder.open_run(experiment_id, conf.tracking.run_name, tags, parent_run_id) as rec,
        _folder(output_dir) as out,
    ):
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        rec.params(flatten(resolved))
        rec.files([out / "config.yaml"])
        rec.folder(out / ".hydra", ".hydra")
        # Time spent on recording and reporting, by part (none of it when tracking is off).
        clock = {"store_seconds": time.perf_counter() - store_started}

        with strategy.scope():  # the model's variables live on every replica
            model = build(
                conf.model,
                conf.optimizer,
                ds.train_x.shape[1:],
                len(ds.class_names),
                steps_per_execution(conf.trainer, len(splits.train)),
            )
        summary: list[str] = []
        model.summary(print_fn=lambda line, *a, **k: summary.append(line))
        (out / "model_summary.txt").write_text("\n".join(summary) + "\n")
        rec.params(
            {"num_params": model.count_params(), "num_replicas": strategy.num_replicas_in_sync}
        )

        title = f"{conf.model.name} / {conf.optimizer.name} / {conf.dataset.name}"
        # Nothing else runs while the model trains: TensorFlow takes the GIL at every step, so
        # drawing or logging on another thread would slow training about as much as it saves
        # (benchmarks/gil.py), and `fit_seconds` would count it.
        fit_started = time.perf_counter()
        history = fit(conf.trainer, model, splits, rec.callbacks())
        fit_ended = time.perf_counter()
        metrics = evaluate(model, splits.test, ds.class_names)
        final = {k: v[-1] for k, v in history.metrics.items()}
        final |= {
            "test_loss": metrics.loss,
            "test_accuracy": metrics.accuracy,
            "fit_seconds": history.fit_seconds,
        }
        # Metrics, weights and model are recorded before the report, which cannot lose them.
        rec.metrics({k: final[k] for k in ("test_loss", "test_accuracy", "fit_seconds")})
        rec.metrics(
            {
                f"test_f1_{name}": metrics.report[name]["f1-score"]
                for name in ds.class_names
                if name in metrics.report
            }
        )
        weights = named_weights(model)
        np.savez(out / "weights.npz", **weights)
        # Per-example results, for McNemar's test between two single runs (compare).
        np.savez_compressed(
            out / "predictions.npz",
            predictions=metrics.predictions.astype(np.uint8),
            labels=metrics.labels.astype(np.uint8),
        )
        (out / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
        rec.files(
            [
                out / "model_summary.txt",
                out / "weights.npz",
                out / "predictions.npz",
                out / "metrics.json",
            ]
        )
        if conf.tracking.log_model:
            model_log_started = time.perf_counter()
            rec.keras_model(model, splits.test.x[:5])
            clock["model_log_seconds"] = time.perf_counter() - model_log_started

        with _stage("report"):
            report_started = time.perf_counter()
            figures = report(conf.report, ds, history, metrics, weights, conf.model.name, title)
            written = _write_artifacts(figures, out)
            rec.folder(out / "plots", "plots")
            texts = [out / name for name, item in written.items() if isinstance(item, str)]
            if conf.report.html:
                settings = flatten(resolved)
                (out / "report.html").write_text(render_html(title, settings, final, written))
                texts.append(out / "report.html")
            rec.files(texts)
            clock["report_seconds"] = time.perf_counter() - report_started
        # Where the time went (read by benchmarks/seed_runs.py).
        timings = {
            "before_fit_seconds": fit_started - started,
            "fit_seconds": history.fit_seconds,
            "after_fit_seconds": time.perf_counter() - fit_ended,
            **clock,
        }
        (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")

    log.info(
        "done: %s (files in %s)",
        " ".join(f"{k}={v:.4f}" for k, v in final.items()),
        output_dir or "a temporary folder",
    )
    return final.get("val_accuracy", metrics.accuracy)


def run_from_hydra(cfg: DictConfig) -> float:
    """Call :func:`run` with what Hydra knows of this job (output dir, overrides, sweep parent)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    parent = None
    if hc.mode == RunMode.MULTIRUN:
        marker = Path(hc.sweep.dir) / PARENT_RUN_FILE
        parent = marker.read_text().strip() if marker.is_file() else None
        # Runs of a sweep over seeds are told apart by their seed (`ann-adam-seed3`).
        if any(o.split("=", 1)[0].lstrip("+~") == "seed" for o in hc.overrides.task):
            cfg.tracking.run_name = f"{cfg.tracking.run_name}-seed{cfg.seed}"
    return run(
        cfg,
        parent_run_id=parent,
        output_dir=Path(hc.runtime.output_dir),
        overrides=list(hc.overrides.task),
    )

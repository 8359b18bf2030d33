"""run(cfg): the stages in order, and the one place that logs their results to MLflow."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import tracking
from pipeline._tf import keras, tf
from pipeline.config import to_config
from pipeline.stages.build import build, named_weights
from pipeline.stages.evaluate import evaluate
from pipeline.stages.fit import fit, set_threads, steps_per_execution
from pipeline.stages.load import load
from pipeline.stages.preprocess import preprocess
from pipeline.stages.report import report

log = logging.getLogger(__name__)

PARENT_RUN_FILE = "mlflow_parent_run_id"


def run(
    cfg: DictConfig,
    parent_run_id: str | None = None,
    hydra_dir: Path | None = None,
    overrides: Sequence[str] = (),
) -> float:
    """Train, evaluate and record one job.

    Args:
        cfg: the composed config (checked here before anything is read or written).
        parent_run_id: the sweep's parent MLflow run; this run is created as its child.
        hydra_dir: Hydra's `.hydra/` folder of this job, logged as an artifact if given.
        overrides: the command-line overrides, recorded as a tag.
    Returns:
        The objective for sweeps: final validation accuracy, or test accuracy without validation.
    """
    conf = to_config(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if parent_run_id is not None:
        experiment_id = tracking.parent_experiment_after_setup(conf.tracking, parent_run_id)
    else:
        experiment_id = tracking.setup(conf.tracking, conf.dataset.name)

    # Data problems surface here, before a run is opened, so they leave the store untouched.
    ds = load(conf.dataset)
    splits = preprocess(ds, conf.trainer.validation_split)

    set_threads(conf.trainer)
    keras.utils.set_random_seed(conf.seed)
    tf.config.experimental.enable_op_determinism()
    keras.backend.clear_session()

    tags = {
        "dataset": conf.dataset.name,
        "model": conf.model.name,
        "optimizer": conf.optimizer.name,
        "overrides": " ".join(overrides),
    }
    commit = tracking.git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    with tracking.start_run(experiment_id, conf.tracking.run_name, tags, parent_run_id) as run_id:
        log.info(
            "MLflow run %s (%s) in %s",
            run_id,
            conf.tracking.run_name,
            tracking.resolve_uri(conf.tracking.uri),
        )
        tracking.log_params(tracking.flatten(resolved))
        tracking.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        if hydra_dir is not None:
            tracking.log_dir(hydra_dir, ".hydra")

        model = build(
            conf.model,
            conf.optimizer,
            ds.train_x.shape[1:],
            len(ds.class_names),
            steps_per_execution(conf.trainer, len(splits.train)),
        )
        summary: list[str] = []
        model.summary(print_fn=lambda line, *a, **k: summary.append(line))
        tracking.log_text("\n".join(summary), "model_summary.txt")
        tracking.log_params({"num_params": model.count_params()})

        history = fit(conf.trainer, model, splits, [tracking.EpochMetricsLogger()])
        metrics = evaluate(model, splits.test, ds.class_names)
        tracking.log_metrics(
            {
                "test_loss": metrics.loss,
                "test_accuracy": metrics.accuracy,
                "fit_seconds": history.fit_seconds,
            }
        )
        tracking.log_arrays(named_weights(model), "weights.npz")
        if conf.tracking.log_model:
            tracking.log_keras_model(model, splits.test.x[:5])

        title = f"{conf.model.name} / {conf.optimizer.name} / {conf.dataset.name}"
        tracking.log_figures(report(conf.report, history, title), "plots")

    final = {k: v[-1] for k, v in history.metrics.items()}
    log.info(
        "done: %s test_accuracy=%.4f test_loss=%.4f fit %.1f s",
        " ".join(f"{k}={v:.4f}" for k, v in final.items()),
        metrics.accuracy,
        metrics.loss,
        history.fit_seconds,
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
    return run(
        cfg,
        parent_run_id=parent,
        hydra_dir=Path(hc.runtime.output_dir) / hc.output_subdir if hc.output_subdir else None,
        overrides=list(hc.overrides.task),
    )

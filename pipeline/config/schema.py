"""Typed schemas for every config key, registered in Hydra's ConfigStore.

Hydra checks types and unknown keys while composing; the ranges are checked in
``__post_init__``, which runs when :func:`to_config` turns the composed config into
these dataclasses, so a bad value fails before any data is read.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.errors import ConfigError

MODELS = ("linear", "ann")
OPTIMIZERS = ("sgd", "adam")
# The config folder (`conf/`): config.yaml and one folder per group.
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
STRATEGIES = ("default", "mirrored", "multi_worker")
# A TensorFlow device name: /cpu:0, /gpu:1, /device:GPU:0, /job:worker/replica:0/task:0/gpu:0.
DEVICE_NAME = re.compile(
    r"/?(job:[\w-]+/)?(replica:\d+/)?(task:\d+/)?(device:)?(cpu|gpu|tpu):\d+", re.IGNORECASE
)
FILE_ROLES = ("train_images", "train_labels", "test_images", "test_labels")


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")


@dataclass
class DataFile:
    """One IDX .gz file: its name in the dataset folder and the SHA-256 of its decompressed
    content (the .gz bytes may differ between mirrors; the content may not)."""

    name: str = MISSING
    sha256: str = MISSING


@dataclass
class DataFiles:
    train_images: DataFile = field(default_factory=lambda: DataFile("train-images-idx3-ubyte.gz"))
    train_labels: DataFile = field(default_factory=lambda: DataFile("train-labels-idx1-ubyte.gz"))
    test_images: DataFile = field(default_factory=lambda: DataFile("t10k-images-idx3-ubyte.gz"))
    test_labels: DataFile = field(default_factory=lambda: DataFile("t10k-labels-idx1-ubyte.gz"))


@dataclass
class DatasetConfig:
    name: str = MISSING
    # Sub-folder of `path` and of `cache_dir` holding the files (e.g. "mnist").
    dirname: str = MISSING
    path: str | None = "${oc.env:PIPELINE_DATA_DIR,null}"
    cache_dir: str = "${oc.env:PIPELINE_CACHE_DIR,'~/.cache/pipeline/datasets'}"
    mirrors: list[str] = field(default_factory=list)
    files: DataFiles = field(default_factory=DataFiles)
    class_names: list[str] = field(default_factory=list)
    limit: int | None = None

    def __post_init__(self) -> None:
        _require(
            self.limit is None or self.limit >= 1,
            "dataset.limit",
            self.limit,
            "a positive number of images, or null for all",
        )
        _require(
            len(self.class_names) >= 2,
            "dataset.class_names",
            self.class_names,
            "at least two class names",
        )
        for role in FILE_ROLES:
            digest = getattr(self.files, role).sha256
            _require(
                len(digest) == 64,
                f"dataset.files.{role}.sha256",
                digest,
                "the 64 hex digits of the decompressed file's SHA-256",
            )


@dataclass
class ModelConfig:
    name: str = MISSING
    # Width of the hidden Dense layer (ann only).
    hidden_units: int = 128
    activation: str = "relu"

    def __post_init__(self) -> None:
        _require(self.name in MODELS, "model.name", self.name, f"one of {', '.join(MODELS)}")
        _require(self.hidden_units >= 1, "model.hidden_units", self.hidden_units, "an integer >= 1")


@dataclass
class OptimizerConfig:
    name: str = MISSING
    learning_rate: float = MISSING

    def __post_init__(self) -> None:
        _require(
            self.name in OPTIMIZERS, "optimizer.name", self.name, f"one of {', '.join(OPTIMIZERS)}"
        )
        _require(
            self.learning_rate > 0, "optimizer.learning_rate", self.learning_rate, "a number > 0"
        )


@dataclass
class TrainerConfig:
    epochs: int = 30
    batch_size: int = 64
    # Fraction of the training set, taken from its end as Keras does, held out for validation.
    validation_split: float = 0.2
    shuffle: bool = True
    # Keras progress: 0 silent, 1 progress bar, 2 one line per epoch.
    verbose: int = 2
    # Training steps run per call into the compiled graph; null means a whole epoch. The
    # updates are the same; only Python's per-step overhead goes.
    steps_per_execution: int | None = None
    # TensorFlow's threads per op; 0 means one per core. These models' ops are too small to
    # gain from splitting, and on few cores the hand-offs cost more than they give.
    intra_op_threads: int = 1
    # Data-parallel training (tf.distribute): `default` runs on one device; `mirrored` copies
    # the model onto `devices` (empty: every local GPU, without GPUs every logical CPU) and
    # splits each batch between them; `multi_worker` does the same across the machines that
    # TF_CONFIG lists. `batch_size` is the global batch.
    strategy: str = "default"
    devices: list[str] = field(default_factory=list)
    # Split the CPU into this many logical devices (/cpu:0, /cpu:1, ...), to try the
    # strategies on a machine without GPUs.
    cpu_devices: int = 1

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "trainer.epochs", self.epochs, "an integer >= 1")
        _require(self.batch_size >= 1, "trainer.batch_size", self.batch_size, "an integer >= 1")
        _require(
            0 <= self.validation_split < 1,
            "trainer.validation_split",
            self.validation_split,
            "a fraction in [0, 1); 0 means no validation",
        )
        _require(self.verbose in (0, 1, 2), "trainer.verbose", self.verbose, "0, 1 or 2")
        _require(
            self.steps_per_execution is None or self.steps_per_execution >= 1,
            "trainer.steps_per_execution",
            self.steps_per_execution,
            "an integer >= 1, or null for a whole epoch",
        )
        _require(
            self.intra_op_threads >= 0,
            "trainer.intra_op_threads",
            self.intra_op_threads,
            "an integer >= 0 (0: one per core)",
        )
        _require(
            self.strategy in STRATEGIES,
            "trainer.strategy",
            self.strategy,
            f"one of {', '.join(STRATEGIES)}",
        )
        _require(
            self.strategy == "default" or (self.steps_per_execution or 1) == 1,
            "trainer.steps_per_execution",
            self.steps_per_execution,
            f"1 or null with trainer.strategy={self.strategy} (Keras' multi-step loop fails "
            "under a tf.distribute strategy)",
        )
        _require(self.cpu_devices >= 1, "trainer.cpu_devices", self.cpu_devices, "an integer >= 1")
        for device in self.devices:
            _require(
                bool(DEVICE_NAME.fullmatch(str(device))),
                "trainer.devices",
                list(self.devices),
                "device names such as /cpu:0 or /gpu:1",
            )
        _require(
            not self.devices or self.strategy == "mirrored",
            "trainer.devices",
            list(self.devices),
            "empty unless trainer.strategy=mirrored (only it places the model on devices)",
        )


@dataclass
class TrackingConfig:
    # false: record nothing in MLflow (files still go to the run's output folder).
    enabled: bool = True
    # MLflow tracking URI; null means $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db.
    uri: str | None = None
    # Experiment name; null means the dataset name.
    experiment: str | None = None
    run_name: str = "${model.name}-${optimizer.name}"
    # Artifact root for experiments this pipeline creates; null: <project>/mlruns for the
    # default store, the server's choice otherwise.
    artifact_location: str | None = None
    log_model: bool = True
    # Register the model in the registry (one registered model per dataset, its alias
    # `champion` on the best version): null registers a sweep's best run and not a single run.
    register: bool | None = None


@dataclass
class ReportConfig:
    """Which figures the report stage draws, and how many images they show."""

    num_samples: int = 20
    num_predictions: int = 15
    num_mistakes: int = 16
    samples: bool = True
    learning_curves: bool = True
    predictions: bool = True
    confusion_matrix: bool = True
    mistakes: bool = True
    # Linear model only: the ten columns of W drawn as 28x28 templates.
    weights: bool = True
    html: bool = True

    def __post_init__(self) -> None:
        for key in ("num_samples", "num_predictions", "num_mistakes"):
            value = getattr(self, key)
            _require(value >= 1, f"report.{key}", value, "an integer >= 1")


@dataclass
class SearchConfig:
    """Set by the `optuna` sweeper for each trial it launches: where the trial lives, so that
    the job reports each epoch's validation accuracy to it and stops when it is pruned."""

    study: str | None = None
    storage: str | None = None  # null: the study is in the memory of the sweeping process
    trial_id: int | None = None
    trial_number: int | None = None
    pruner: str = "none"
    pruner_warmup_epochs: int = 1
    pruner_startup_trials: int = 3


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    seed: int = 42


def register() -> None:
    """Register the schema; config.yaml and every group file are checked against it."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)


def to_config(cfg: DictConfig) -> Config:
    """Resolve a composed config into typed dataclasses, checking every range.

    Raises:
        ConfigError: a value is missing, of the wrong type or out of range; names the key.
    """
    try:
        obj = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        raise ConfigError(str(exc).splitlines()[0]) from exc
    if not isinstance(obj, Config):
        raise ConfigError("the composed config does not follow the Config schema")
    return obj


def known_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every key of the schema and of its sections: `trainer`, `trainer.epochs`, …"""
    keys: list[str] = []
    for name, hint in get_type_hints(schema).items():
        keys.append(f"{prefix}{name}")
        if dataclasses.is_dataclass(hint):
            keys += known_keys(hint, f"{prefix}{name}.")
    return keys

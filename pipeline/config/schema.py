"""Typed schemas for every config key, registered in Hydra's ConfigStore.

Hydra checks types and unknown keys while composing; the ranges are checked in
``__post_init__``, which runs when :func:`to_config` turns the composed config into
these dataclasses, so a bad value fails before any data is read.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from pipeline.errors import ConfigError

# The config folder (`conf/`): config.yaml and one folder per group.
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_bfloat16", "auto")
# A TensorFlow device name: /cpu:0, /gpu:1, /device:GPU:0, /job:worker/replica:0/task:0/gpu:0.
DEVICE_NAME = re.compile(
    r"/?(job:[\w-]+/)?(replica:\d+/)?(task:\d+/)?(device:)?(cpu|gpu|tpu):\d+", re.IGNORECASE
)
FILE_ROLES = ("train_images", "train_labels", "test_images", "test_labels")
DATASET_FORMATS = ("idx", "folder")
BACKENDS = ("tensorflow", "jax")
MAX_SEED = 2**32 - 1  # NumPy's and TensorFlow's seeds are unsigned 32-bit integers
MAX_SIDE = 1024  # a folder dataset's image side, in pixels


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")


@dataclass
class DataFile:
    """One IDX .gz file: its name in the dataset folder and the SHA-256 of its decompressed
    content (the .gz bytes may differ between mirrors; the content may not)."""

    name: str = MISSING
    sha256: str = ""  # required by the IDX format


@dataclass
class DataFiles:
    train_images: DataFile = field(default_factory=lambda: DataFile("train-images-idx3-ubyte.gz"))
    train_labels: DataFile = field(default_factory=lambda: DataFile("train-labels-idx1-ubyte.gz"))
    test_images: DataFile = field(default_factory=lambda: DataFile("t10k-images-idx3-ubyte.gz"))
    test_labels: DataFile = field(default_factory=lambda: DataFile("t10k-labels-idx1-ubyte.gz"))


@dataclass
class DatasetConfig:
    # The experiment's name and the registered model's; for a folder, its name unless given.
    name: str = MISSING
    # `idx`: MNIST's IDX .gz files in `path`/`dirname` (downloaded when absent); `folder`: a
    # folder of images, one sub-folder per class (`path`/<class>/*.png) or given splits
    # (`path`/train/<class>/…, `path`/test/<class>/…).
    format: str = "idx"
    # Sub-folder of `path` and of `cache_dir` holding the IDX files (e.g. "mnist").
    dirname: str = ""
    path: str | None = "${oc.env:PIPELINE_DATA_DIR,null}"
    cache_dir: str = "${oc.env:PIPELINE_CACHE_DIR,'~/.cache/pipeline/datasets'}"
    mirrors: list[str] = field(default_factory=list)
    files: DataFiles = field(default_factory=DataFiles)
    # The IDX datasets' names of the labels 0, 1, …; a folder's are its class folders, sorted.
    class_names: list[str] = field(default_factory=list)
    limit: int | None = None
    # A folder dataset: the images made grey (1) or colour (3) and resized to image_size
    # (height, width); without train/ and test/, a stratified test split of this share, the
    # same for every run with the same split_seed.
    channels: int = 1
    image_size: list[int] = field(default_factory=lambda: [28, 28])
    test_split: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        _require(
            self.format in DATASET_FORMATS,
            "dataset.format",
            self.format,
            f"one of {', '.join(DATASET_FORMATS)}",
        )
        _require(
            self.limit is None or self.limit >= 1,
            "dataset.limit",
            self.limit,
            "a positive number of images, or null for all",
        )
        if self.format == "folder":
            self._check_folder()
            return
        _require(bool(self.dirname), "dataset.dirname", self.dirname, "the IDX files' folder name")
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

    def _check_folder(self) -> None:
        _require(
            bool(self.path),
            "dataset.path",
            self.path,
            "the folder of class folders, as dataset.path=DIR",
        )
        if not self.name:
            self.name = Path(str(self.path)).expanduser().resolve().name or "images"
        _require(
            self.channels in (1, 3), "dataset.channels", self.channels, "1 (grey) or 3 (colour)"
        )
        size = list(self.image_size)
        _require(
            len(size) == 2 and all(isinstance(v, int) and 1 <= v <= MAX_SIDE for v in size),
            "dataset.image_size",
            size,
            f"[height, width], each 1..{MAX_SIDE} pixels",
        )
        _require(
            0 < self.test_split < 1,
            "dataset.test_split",
            self.test_split,
            "a fraction in (0, 1)",
        )


# What a builder is given by the pipeline, not by its config: one image's shape and the number
# of classes.
BUILDER_ARGUMENTS = ("input_shape", "num_classes")
SCHEDULES = ("cosine", "exponential")


@dataclass
class ModelConfig:
    """A model (`conf/model/*.yaml`): its builder, its name, and the builder's own keys.

    Made by :func:`to_config` from the model group's node, whose keys are the builder's: each is
    checked against the builder's signature (name and type), without TensorFlow for the
    pipeline's own builders."""

    target: str
    name: str
    keys: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from pipeline.config.targets import check_keys, resolve

        builder = resolve(self.target, "model._target_")
        check_keys(builder, self.keys, "model", BUILDER_ARGUMENTS)


@dataclass
class OptimizerConfig:
    """An optimizer (`conf/optimizer/*.yaml`): a class of `keras.optimizers` or any other by
    `_target_`, its learning rate and schedule, and the class's own keys (checked against its
    signature by `models.build.check_optimizer`, once Keras is imported, before any data)."""

    target: str
    name: str
    learning_rate: float
    # null: a constant rate; cosine or exponential: from learning_rate down to
    # decay_to x learning_rate over the run's steps.
    schedule: str | None = None
    decay_to: float = 0.01
    keys: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(
            "." in self.target, "optimizer._target_", self.target, "a dotted path, module.Class"
        )
        _require(
            isinstance(self.learning_rate, int | float) and self.learning_rate > 0,
            "optimizer.learning_rate",
            self.learning_rate,
            "a number > 0",
        )
        _require(
            self.schedule is None or self.schedule in SCHEDULES,
            "optimizer.schedule",
            self.schedule,
            f"null or one of {', '.join(SCHEDULES)}",
        )
        _require(
            0 < self.decay_to <= 1, "optimizer.decay_to", self.decay_to, "a fraction in (0, 1]"
        )


def _section(node: Any, key: str, schema: type, fixed: tuple[str, ...]) -> Any:
    """The model or optimizer group's node (a dict) as `schema`: `_target_`, `name` and the
    `fixed` keys as fields, every other key in `keys`."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{key} is invalid: expected a config with _target_ and name")
    node = dict(node)
    for required in ("_target_", "name"):
        if required not in node:
            raise ConfigError(f"{key}.{required} is missing")
    fields = {f: node.pop(f) for f in fixed if f in node}
    return schema(target=node.pop("_target_"), name=node.pop("name"), keys=node, **fields)


@dataclass
class EarlyStoppingConfig:
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs (null: off)."""

    patience: int | None = None
    monitor: str = "val_loss"
    min_delta: float = 0.0
    # Keep the weights of the best epoch, not the last one.
    restore_best_weights: bool = True

    def __post_init__(self) -> None:
        _require(
            self.patience is None or self.patience >= 1,
            "trainer.early_stopping.patience",
            self.patience,
            "an integer >= 1, or null for no early stopping",
        )
        monitors = ("val_loss", "val_accuracy", "loss", "accuracy")
        _require(
            self.monitor in monitors,
            "trainer.early_stopping.monitor",
            self.monitor,
            f"one of {', '.join(monitors)}",
        )
        _require(self.min_delta >= 0, "trainer.early_stopping.min_delta", self.min_delta, ">= 0")


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
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # The numbers the layers compute in: float32; mixed_bfloat16 (variables stay float32); or
    # auto, which times a few steps of this model in each on this machine, takes bfloat16
    # only where it is clearly faster, and keeps the choice for the next run.
    precision: str = "float32"
    # Save the training state (weights, optimizer, random state) after each epoch into the
    # job's folder, so that `resume=` can continue the run; removed when the run finishes.
    checkpoint: bool = True
    # The engine Keras runs on: tensorflow, or jax (`pip install -e '.[jax]'`), whose per-step
    # cost is a third of TensorFlow's for the dense models (and whose convolutions are slower
    # on a CPU). One engine per process: a sweep over it needs a process per job.
    backend: str = "tensorflow"

    def __post_init__(self) -> None:
        self._check_engine()
        self._check_loop()
        self._check_placement()

    def _check_engine(self) -> None:
        """The precision and the engine, and what the engine can do."""
        _require(
            self.precision in PRECISIONS,
            "trainer.precision",
            self.precision,
            f"one of {', '.join(PRECISIONS)}",
        )
        engines = ", ".join(BACKENDS)
        _require(self.backend in BACKENDS, "trainer.backend", self.backend, f"one of {engines}")
        one_device = self.strategy == "default" and self.cpu_devices == 1
        _require(
            self.backend == "tensorflow" or one_device,
            "trainer.strategy" if self.strategy != "default" else "trainer.cpu_devices",
            self.strategy if self.strategy != "default" else self.cpu_devices,
            f"the default strategy on one device with trainer.backend={self.backend} (the "
            "strategies are TensorFlow's tf.distribute)",
        )

    def _check_loop(self) -> None:
        """The training loop's numbers."""
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

    def _check_placement(self) -> None:
        """The strategy and the devices it places the model on."""
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
    pruner: str = "none"  # a short name, or a `_target_` mapping as JSON
    pruner_warmup_epochs: int = 1
    pruner_startup_trials: int = 3
    # What the job returns to the search, in order: its final val_accuracy by default.
    objectives: list[str] = field(default_factory=lambda: ["val_accuracy"])


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    # The model and optimizer groups' nodes, keyed by their builder's or class's own
    # parameters; `to_config` makes them a ModelConfig and an OptimizerConfig.
    model: Any = MISSING
    optimizer: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    seed: int = 42
    # Continue a stopped run (FAILED or KILLED) from its last completed epoch, in the same
    # MLflow run: `last` (the newest stopped run of this configuration; in a sweep, the newest
    # stopped sweep of the same overrides) or a run id. Null starts a new run.
    resume: str | None = None


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
        if isinstance(exc, MissingMandatoryValue) and exc.full_key:
            key = exc.full_key
            raise ConfigError(f"{key} is missing: give it as {key}=<value>") from exc
        raise ConfigError(str(exc).splitlines()[0]) from exc
    if not isinstance(obj, Config):
        raise ConfigError("the composed config does not follow the Config schema")
    obj.model = _section(obj.model, "model", ModelConfig, ())
    obj.optimizer = _section(
        obj.optimizer, "optimizer", OptimizerConfig, ("learning_rate", "schedule", "decay_to")
    )
    for key, seed in (("seed", obj.seed), ("dataset.split_seed", obj.dataset.split_seed)):
        _require(0 <= seed <= MAX_SEED, key, seed, f"an integer from 0 to {MAX_SEED}")
    if obj.trainer.early_stopping.patience is not None:
        monitor = obj.trainer.early_stopping.monitor
        _require(
            obj.trainer.validation_split > 0 or not monitor.startswith("val_"),
            "trainer.early_stopping.monitor",
            monitor,
            "loss or accuracy when trainer.validation_split=0 (there is no validation)",
        )
    if obj.resume is not None and not obj.tracking.enabled:
        raise ConfigError(
            f"resume={obj.resume} needs tracking.enabled=true: the stopped run is in the store"
        )
    if obj.resume is not None and obj.search.trial_id is not None:
        raise ConfigError(
            "resume= does not apply to a search: its stored study goes on where it stopped "
            "(give the same hydra.sweeper.storage and study_name)"
        )
    return obj


def known_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every key of the schema and of its sections (`trainer`, `trainer.epochs`, …), and the
    keys of every model and optimizer option in conf/ (`model.hidden_units`, …)."""
    keys: list[str] = []
    for name, hint in get_type_hints(schema).items():
        keys.append(f"{prefix}{name}")
        if dataclasses.is_dataclass(hint):
            keys += known_keys(hint, f"{prefix}{name}.")
    if schema is Config:
        for group in ("model", "optimizer"):
            for option in sorted(Path(CONF_DIR, group).glob("*.yaml")):
                node = OmegaConf.load(option)
                keys += [
                    f"{group}.{k}" for k in node if k != "defaults" and f"{group}.{k}" not in keys
                ]
    return keys

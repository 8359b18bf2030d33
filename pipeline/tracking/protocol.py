"""What the training process and the recorder process say to each other: one frozen dataclass
per message, pickled over their socket pair. Both sides import this module and nothing else
defines a message, so a new kind of record is one class here and one handler in the recorder
(a test checks that every record has one).

Plain data only: neither TensorFlow nor MLflow is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.config.schema import DatasetConfig, TrackingConfig
from pipeline.reporting.inputs import ReportRequest


@dataclass(frozen=True)
class RunSpec:
    """What the recorder needs to open the run (sent once the data has loaded)."""

    tracking: TrackingConfig
    experiment: str
    run_name: str
    tags: dict[str, str]
    parent_run_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # A stopped run to go on with (`resume=`): reopened, its params and data already there.
    resume_run_id: str | None = None


@dataclass(frozen=True)
class DatasetInput:
    """One slice of the data a run used, logged as an MLflow dataset input: the rows
    `start:stop` of the (limited) `part` ("train" or "test") arrays."""

    context: str  # training, validation or testing
    part: str
    start: int
    stop: int
    name: str  # e.g. mnist-train[:48000]
    digest: str
    source: str  # the data folder


# --- records: training process -> recorder ----------------------------------------------------


@dataclass(frozen=True)
class OpenRun:
    """Open the job's MLflow run (or none, when tracking is off)."""

    spec: RunSpec
    enabled: bool
    job: int


@dataclass(frozen=True)
class LogDatasets:
    """Log the run's data as dataset inputs; the recorder reads the arrays itself."""

    dataset: DatasetConfig
    inputs: tuple[DatasetInput, ...]


@dataclass(frozen=True)
class LogParams:
    params: dict[str, Any]


@dataclass(frozen=True)
class LogMetrics:
    """Metrics at `step` (the epoch number), or without a step for the run's final ones."""

    metrics: dict[str, float]
    step: int | None = None


@dataclass(frozen=True)
class LogFiles:
    """Log each file of `paths` that exists, under the artifact folder `folder`."""

    paths: tuple[str, ...]
    folder: str | None = None


@dataclass(frozen=True)
class LogFolder:
    local_dir: str
    folder: str


@dataclass(frozen=True)
class LogModel:
    """Log the Keras model saved at `saved` (a .keras file), its signature inferred from an
    input example and the model's output on it; `metadata` (its class names and how a new
    image is prepared for it) goes into its MLmodel file."""

    saved: str
    example_in: np.ndarray
    example_out: np.ndarray
    versions: dict[str, str]
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DrawSamples:
    """Draw samples.png (it needs only the data) into `out_dir` while the model trains; the
    report then logs it with the rest."""

    out_dir: str
    request: ReportRequest
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class DrawReport:
    """Draw the report from the arrays saved at `inputs` into `out_dir`, and log it."""

    inputs: str
    out_dir: str
    request: ReportRequest


@dataclass(frozen=True)
class CloseRun:
    """End job `job`'s run with `status` once every record before is in."""

    job: int
    status: str
    error: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FindRun:
    """Find the run `resume` names for job `job` (answered with RunFound or ResumeRefused)."""

    job: int
    spec: RunSpec
    resume: str


@dataclass(frozen=True)
class WatchParent:
    """A sweep's parent run, closed FAILED by the recorder if this process dies first (or,
    with `watch` false, no longer: its process closed it)."""

    uri: str
    run_id: str
    watch: bool = True


@dataclass(frozen=True)
class Sync:
    """Answered with `Synced(token)` once everything sent before is done."""

    token: int


# The records that log to or draw for the open run; the recorder has one handler for each.
RUN_RECORDS = (
    LogDatasets,
    LogParams,
    LogMetrics,
    LogFiles,
    LogFolder,
    LogModel,
    DrawSamples,
    DrawReport,
)


# --- replies: recorder -> training process ----------------------------------------------------


@dataclass(frozen=True)
class RunOpened:
    job: int
    run_id: str | None


@dataclass(frozen=True)
class StoreRefused:
    """The store refused to open the run: the job stops at its next epoch."""

    job: int
    message: str


@dataclass(frozen=True)
class RunClosed:
    """The run is closed; `failure` is (stage, error) of the recorder's own part, if it failed."""

    job: int
    failure: tuple[str, str] | None


@dataclass(frozen=True)
class Synced:
    token: int


@dataclass(frozen=True)
class RunFound:
    """What FindRun found: `state` stopped, finished or new (see tracking.resume.Found)."""

    job: int
    state: str
    run_id: str | None
    name: str
    checkpoint: str
    objective: float | None


@dataclass(frozen=True)
class ResumeRefused:
    job: int
    message: str


Reply = RunOpened | StoreRefused | RunClosed | Synced | RunFound | ResumeRefused

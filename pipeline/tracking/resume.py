"""What `resume=` names, found in the store: the stopped run a job goes on with, and the stopped
sweep a multirun goes on under. Looking changes nothing; a run that cannot be resumed is a
ResumeError that says why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from pipeline.config.naming import config_key, settings
from pipeline.errors import ResumeError, TrackingError
from pipeline.tracking.store import connect_uri, resolve_uri, store_ready

STOPPED = ("FAILED", "KILLED")
CHECKPOINT_TAG = "checkpoint_dir"
PARENT_TAG = "mlflow.parentRunId"
# What a resumed run or sweep starts with again: the error of its stop goes.
STOP_TAGS = ("error", "failed_stage")


@dataclass(frozen=True)
class Found:
    """The run a job goes on with: `stopped` (resume it from `checkpoint`), `finished` (a
    sweep's child that is kept: `objective` is its result) or `new` (a sweep's job that never
    ran)."""

    state: str
    run_id: str | None = None
    name: str = ""
    checkpoint: str = ""
    objective: float | None = None


def _client(uri: str | None) -> tuple[MlflowClient, str]:
    resolved = resolve_uri(uri)
    mlflow.set_tracking_uri(connect_uri(resolved))
    return MlflowClient(), resolved


def _identity(params: Mapping[str, Any]) -> dict[str, str]:
    """What must be equal for a run to be the same one: its settings and its seed."""
    return settings(params) | {"seed": str(params.get("seed"))}


def _differences(run, params: Mapping[str, Any]) -> list[str]:
    theirs = run.data.params
    return [
        f"{key}={theirs.get(key, '(unset)')}, not {value}"
        for key, value in _identity(params).items()
        if theirs.get(key) != value
    ]


def _objective(run) -> float | None:
    metrics = run.data.metrics
    return metrics.get("val_accuracy", metrics.get("test_accuracy"))


def _stopped(run, what: str) -> Found:
    """`run` as a run to resume, if it can be."""
    name, status = run.info.run_name, run.info.status
    if status == "FINISHED":
        raise ResumeError(f"{what}: run {name} ({run.info.run_id}) finished; nothing to resume")
    if status not in STOPPED:
        raise ResumeError(f"{what}: run {name} ({run.info.run_id}) is {status}, not stopped")
    checkpoint = run.data.tags.get(CHECKPOINT_TAG)
    if not checkpoint:
        raise ResumeError(
            f"{what}: run {name} ({run.info.run_id}) has no checkpoint (it was trained with "
            "trainer.checkpoint=false or without an output folder)"
        )
    return Found("stopped", run.info.run_id, name, checkpoint)


def find_run(tracking_uri: str | None, experiment: str, params, resume: str, parent) -> Found:
    """The run `resume` names for a job of `params` (its flattened config).

    Args:
        experiment: the job's experiment name (where `resume=last` looks).
        resume: `last` or a run id; in a sweep (`parent` set), any value looks among the
            parent's children for this job's own.
    Raises:
        ResumeError: nothing that can be resumed; the message says why.
    """
    client, uri = _client(tracking_uri)
    what = f"resume={resume}"
    if parent is not None:
        return _child(client, parent, params)
    if resume != "last":
        try:
            run = client.get_run(resume)
        except mlflow.exceptions.MlflowException:
            raise ResumeError(f"{what}: no run {resume} in the store {uri}") from None
        differ = _differences(run, params)
        if differ:
            raise ResumeError(
                f"{what}: run {run.info.run_name} was another configuration "
                f"({'; '.join(differ[:3])}); give the same settings to resume it"
            )
        return _stopped(run, what)
    found = client.get_experiment_by_name(experiment)
    identity = _identity(params)
    runs = []
    if found is not None:
        runs = client.search_runs(
            [found.experiment_id],
            f"tags.config_key = '{config_key(params)}'",
            order_by=["attributes.start_time DESC"],
        )
    for run in runs:
        if PARENT_TAG in run.data.tags or run.info.status not in STOPPED:
            continue
        if not _differences(run, params):
            return _stopped(run, what)
    raise ResumeError(
        f"{what}: no stopped run of this configuration (seed={identity['seed']}) in "
        f"experiment {experiment} of {uri}; run it without resume= to start one"
    )


def _child(client: MlflowClient, parent: str, params) -> Found:
    """This job's run among the resumed sweep's children: kept if it finished, resumed if it
    stopped with a checkpoint, else a new run."""
    experiment = client.get_run(parent).info.experiment_id
    children = client.search_runs(
        [experiment],
        f"tags.`{PARENT_TAG}` = '{parent}'",
        order_by=["attributes.start_time DESC"],
    )
    mine = [run for run in children if not _differences(run, params)]
    for run in mine:
        if run.info.status == "FINISHED":
            return Found("finished", run.info.run_id, run.info.run_name, objective=_objective(run))
    for run in mine:
        if run.info.status in STOPPED and run.data.tags.get(CHECKPOINT_TAG):
            return _stopped(run, "resume")
    return Found("new")


def find_parent(tracking_uri: str | None, experiment: str, overrides: str, resume: str) -> str:
    """The stopped sweep `resume` names: `last` is the newest stopped sweep with the same
    overrides (`resume=` aside) in `experiment`. Reopened (RUNNING again, its stop's error gone)
    for the jobs to go on under it; returns its id.

    Raises:
        ResumeError: no such sweep, or it finished.
    """
    client, uri = _client(tracking_uri)
    what = f"resume={resume}"
    _, tags = store_ready("", {"overrides": overrides})
    if resume == "last":
        found = client.get_experiment_by_name(experiment)
        runs = []
        if found is not None:
            runs = client.search_runs(
                [found.experiment_id],
                "tags.sweep = 'true'",
                order_by=["attributes.start_time DESC"],
            )
        runs = [
            r
            for r in runs
            if r.data.tags.get("overrides") == tags["overrides"] and r.info.status in STOPPED
        ]
        if not runs:
            raise ResumeError(
                f"{what}: no stopped sweep of `{overrides}` in experiment {experiment} of {uri}"
            )
        run = runs[0]
    else:
        try:
            run = client.get_run(resume)
        except mlflow.exceptions.MlflowException:
            raise ResumeError(f"{what}: no run {resume} in the store {uri}") from None
        if run.data.tags.get("sweep") != "true":
            raise ResumeError(f"{what}: run {run.info.run_name} is not a sweep's parent run")
        if run.data.tags.get("overrides") != tags["overrides"]:
            raise ResumeError(
                f"{what}: sweep {run.info.run_name} had other overrides: give the same ones"
            )
        if run.info.status not in STOPPED:
            raise ResumeError(
                f"{what}: sweep {run.info.run_name} is {run.info.status}; nothing to resume"
            )
    try:
        client.update_run(run.info.run_id, status="RUNNING")
        for tag in STOP_TAGS:
            if tag in run.data.tags:
                client.delete_tag(run.info.run_id, tag)
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"tracking store {uri}: {exc.message}") from exc
    return run.info.run_id

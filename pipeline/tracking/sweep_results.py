"""What a sweep's parent run is given once its children have run: the comparison of the finished
children, and the best trial of a search."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from pipeline.tracking import client

if TYPE_CHECKING:  # tracking imports MLflow: not at start-up
    from pipeline.tracking.runs import RunRecord

log = logging.getLogger(__name__)


def log_comparison(uri: str | None, parent_run_id: str, out_dir: Path) -> list[RunRecord]:
    """Compare the finished children of a parent run, write the comparison to `out_dir` and log
    it to the parent.

    Returns:
        The finished children compared (none when none finished).
    """
    from pipeline.analysis import compare
    from pipeline.tracking import parents, runs

    client.wait_for_recorder()  # the last jobs' runs close before they are read back
    records = runs.fetch_runs(uri, parent_run_id=parent_run_id)
    failed = runs.unfinished_children(uri, parent_run_id)
    if not records:
        log.warning("no finished child runs to compare (%d did not finish)", failed)
        return []
    comparison = compare.compare(records, runs.prediction_loader(uri), failed)
    paths = compare.write(comparison, out_dir)
    parents.log_files(paths, parent_run_id, "comparison")
    parents.log_to_run(parent_run_id, metrics=comparison.parent_metrics())
    log.info(
        "comparison of %d run%s in %d configuration%s logged to the parent run, written to %s",
        len(records),
        "" if len(records) == 1 else "s",
        len(comparison.groups),
        "" if len(comparison.groups) == 1 else "s",
        out_dir,
    )
    for verdict in comparison.verdicts:
        log.info("%s", verdict.sentence)
    for note in comparison.notes:
        log.info("%s", note)
    return records


# A tag holds at most this much of a failed trial's error.
MAX_ERROR_CHARS = 500


def log_search_result(parent_run_id: str, path: Path, records: list[RunRecord]) -> None:
    """After a search (Optuna), give the parent the study's result, of every process that
    shares the study: the best trial (its parameters, value, number, and its run if it is one
    of `records`), or for several objectives the Pareto front; the trials' counts by state,
    this process's failed trials with their errors, and Optuna's figures of the study.

    Args:
        path: the sweeper's result file; nothing is logged when there is none (not a search).
    """
    from pipeline.tracking import parents

    if not path.is_file():
        return
    result = OmegaConf.to_container(OmegaConf.load(path))
    counts = {f"trials_{k}": result.get(k, 0) for k in ("complete", "pruned", "fail")}
    failed = result.get("failed_trials") or {}
    tags = {f"failed_trial_{n}": str(e)[:MAX_ERROR_CHARS] for n, e in failed.items()}
    pairs = zip(result.get("objectives", []), result.get("directions", []), strict=True)
    tags["objectives"] = ", ".join(f"{d} {o}" for o, d in pairs)
    files = {"result": path} | {k: Path(v) for k, v in (result.get("plots") or {}).items()}
    if "pareto_front" in result:
        _log_front(parent_run_id, result, records, counts, tags)
    elif "best_params" in result:
        _log_best(parent_run_id, result, records, counts, tags)
    else:
        parents.log_to_run(parent_run_id, metrics=counts, tags=tags)
    parents.log_files(files, parent_run_id, "search")
    for number, error in failed.items():
        log.info("trial %s failed: %s", number, error)


def _run_of(records: list[RunRecord], trial) -> RunRecord | None:
    """The run of trial number `trial`, when this process ran it."""
    for record in records:
        if record.params.get("search.trial_number") == str(trial):
            return record
    return None


def _log_best(parent_run_id, result, records, counts, tags) -> None:
    from pipeline.tracking import parents

    best, value = result["best_params"], float(result["best_value"])
    tags = tags | {"best_trial": str(result["best_trial"])}
    record = _run_of(records, result["best_trial"])
    if record is not None:
        tags |= {"best_run_id": record.run_id, "best_run_name": record.name}
    objective = (result.get("objectives") or ["val_accuracy"])[0]
    parents.log_to_run(
        parent_run_id,
        params={f"best.{k}": v for k, v in best.items()},
        metrics={f"best_{objective}": value, **counts},
        tags=tags,
    )
    log.info(
        "best of study %s: trial %s %s %s=%.4f %s",
        result.get("study_name"),
        result["best_trial"],
        best,
        objective,
        value,
        tags.get("best_run_name", "(run by another process)"),
    )


def _log_front(parent_run_id, result, records, counts, tags) -> None:
    """A multi-objective study's Pareto front: its size, and each trial on it with its values
    and run, as a tag and in the log."""
    from pipeline.tracking import parents

    front = result["pareto_front"]
    lines = []
    for point in front:
        record = _run_of(records, point["trial"])
        values = " ".join(f"{k}={v:.6g}" for k, v in point["values"].items())
        name = record.name if record is not None else "(run by another process)"
        lines.append(f"trial {point['trial']}: {values} {point['params']} {name}")
    text = "\n".join(lines)
    parents.log_to_run(
        parent_run_id,
        metrics={"pareto_front_size": len(front), **counts},
        tags=tags | {"pareto_front": text[: MAX_ERROR_CHARS * 10]},
    )
    log.info("Pareto front of study %s (%d trials):", result.get("study_name"), len(front))
    for line in lines:
        log.info("  %s", line)

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


def log_search_result(parent_run_id: str, path: Path, records: list[RunRecord]) -> None:
    """After a search (Optuna), give the parent the study's best trial, of every process that
    shares the study: its parameters, value and number, and its run if it is one of `records`;
    and how many trials the study holds, by state.

    Args:
        path: the sweeper's result file; nothing is logged when there is none (not a search).
    """
    from pipeline.tracking import parents

    if not path.is_file():
        return
    result = OmegaConf.to_container(OmegaConf.load(path))
    counts = {f"trials_{k}": result.get(k, 0) for k in ("complete", "pruned", "fail")}
    if "best_params" not in result:
        parents.log_to_run(parent_run_id, metrics=counts)
        return
    best, value = result["best_params"], float(result["best_value"])
    tags = {"best_trial": str(result["best_trial"])}
    for record in records:  # the trial's run, when this process ran it
        if record.params.get("search.trial_number") == str(result["best_trial"]):
            tags |= {"best_run_id": record.run_id, "best_run_name": record.name}
            break
    parents.log_to_run(
        parent_run_id,
        params={f"best.{k}": v for k, v in best.items()},
        metrics={"best_val_accuracy": value, **counts},
        tags=tags,
    )
    parents.log_files({"result": path}, parent_run_id, "search")
    log.info(
        "best of study %s: trial %s %s val_accuracy=%.4f %s",
        result.get("study_name"),
        result["best_trial"],
        best,
        value,
        tags.get("best_run_name", "(run by another process)"),
    )

"""``python -m pipeline.compare [TARGET ...]``: runs side by side, grouped by configuration.

TARGET is an experiment name or a sweep's parent run id; with none, the most recent sweep in the
store. Prints the table and the verdicts (see `pipeline.analysis.compare`); with --out DIR,
also writes comparison.md/.csv (the groups), verdicts.md/.json, comparison_curves.png and one
self-contained comparison.html there. Reads the store, never writes it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.analysis.compare import RUN_ID, compare, write
from pipeline.cli.failure import fail
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def gather(targets: Sequence[str], tracking_uri: str | None) -> tuple[list, int]:
    """Finished runs of each target (a parent run id or an experiment name), and how many of
    the sweeps' runs did not finish; default the latest sweep."""
    from pipeline.tracking import runs, store

    db = store.sqlite_path(store.resolve_uri(tracking_uri))
    if db is not None and not db.is_file():  # reading it would make an empty one
        raise PipelineError(
            f"no tracking store at {db}: run a job first, or give --tracking-uri "
            "(or MLFLOW_TRACKING_URI) of the store that holds the runs"
        )
    if not targets:
        latest = runs.latest_sweep(tracking_uri)
        if latest is None:
            raise PipelineError(
                f"no sweep found in {store.resolve_uri(tracking_uri)}; name an experiment "
                "or a parent run id"
            )
        targets = [latest]
    records, failed = [], 0
    for target in targets:
        if RUN_ID.match(target):
            records += runs.fetch_runs(tracking_uri, parent_run_id=target)
            failed += runs.unfinished_children(tracking_uri, target)
        else:
            records += runs.fetch_runs(tracking_uri, experiment=target)
    if not records:
        raise PipelineError(f"no finished runs in {', '.join(targets)}")
    return records, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__)
    parser.add_argument("targets", nargs="*", help="experiment names and/or parent run ids")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the project's")
    parser.add_argument(
        "--out", type=Path, help="also write the tables, verdicts and figures into this folder"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from pipeline.tracking import runs

        records, failed = gather(args.targets, args.tracking_uri)
        loader = runs.prediction_loader(args.tracking_uri)
        comparison = compare(records, loader, failed)
    except PipelineError as exc:
        return fail(exc)
    sys.stdout.write(comparison.markdown + "\n" + comparison.verdicts_markdown)
    if args.out is not None:
        paths = write(comparison, args.out)
        log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

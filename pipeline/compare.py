"""Runs side by side: ``python -m pipeline.compare [EXPERIMENT | PARENT_RUN_ID ...]``.

With no argument, the most recent sweep in the store. Writes comparison_curves.png,
comparison.md and comparison.csv (one row per run, best test accuracy first) and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
COLUMNS = (
    "run",
    "dataset",
    "model",
    "optimizer",
    "learning_rate",
    "epochs",
    "batch_size",
    "params",
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "fit_seconds",
)


@dataclass(frozen=True)
class Comparison:
    """Rows (dicts keyed by COLUMNS, best test accuracy first), the curves figure, the tables."""

    rows: list[dict[str, object]]
    figure: Figure
    markdown: str
    csv: str


def _label(rec) -> str:
    t = rec.tags
    return f"{t.get('model', '?')}-{t.get('optimizer', '?')}-{t.get('dataset', '?')}"


def _row(rec) -> dict[str, object]:
    p, m, t = rec.params, rec.metrics, rec.tags
    return {
        "run": rec.name,
        "dataset": t.get("dataset", ""),
        "model": t.get("model", ""),
        "optimizer": t.get("optimizer", ""),
        "learning_rate": p.get("optimizer.learning_rate", ""),
        "epochs": p.get("trainer.epochs", ""),
        "batch_size": p.get("trainer.batch_size", ""),
        "params": p.get("num_params", ""),
        "val_accuracy": m.get("val_accuracy"),
        "val_loss": m.get("val_loss"),
        "test_accuracy": m.get("test_accuracy"),
        "test_loss": m.get("test_loss"),
        "fit_seconds": m.get("fit_seconds"),
    }


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.4f}"
    return str(value)


def curves_figure(records: Sequence) -> Figure:
    """Validation accuracy and loss per epoch, one line per run (training curves, dashed, for
    runs without validation)."""
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, name in zip(fig.subplots(1, 2), ("accuracy", "loss"), strict=True):
        for rec in records:
            values = rec.curves.get(f"val_{name}")
            style, suffix = "-", ""
            if values is None:
                values, style, suffix = rec.curves.get(name, ()), "--", " (training)"
            ax.plot(
                range(1, len(values) + 1),
                values,
                style,
                marker="o",
                ms=3,
                label=_label(rec) + suffix,
            )
        ax.set_title(f"Validation {name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"{len(records)} runs compared")
    return fig


def compare(records: Sequence) -> Comparison:
    """Build the comparison of runs read back by `tracking.fetch_runs`."""
    rows = sorted(
        (_row(r) for r in records),
        key=lambda row: (row["test_accuracy"] is None, -(row["test_accuracy"] or 0.0)),
    )
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in COLUMNS) + " |" for row in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return Comparison(rows, curves_figure(records), "\n".join(lines) + "\n", buf.getvalue())


def write(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    """Write the three files into out_dir; return them by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        name: out_dir / name
        for name in ("comparison_curves.png", "comparison.md", "comparison.csv")
    }
    comparison.figure.savefig(paths["comparison_curves.png"], dpi=100)
    paths["comparison.md"].write_text(comparison.markdown)
    paths["comparison.csv"].write_text(comparison.csv)
    return paths


def gather(targets: Sequence[str], tracking_uri: str | None) -> list:
    """Runs of each target (a parent run id or an experiment name); default the latest sweep."""
    from pipeline import tracking

    if not targets:
        latest = tracking.latest_sweep(tracking_uri)
        if latest is None:
            raise PipelineError(
                f"no sweep found in {tracking.resolve_uri(tracking_uri)}; name an experiment "
                "or a parent run id"
            )
        targets = [latest]
    records = []
    for target in targets:
        if RUN_ID.match(target):
            records += tracking.fetch_runs(tracking_uri, parent_run_id=target)
        else:
            records += tracking.fetch_runs(tracking_uri, experiment=target)
    if not records:
        raise PipelineError(f"no finished runs in {', '.join(targets)}")
    return records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__)
    parser.add_argument("targets", nargs="*", help="experiment names and/or parent run ids")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the project's")
    parser.add_argument("--out", type=Path, default=Path("comparison"), help="output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        comparison = compare(gather(args.targets, args.tracking_uri))
    except PipelineError as exc:
        log.error("error: %s", exc)
        return 1
    paths = write(comparison, args.out)
    sys.stdout.write(comparison.markdown)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

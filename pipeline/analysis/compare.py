"""Runs side by side, grouped by configuration, with verdicts.

Runs that differ only in seed form one group (their `config_key` tag): each group gets its
mean, spread and confidence interval, and each pair of groups that differ in one setting gets a
verdict with a test (paired t-test over matching seeds, Welch's t-test otherwise, McNemar's
exact test between two single runs) and Holm-adjusted p-values. `write` puts the tables, the
verdicts, the curves and one self-contained page into a folder.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.analysis import stats
from pipeline.config.naming import config_key, settings, short_key

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
METRICS = ("test_accuracy", "val_accuracy", "test_loss", "val_loss")
# Config groups: choosing another one changes all its keys, which count as one setting.
CONFIG_GROUPS = ("model", "optimizer", "dataset")
SIGNIFICANCE = 0.05
NO_VERDICT = "no two configurations differ in exactly one setting"
# (predicted labels, true labels) of one run's test set, or None when not stored.
PredictionLoader = Callable[[object], "tuple[np.ndarray, np.ndarray] | None"]


@dataclass(frozen=True)
class Group:
    """The runs of one configuration (they differ only in seed)."""

    key: str
    label: str
    settings: dict[str, str]
    records: tuple
    summaries: dict[str, stats.Summary]  # by metric name; a metric no run has is left out

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def seeds(self) -> list[str]:
        return [r.params.get("seed", "") for r in self.records]


@dataclass(frozen=True)
class Verdict:
    """Whether `better` beats `worse`, the two values of `setting`, with everything else equal."""

    setting: str
    better: str
    worse: str
    context: str
    test: stats.Test
    p_holm: float | None
    sentence: str


@dataclass(frozen=True)
class Comparison:
    groups: list[Group]
    verdicts: list[Verdict]
    figure: Figure
    notes: list[str] = field(default_factory=list)

    @property
    def markdown(self) -> str:
        return _markdown_table(self.groups)

    @property
    def csv(self) -> str:
        return _csv(self.groups)

    @property
    def verdicts_markdown(self) -> str:
        lines = [f"- {v.sentence}" for v in self.verdicts] or [f"- {NO_VERDICT}"]
        return "\n".join(["# Verdicts", "", *lines, *(f"\n{n}" for n in self.notes)]) + "\n"

    @property
    def verdicts_json(self) -> str:
        return json.dumps([_verdict_dict(v) for v in self.verdicts], indent=2) + "\n"

    def parent_metrics(self) -> dict[str, float]:
        """Per group, the mean and std of each metric, named e.g. `ann-adam.test_accuracy_mean`."""
        out: dict[str, float] = {}
        for g in self.groups:
            name = re.sub(r"[^\w./ -]+", "_", g.label).strip()
            for metric, s in g.summaries.items():
                out[f"{name}.{metric}_mean"] = s.mean
                if s.std is not None:
                    out[f"{name}.{metric}_std"] = s.std
            out[f"{name}.n"] = g.n
        return out


# --- grouping -------------------------------------------------------------------------------


def _factors(a: Mapping[str, str], b: Mapping[str, str]) -> set[str]:
    """The settings in which two configurations differ; a config group chosen differently
    (`model`, `optimizer`, `dataset`) counts once, whatever its keys."""
    out = set()
    for key in a.keys() | b.keys():
        if a.get(key) == b.get(key):
            continue
        group = key.split(".")[0]
        if group in CONFIG_GROUPS and a.get(f"{group}.name") != b.get(f"{group}.name"):
            out.add(group)
        else:
            out.add(key)
    return out


def _varying(configs: Sequence[Mapping[str, str]]) -> set[str]:
    """Every setting in which some two of the configurations differ."""
    return set().union(*(_factors(a, b) for a, b in combinations(configs, 2)))


def _value(setting: str, s: Mapping[str, str]) -> str:
    if setting in CONFIG_GROUPS:
        return s.get(f"{setting}.name", "?")
    return f"{short_key(setting)}={s.get(setting, '-')}"


def _label(s: Mapping[str, str], varying: set[str]) -> str:
    label = f"{s.get('model.name', '?')}-{s.get('optimizer.name', '?')}"
    if "dataset" in varying:
        label += f" {s.get('dataset.name', '?')}"
    extra = sorted(varying - set(CONFIG_GROUPS))
    return " ".join([label, *(_value(k, s) for k in extra)])


def group_runs(records: Sequence) -> list[Group]:
    """Runs grouped by configuration (all settings but the seed), best mean test accuracy first."""
    by_key: dict[str, list] = {}
    for rec in records:
        by_key.setdefault(config_key(rec.params), []).append(rec)
    configs = {k: settings(recs[0].params) for k, recs in by_key.items()}
    varying = _varying(list(configs.values()))
    groups = []
    for key, recs in by_key.items():
        recs = sorted(recs, key=lambda r: _seed_order(r.params.get("seed", "")))
        summaries = {
            m: stats.summarize([r.metrics[m] for r in recs])
            for m in (*METRICS, "fit_seconds")
            if all(m in r.metrics for r in recs)
        }
        groups.append(
            Group(key, _label(configs[key], varying), configs[key], tuple(recs), summaries)
        )
    return sorted(groups, key=lambda g: -_mean(g, "test_accuracy"))


def _seed_order(seed: str) -> tuple:
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def _mean(g: Group, metric: str) -> float:
    s = g.summaries.get(metric)
    return s.mean if s is not None else float("-inf")


# --- verdicts -------------------------------------------------------------------------------


def _test_set(rec) -> tuple:
    p = rec.params
    keys = ("dataset.name", "dataset.limit", "dataset.files.test_images.sha256")
    return tuple(p.get(k) for k in keys)


def _test(a: Group, b: Group, load: PredictionLoader | None) -> stats.Test:
    """The test of mean test accuracy, A - B, in fractions."""
    va = [r.metrics["test_accuracy"] for r in a.records]
    vb = [r.metrics["test_accuracy"] for r in b.records]
    diff = float(np.mean(va) - np.mean(vb))
    if a.n >= 2 and b.n >= 2:
        if sorted(a.seeds) == sorted(b.seeds) and len(set(a.seeds)) == a.n:
            return stats.paired_t(va, vb)  # both sorted by seed
        return stats.welch_t(va, vb)
    if a.n == 1 and b.n == 1:
        ra, rb = a.records[0], b.records[0]
        if _test_set(ra) != _test_set(rb):
            why = "the two runs were tested on different test sets: McNemar's test does not apply"
            return stats.Test("no test", diff, None, None, why)
        pa, pb = (load(ra), load(rb)) if load else (None, None)
        if pa is None or pb is None or not np.array_equal(pa[1], pb[1]):
            why = "no per-example predictions stored for both runs: McNemar's test needs them"
            return stats.Test("no test", diff, None, None, why)
        return stats.mcnemar(pa[0] == pa[1], pb[0] == pb[1])
    why = f"n={a.n} against n={b.n}: one run on a side leaves no spread to test against"
    return stats.Test("no test", diff, None, None, why)


def _points(x: float) -> str:
    return f"{100 * x:+.2f}".replace("-", "−")


def _sentence(setting, better, worse, context, test: stats.Test, p_holm) -> str:
    where = f" ({context})" if context else ""
    interval = (
        f" (95% CI {_points(test.ci[0])} to {_points(test.ci[1])})" if test.ci is not None else ""
    )
    amount = f"{_points(test.diff)} points test accuracy{interval}"
    if test.p is None:
        return f"{better} vs {worse}{where}: {amount}; not tested: {test.why}"
    tested = f"{test.name}, {stats.format_p(test.p)} (Holm-adjusted {stats.format_p(p_holm)})"
    if p_holm is not None and p_holm < SIGNIFICANCE and test.diff > 0:
        return f"{better} beats {worse}{where}: {amount}, {tested}"
    return f"no difference detectable between {worse} and {better}{where}: {amount}, {tested}"


def verdicts(groups: Sequence[Group], load: PredictionLoader | None = None) -> list[Verdict]:
    """A verdict for each pair of groups that differ in exactly one setting."""
    found = []
    varying = _varying([g.settings for g in groups])
    for a, b in combinations(groups, 2):
        factors = _factors(a.settings, b.settings)
        if len(factors) != 1:
            continue
        (setting,) = factors
        test = _test(a, b, load)
        if test.diff < 0:  # the better side first
            a, b = b, a
            test = _test(a, b, load)
        # What both sides share; a setting inside the chosen config group (the learning rate
        # of another optimizer) is named with the side it belongs to.
        shared = [k for k in sorted(varying - {setting}) if a.settings.get(k) == b.settings.get(k)]
        names = [_value(k, a.settings) for k in shared]
        if "dataset" not in varying:  # one dataset throughout: still say which
            names.append(a.settings.get("dataset.name", "?"))
        context = ", ".join(names)
        found.append((setting, a, b, context, test))
    found.sort(key=lambda f: (f[0], f[3]))  # by setting, then what stays the same
    adjusted = stats.holm([t.p for *_, t in found])
    out = []
    for (setting, a, b, context, test), p_holm in zip(found, adjusted, strict=True):
        inside = [
            k
            for k in sorted(varying)
            if k.startswith(f"{setting}.") and a.settings.get(k) != b.settings.get(k)
        ]
        better, worse = (
            " ".join([_value(setting, side.settings), *(_value(k, side.settings) for k in inside)])
            for side in (a, b)
        )
        sentence = _sentence(setting, better, worse, context, test, p_holm)
        out.append(Verdict(setting, better, worse, context, test, p_holm, sentence))
    return out


def _verdict_dict(v: Verdict) -> dict:
    return {
        "setting": v.setting,
        "better": v.better,
        "worse": v.worse,
        "context": v.context,
        "test": v.test.name,
        "difference_points": 100 * v.test.diff,
        "ci_points": None if v.test.ci is None else [100 * x for x in v.test.ci],
        "p": v.test.p,
        "p_holm": v.p_holm,
        "why_not_tested": v.test.why or None,
        "sentence": v.sentence,
    }


# --- tables and figures ------------------------------------------------------------------------


def _mean_std(s: stats.Summary | None) -> str:
    if s is None:
        return "-"
    return f"{s.mean:.4f} (n=1)" if s.std is None else f"{s.mean:.4f} ± {s.std:.4f}"


def _interval(s: stats.Summary | None) -> str:
    if s is None:
        return "-"
    return "n=1" if s.ci is None else f"{s.ci[0]:.4f} to {s.ci[1]:.4f}"


HEADER = (
    "configuration",
    "n",
    "test accuracy",
    "95% CI",
    "min to max",
    "val accuracy",
    "test loss",
    "val loss",
    "fit s",
)


def _table_rows(groups: Sequence[Group]) -> list[list[str]]:
    rows = []
    for g in groups:
        s = g.summaries
        acc = s.get("test_accuracy")
        fit = s.get("fit_seconds")
        rows.append(
            [
                g.label,
                str(g.n),
                _mean_std(acc),
                _interval(acc),
                "-" if acc is None else f"{acc.min:.4f} to {acc.max:.4f}",
                _mean_std(s.get("val_accuracy")),
                _mean_std(s.get("test_loss")),
                _mean_std(s.get("val_loss")),
                "-" if fit is None else f"{fit.mean:.1f}",
            ]
        )
    return rows


def _markdown_table(groups: Sequence[Group]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _table_rows(groups)]
    return "\n".join(lines) + "\n"


def _csv(groups: Sequence[Group]) -> str:
    f1 = sorted(
        {m for g in groups for r in g.records for m in r.metrics if m.startswith("test_f1_")}
    )
    columns = ["configuration", "config_key", "n", "seeds"]
    for m in METRICS:
        columns += [f"{m}_{x}" for x in ("mean", "std", "ci_low", "ci_high", "min", "max")]
    columns += ["fit_seconds_mean", *(f"{m}_mean" for m in f1)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for g in groups:
        row: dict[str, object] = {
            "configuration": g.label,
            "config_key": g.key,
            "n": g.n,
            "seeds": " ".join(g.seeds),
        }
        for m, s in g.summaries.items():
            if m == "fit_seconds":
                row["fit_seconds_mean"] = s.mean
                continue
            ci = s.ci or (None, None)
            row |= {
                f"{m}_mean": s.mean,
                f"{m}_std": s.std,
                f"{m}_ci_low": ci[0],
                f"{m}_ci_high": ci[1],
                f"{m}_min": s.min,
                f"{m}_max": s.max,
            }
        for m in f1:
            values = [r.metrics[m] for r in g.records if m in r.metrics]
            row[f"{m}_mean"] = float(np.mean(values)) if values else None
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def _padded(curves: Sequence[Sequence[float]]) -> np.ndarray:
    """Curves of different lengths as one (runs, longest) array, NaN past each one's end."""
    longest = max((len(c) for c in curves), default=0)
    out = np.full((len(curves), longest), np.nan)
    for row, curve in zip(out, curves, strict=True):
        row[: len(curve)] = curve
    return out


def curves_figure(groups: Sequence[Group]) -> Figure:
    """Per configuration, the mean validation accuracy and loss per epoch with a band of ±1 std
    across its runs (training curves, dashed, for configurations without validation)."""
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, name in zip(fig.subplots(1, 2), ("accuracy", "loss"), strict=True):
        for g in groups:
            metric, style, suffix = f"val_{name}", "-", ""
            if not all(metric in r.curves for r in g.records):
                metric, style, suffix = name, "--", " (training)"
            values = _padded([r.curves.get(metric, ()) for r in g.records])
            if values.shape[1] == 0:
                continue
            # Runs that stopped early count until their last epoch: each epoch's mean is over
            # the runs that reached it.
            epochs = np.arange(1, values.shape[1] + 1)
            mean = np.nanmean(values, axis=0)
            line = ax.plot(epochs, mean, style, marker="o", ms=3, label=f"{g.label}{suffix}")[0]
            reached = (~np.isnan(values)).sum(axis=0)
            if g.n > 1 and (reached > 1).any():
                std = np.full(len(epochs), np.nan)
                std[reached > 1] = np.nanstd(values[:, reached > 1], axis=0, ddof=1)
                ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_title(f"Validation {name} (mean ± 1 std over seeds)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    runs = sum(g.n for g in groups)
    fig.suptitle(f"{len(groups)} configurations, {runs} runs")
    return fig


def compare(
    records: Sequence, load_predictions: PredictionLoader | None = None, failed: int = 0
) -> Comparison:
    """The grouped comparison of finished runs read back by `tracking.runs.fetch_runs`.

    Args:
        load_predictions: gives a run's (predicted, true) test labels, for McNemar's test.
        failed: how many runs of the sweep did not finish (they are left out, and said so).
    """
    groups = group_runs(records)
    notes = []
    if failed:
        notes.append(f"{failed} run(s) did not finish and are left out.")
    return Comparison(groups, verdicts(groups, load_predictions), curves_figure(groups), notes)


def _html(comparison: Comparison, png: bytes) -> str:
    from pipeline.reporting import pages

    verdicts = [v.sentence for v in comparison.verdicts] or [NO_VERDICT]
    body = [f"<p>{pages.esc(n)}</p>" for n in comparison.notes]
    body += [
        pages.heading("Verdicts"),
        "<ul>" + "".join(f"<li>{pages.esc(v)}</li>" for v in verdicts) + "</ul>",
        pages.heading("Configurations"),
        pages.table(HEADER, _table_rows(comparison.groups)),
        pages.heading("Curves"),
        pages.image(png, "comparison curves"),
    ]
    return pages.page(f"Comparison of {len(comparison.groups)} configurations", body)


def write(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    """Write the comparison's files into out_dir; return them by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = (
        "comparison.md",
        "comparison.csv",
        "verdicts.md",
        "verdicts.json",
        "comparison_curves.png",
        "comparison.html",
    )
    paths = {name: out_dir / name for name in names}
    buf = io.BytesIO()
    comparison.figure.savefig(buf, format="png", dpi=100)
    paths["comparison_curves.png"].write_bytes(buf.getvalue())
    paths["comparison.md"].write_text(comparison.markdown)
    paths["comparison.csv"].write_text(comparison.csv)
    paths["verdicts.md"].write_text(comparison.verdicts_markdown)
    paths["verdicts.json"].write_text(comparison.verdicts_json)
    paths["comparison.html"].write_text(_html(comparison, buf.getvalue()))
    return paths

"""Benchmark: the notes' two experiments as the notes run them vs the pipeline's presets, a
2-epoch quick look, and the 2x2x5-seed study.

    python benchmarks/seed_runs.py                 # 3 repeats of everything, about 25 minutes here
    python benchmarks/seed_runs.py --only quick_look --no-study
    python benchmarks/seed_runs.py --study-only
    python benchmarks/seed_runs.py --study-only --backend jax   # the pipeline on JAX
    python benchmarks/seed_runs.py --smoke         # 1 epoch, 2000 images: keeps the script
                                                   # working; its figures mean nothing

For each experiment, one after another and repeated, in fresh processes on this machine:
- baseline: the notes' script (plain Keras, float64 arrays from /255, `model.fit` defaults);
- pipeline: `python -m pipeline experiment=<preset>` with MLflow logging and the report, into
  a temporary SQLite store;
- pipeline, tracking off: the same with `tracking.enabled=false` and every report figure off,
  to measure what logging and the report cost.
The study (`experiment=study trainer.epochs=5`, 20 jobs) runs one job at a time
(`hydra.launcher.n_jobs=1`) and with its parallel launcher (joblib, one job per core).
Each run's peak memory is the largest sum of the resident memory of its processes (the
trainer, its recorder, and for the study every worker), sampled every 0.1 s.
Prints a table of min and median seconds and their ratios, and writes it all as JSON.
Needs PIPELINE_DATA_DIR (the folder with mnist/ and fashion-mnist/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _notes_data import SMOKE_NOTE

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# name: (the notes' script, the pipeline's preset, epochs for both; None keeps the preset's)
EXPERIMENTS = {
    "quick_look": ("notes_linear_mnist.py", "seed_linear_mnist", 2),
    "linear_mnist": ("notes_linear_mnist.py", "seed_linear_mnist", None),
    "ann_fashion": ("notes_ann_fashion.py", "seed_ann_fashion", None),
}
STUDY = ["experiment=study", "trainer.epochs=5"]
STUDY_SMOKE = ["trainer.epochs=1", "dataset.limit=2000", "seed=range(1,3)"]
REPORT_OFF = [
    f"report.{k}=false"
    for k in ("samples", "learning_curves", "predictions", "confusion_matrix", "mistakes")
] + ["report.weights=false", "report.html=false"]
SMOKE = {"epochs": 1, "limit": 2000}
# What the pipeline's timings.json says of the steps after training: handing the records over
# (record: metrics, files, the saved model; report: the report's arrays) and waiting for the
# recorder process to finish its part (recorder: logging, drawing, closing the run).
PARTS = ("record_seconds", "report_seconds", "recorder_seconds")
AFTER_FIT = ("evaluate_seconds", *PARTS)
IMPORT_MLFLOW = (
    "import time, pipeline.training.backend; s = time.perf_counter(); import mlflow; "
    "print(time.perf_counter() - s)"
)
SEED = 42  # the pipeline's default seed, given to the baseline too


def _tree_rss(root: int) -> int:
    """Bytes of resident memory of process `root` and all its descendants."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(pid, 0) for pid in tree)


def timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    """Run `cmd` to completion, output to `log`; return its wall seconds (start to exit) and
    the peak resident bytes of its process tree."""
    peak = [0]
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], _tree_rss(proc.pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed with exit code {proc.returncode}; see {log}")
    return seconds, peak[0]


def _epochs(epochs: int | None, smoke: bool) -> int | None:
    return SMOKE["epochs"] if smoke else epochs


def baseline(script: str, work: Path, tag: str, smoke: bool, epochs: int | None) -> dict:
    out = work / tag
    out.mkdir()
    env = {
        **os.environ,
        "BENCH_OUT": str(out),
        "BENCH_RESULT": str(out / "result.json"),
        "BENCH_SEED": str(SEED),
    }
    if smoke:
        env |= {"BENCH_LIMIT": str(SMOKE["limit"])}
    if _epochs(epochs, smoke):
        env |= {"BENCH_EPOCHS": str(_epochs(epochs, smoke))}
    seconds, peak = timed([sys.executable, str(HERE / script)], env, out / "log.txt")
    result = json.loads((out / "result.json").read_text())
    return {"process_seconds": seconds, "peak_rss_mb": peak / 2**20, **result}


def _store_env(work: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}


def _figure_seconds(folder: Path) -> dict[str, float]:
    """The recorder's seconds for each figure of the job in `folder` (report_timings.json)."""
    path = folder / "report_timings.json"
    if not path.is_file():
        return {}
    return {f"figure_{k}": v for k, v in json.loads(path.read_text()).items()}


# The pipeline's engine, when --backend names one (the config's default otherwise).
ENGINE: list[str] = []


def pipeline(
    preset: str, work: Path, tag: str, smoke: bool, tracking: bool, epochs: int | None
) -> dict:
    out = work / tag
    cmd = [sys.executable, "-m", "pipeline", f"experiment={preset}", f"hydra.run.dir={out}"]
    cmd += ENGINE
    if smoke:
        cmd += [f"dataset.limit={SMOKE['limit']}"]
    if _epochs(epochs, smoke):
        cmd += [f"trainer.epochs={_epochs(epochs, smoke)}"]
    if not tracking:
        cmd += ["tracking.enabled=false", *REPORT_OFF]
    seconds, peak = timed(cmd, _store_env(work), work / f"{tag}.log")
    metrics = json.loads((out / "metrics.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    return {
        "process_seconds": seconds,
        "peak_rss_mb": peak / 2**20,
        "fit_seconds": metrics["fit_seconds"],
        "after_fit_seconds": sum(timings.get(k, 0.0) for k in AFTER_FIT),
        **{k: timings.get(k, 0.0) for k in PARTS},
        "val_accuracy": metrics.get("val_accuracy"),
        "test_accuracy": metrics["test_accuracy"],
        **_figure_seconds(out),
    }


def study(work: Path, tag: str, smoke: bool, parallel: bool) -> dict:
    """The 2x2x5-seed study at 5 epochs, one job at a time or with its parallel launcher."""
    sweep = work / tag
    cmd = [sys.executable, "-m", "pipeline", "-m", *STUDY, f"hydra.sweep.dir={sweep}", *ENGINE]
    if smoke:
        cmd += STUDY_SMOKE
    if not parallel:
        cmd += ["hydra.launcher.n_jobs=1"]  # joblib then runs the jobs in this process
    seconds, peak = timed(cmd, _store_env(work), work / f"{tag}.log")
    jobs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    fits = sum(job["fit_seconds"] for job in jobs)
    return {
        "process_seconds": seconds,
        "peak_rss_mb": peak / 2**20,
        "jobs": len(jobs),
        "sum_fit_seconds": fits,
        "overhead_seconds": seconds - fits,
    }


def summary(samples: list[dict], key: str) -> dict:
    values = [s[key] for s in samples if s.get(key) is not None]
    if not values:
        return {"min": None, "median": None}
    return {"min": min(values), "median": statistics.median(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1 epoch, 2000 images, 1 repeat")
    parser.add_argument("--only", choices=sorted(EXPERIMENTS), action="append")
    parser.add_argument("--no-study", action="store_true", help="leave out the 20-job study")
    parser.add_argument(
        "--study-only", action="store_true", help="only the 20-job study (no experiments)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "seed_runs.json")
    parser.add_argument(
        "--backend", choices=("tensorflow", "jax"), help="the pipeline's trainer.backend"
    )
    args = parser.parse_args()
    if args.backend:
        ENGINE.append(f"trainer.backend={args.backend}")
    if "PIPELINE_DATA_DIR" not in os.environ:
        sys.exit("set PIPELINE_DATA_DIR to the folder holding mnist/ and fashion-mnist/")
    repeats = 1 if args.smoke else args.repeats
    results: dict = {
        "smoke": args.smoke,
        "repeats": repeats,
        "backend": args.backend or "default",
        "experiments": {},
    }
    # What importing MLflow (the pipeline's tracking module) adds once TensorFlow is loaded.
    results["import_mlflow_seconds"] = statistics.median(
        float(
            subprocess.run(
                [sys.executable, "-c", IMPORT_MLFLOW],
                cwd=ROOT,
                env=os.environ,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
        )
        for _ in range(repeats)
    )
    with tempfile.TemporaryDirectory(prefix="seed-runs-") as tmp:
        work = Path(tmp)
        # The store's tables are created once, not inside a timed run.
        pipeline_warm = [
            sys.executable,
            "-c",
            "import mlflow; mlflow.MlflowClient().search_experiments()",
        ]
        timed(pipeline_warm, _store_env(work), work / "warm.log")
        for name in [] if args.study_only else args.only or EXPERIMENTS:
            script, preset, epochs = EXPERIMENTS[name]
            runs: dict[str, list[dict]] = {"baseline": [], "pipeline": [], "pipeline_off": []}
            for i in range(repeats):
                # Interleaved, so that a slow spell of the machine touches all three alike.
                runs["baseline"].append(
                    baseline(script, work, f"{name}-base-{i}", args.smoke, epochs)
                )
                runs["pipeline"].append(
                    pipeline(preset, work, f"{name}-on-{i}", args.smoke, True, epochs)
                )
                runs["pipeline_off"].append(
                    pipeline(preset, work, f"{name}-off-{i}", args.smoke, False, epochs)
                )
                print(f"{name} repeat {i + 1}/{repeats} done", file=sys.stderr, flush=True)
            stats = {
                kind: {k: summary(samples, k) for k in samples[0]} for kind, samples in runs.items()
            }
            base, pipe, off = stats["baseline"], stats["pipeline"], stats["pipeline_off"]
            ratios = {
                "fit": pipe["fit_seconds"]["median"] / base["fit_seconds"]["median"],
                "process": pipe["process_seconds"]["median"] / base["process_seconds"]["median"],
                # Minimums: the least disturbed run of each, for a machine with slow spells.
                "fit_min": pipe["fit_seconds"]["min"] / base["fit_seconds"]["min"],
                "process_min": pipe["process_seconds"]["min"] / base["process_seconds"]["min"],
                # What logging and the report add, as a share of the pipeline's fit time.
                "tracking_fit": (pipe["fit_seconds"]["median"] - off["fit_seconds"]["median"])
                / off["fit_seconds"]["median"],
                "tracking_process": (
                    pipe["process_seconds"]["median"] - off["process_seconds"]["median"]
                )
                / pipe["fit_seconds"]["median"],
            }
            accuracy_gap = {
                k: (pipe[k]["median"] - base[k]["median"]) * 100
                for k in ("val_accuracy", "test_accuracy")
                if base[k]["median"] is not None and pipe[k]["median"] is not None
            }
            results["experiments"][name] = {
                "runs": runs,
                "stats": stats,
                "ratios": ratios,
                "accuracy_gap_points": accuracy_gap,
            }
        if not args.no_study:
            runs = {"one_at_a_time": [], "parallel": []}
            for i in range(repeats):
                runs["one_at_a_time"].append(study(work, f"study-seq-{i}", args.smoke, False))
                runs["parallel"].append(study(work, f"study-par-{i}", args.smoke, True))
                print(f"study repeat {i + 1}/{repeats} done", file=sys.stderr, flush=True)
            stats = {
                kind: {k: summary(samples, k) for k in samples[0]} for kind, samples in runs.items()
            }
            seq, par = stats["one_at_a_time"], stats["parallel"]
            results["study"] = {
                "runs": runs,
                "stats": stats,
                # The parallel wall time over the fits of one job at a time (target <= 0.6).
                "parallel_ratio": par["process_seconds"]["median"]
                / seq["sum_fit_seconds"]["median"],
                "parallel_ratio_min": par["process_seconds"]["min"] / seq["sum_fit_seconds"]["min"],
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.smoke:
        print(SMOKE_NOTE)
    print(table(results))
    print(f"importing MLflow, once TensorFlow is loaded: {results['import_mlflow_seconds']:.2f} s")
    print(f"\nwritten to {args.out}")
    if args.smoke:
        print(SMOKE_NOTE)
    return 0


def table(results: dict) -> str:
    def f(x, spec=".2f"):
        return "-" if x is None else format(x, spec)

    lines = [
        f"{'experiment':<14}{'run':<14}{'fit s min/med':>16}{'process s min/med':>20}"
        f"{'val acc':>9}{'test acc':>9}{'peak MB':>9}",
    ]
    for name, exp in results["experiments"].items():
        for kind, st in exp["stats"].items():
            lines.append(
                f"{name:<14}{kind:<14}"
                f"{f(st['fit_seconds']['min']):>7} / {f(st['fit_seconds']['median']):<6}"
                f"{f(st['process_seconds']['min']):>10} / {f(st['process_seconds']['median']):<7}"
                f"{f(st['val_accuracy']['median'], '.4f'):>9}"
                f"{f(st['test_accuracy']['median'], '.4f'):>9}"
                f"{f(st['peak_rss_mb']['median'], '.0f'):>9}"
            )
        r, gap = exp["ratios"], exp["accuracy_gap_points"]
        lines.append(
            f"{'':<14}ratios (medians): fit {r['fit']:.3f}, process {r['process']:.3f} "
            f"(minimums: {r['fit_min']:.3f}, {r['process_min']:.3f}); "
            f"tracking+report add {100 * r['tracking_fit']:+.1f}% to fit, "
            f"{100 * r['tracking_process']:.1f}% of fit to the process; "
            + ", ".join(f"{k} {v:+.2f} pts" for k, v in gap.items())
        )
        parts = exp["stats"]["pipeline"]
        lines.append(
            f"{'':<14}pipeline's steps after training (medians): "
            + ", ".join(f"{k.removesuffix('_seconds')} {parts[k]['median']:.2f} s" for k in PARTS)
        )
        figures = [k for k in parts if k.startswith("figure_")]
        if figures:
            lines.append(
                f"{'':<14}recorder's figures (medians): "
                + ", ".join(
                    f"{k.removeprefix('figure_')} {parts[k]['median']:.2f} s" for k in figures
                )
            )
    if "study" in results:
        st = results["study"]
        lines.append(
            f"\nstudy (2x2x5 seeds): {'wall s min/med':>16}{'fits s min/med':>18}"
            f"{'wall - fits s min/med':>24}{'peak MB':>9}"
        )
        for kind, s in st["stats"].items():
            lines.append(
                f"{kind:<20}"
                f"{f(s['process_seconds']['min']):>7} / {f(s['process_seconds']['median']):<7}"
                f"{f(s['sum_fit_seconds']['min']):>8} / {f(s['sum_fit_seconds']['median']):<7}"
                f"{f(s['overhead_seconds']['min']):>12} / {f(s['overhead_seconds']['median']):<9}"
                f"{f(s['peak_rss_mb']['median'], '.0f'):>9}"
            )
        lines.append(
            f"parallel wall / one-at-a-time fits: {st['parallel_ratio']:.3f} "
            f"(minimums: {st['parallel_ratio_min']:.3f})"
        )
    lines += targets(results)
    return "\n".join(lines)


# Each target: what it bounds, its limit, and where the measurement is in the results.
TARGETS = (
    (
        "study's fixed cost, wall - fits, one at a time (s)",
        10.0,
        ("study", "one_at_a_time", "overhead_seconds"),
    ),
    ("study's peak memory, one at a time (MB)", 1800.0, ("study", "one_at_a_time", "peak_rss_mb")),
    (
        "a single run's peak memory, trainer and recorder (MB)",
        1400.0,
        ("single", "pipeline", "peak_rss_mb"),
    ),
)


def targets(results: dict) -> list[str]:
    """Each target whose measurement this run made, against its median: met or missed."""
    single = [
        e["stats"]["pipeline"]["peak_rss_mb"]["median"] for e in results["experiments"].values()
    ]
    found = {"single": {"pipeline": {"peak_rss_mb": {"median": max(single)}}}} if single else {}
    if "study" in results:
        found["study"] = results["study"]["stats"]
    lines = []
    for what, limit, (part, kind, key) in TARGETS:
        if part not in found:
            continue
        value = found[part][kind][key]["median"]
        verdict = "met" if value <= limit else "missed"
        lines.append(f"target: {what} at most {limit:g}: {value:.1f} ({verdict})")
    return ["", *lines] if lines else []


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark script keeps working (its full run is by hand: see the README)."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow


def _smoke(script: str, out, real_data, timeout: int, *args: str) -> subprocess.CompletedProcess:
    """Run `benchmarks/<script> --smoke`, writing its JSON to `out`; it must succeed."""
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--smoke", "--out", str(out), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PIPELINE_DATA_DIR": str(real_data)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_smoke_benchmark_writes_its_table_and_json(real_data, tmp_path):
    out = tmp_path / "seed_runs.json"
    proc = _smoke("seed_runs.py", out, real_data, timeout=900)
    assert "ratios (medians): fit" in proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("SMOKE RUN") and lines[-1].startswith("SMOKE RUN")
    results = json.loads(out.read_text())
    assert results["smoke"] is True
    assert set(results["experiments"]) == {"quick_look", "linear_mnist", "ann_fashion"}
    for exp in results["experiments"].values():
        assert set(exp["runs"]) == {"baseline", "pipeline", "pipeline_off"}
        for kind in exp["runs"].values():
            (sample,) = kind
            assert sample["process_seconds"] > sample["fit_seconds"] > 0
            assert 0.05 < sample["test_accuracy"] <= 1
        assert exp["ratios"]["fit"] > 0 and exp["ratios"]["process"] > 0
    linear = results["experiments"]["linear_mnist"]["stats"]
    assert linear["pipeline"]["val_accuracy"]["median"] is not None
    # The pipeline says where its time after training went: handing records over, and the
    # recorder process's own part, which the report makes longest.
    for part in ("record_seconds", "report_seconds", "recorder_seconds"):
        assert linear["pipeline"][part]["median"] > 0, part
    assert (
        linear["pipeline"]["recorder_seconds"]["median"]
        > linear["pipeline_off"]["recorder_seconds"]["median"]
    )
    assert "pipeline's steps after training (medians): record" in proc.stdout
    assert results["import_mlflow_seconds"] > 0
    # Each figure's time, from the recorder; each run's peak memory.
    for figure in ("samples", "predictions", "mistakes", "weights", "html"):
        assert linear["pipeline"][f"figure_{figure}"]["median"] > 0, figure
    assert linear["pipeline"]["peak_rss_mb"]["median"] > 100
    # The study, one job at a time and in parallel: every job's fit counted.
    study = results["study"]
    for kind in ("one_at_a_time", "parallel"):
        (sample,) = study["runs"][kind]
        assert sample["jobs"] == 8  # 2 models x 2 optimizers x 2 seeds in the smoke run
        assert sample["process_seconds"] > sample["sum_fit_seconds"] > 0
    assert study["parallel_ratio"] > 0
    assert "parallel wall / one-at-a-time fits" in proc.stdout
    # Each target is printed against its measurement.
    for what in ("study's fixed cost", "study's peak memory", "a single run's peak memory"):
        (line,) = [x for x in lines if x.startswith(f"target: {what}")]
        assert line.endswith(("(met)", "(missed)")), line


def test_smoke_gil_benchmark_times_fit_alone_and_beside_python(real_data, tmp_path):
    out = tmp_path / "gil.json"
    proc = _smoke("gil.py", out, real_data, timeout=300)
    assert "a Python thread" in proc.stdout
    # A smoke run's figures are said to mean nothing, first and last.
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("SMOKE RUN") and lines[-1].startswith("SMOKE RUN")
    results = json.loads(out.read_text())
    assert results["images"] == 2000 and results["epochs"] == 1
    assert set(results["fit_seconds"]) == {"nothing", "thread", "process"}
    assert all(len(v) == 1 and v[0] > 0 for v in results["fit_seconds"].values())
    assert results["ratio_to_alone"]["nothing"] == 1.0


def test_smoke_convnet_benchmark_runs_both_sides(real_data, tmp_path):
    out = tmp_path / "keras_convnet.json"
    proc = _smoke("keras_convnet.py", out, real_data, 600, "--precisions", "float32,mixed_bfloat16")
    assert "ratio (medians): fit" in proc.stdout
    assert "(pipeline mixed_bfloat16 / baseline)" in proc.stdout
    results = json.loads(out.read_text())
    arms = {"baseline", "pipeline", "pipeline mixed_bfloat16"}
    assert results["smoke"] is True and set(results["runs"]) == arms
    assert set(results["fit_ratios"]) == arms - {"baseline"}
    for runs in results["runs"].values():
        assert 0 < runs[0]["test_accuracy"] <= 1 and runs[0]["fit_seconds"] > 0


def test_smoke_checkpoint_benchmark_times_both_and_sees_the_checkpoint(real_data, tmp_path):
    out = tmp_path / "checkpoint.json"
    proc = _smoke("checkpoint.py", out, real_data, 300)
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("SMOKE RUN") and lines[-1].startswith("SMOKE RUN")
    assert "ratio of medians" in proc.stdout
    results = json.loads(out.read_text())
    assert results["smoke"] is True and set(results["runs"]) == {"true", "false"}
    # The checkpoint was written while the run trained (and is not part of the model's answer).
    assert results["epoch_bytes"] > 10_000
    on, off = results["runs"]["true"][0], results["runs"]["false"][0]
    assert on["test_accuracy"] == off["test_accuracy"] and on["epoch_bytes"] > 0
    assert off["epoch_bytes"] == 0


def test_smoke_floor_benchmark_times_the_loop_and_each_backend(real_data, tmp_path):
    out = tmp_path / "floor.json"
    proc = _smoke("floor.py", out, real_data, 300)
    assert "x floor" in proc.stdout and "target: the pipeline's fit at most 2.5x" in proc.stdout
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {"numpy", "tensorflow", "jax"}
    # The hand-written loop learns (chance is 0.1), so its time is a floor for real training.
    assert runs["numpy"][0]["test_accuracy"] > 0.3 and runs["numpy"][0]["fit_seconds"] > 0
    for backend in ("tensorflow", "jax"):
        assert runs[backend][0]["test_accuracy"] > 0.3, backend

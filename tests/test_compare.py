"""The comparison, on a temporary store holding runs made by the pipeline itself."""

import csv
import io
import shutil

import pytest

from pipeline import compare, tracking
from pipeline.run import run
from tests.helpers import NO_REPORT, QUIET, make_config, tiny_overrides, write_tiny_dataset


@pytest.fixture(scope="module")
def three_runs_store(tmp_path_factory, empty_store):
    """A store holding linear-sgd, linear-adam (both validated) and ann-adam without
    validation, made once for the module."""
    home = tmp_path_factory.mktemp("three-runs")
    shutil.copyfile(empty_store, home / "mlflow.db")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    common = [
        *tiny_overrides(home / "data", write_tiny_dataset(home / "data")),
        f"tracking.uri={uri}",
        "trainer.epochs=2",
        *QUIET,
        *NO_REPORT,
    ]
    run(make_config([*common, "optimizer=sgd"]))
    run(make_config([*common, "optimizer=adam"]))
    run(make_config([*common, "model=ann", "optimizer=adam", "trainer.validation_split=0"]))
    return uri


@pytest.fixture
def three_runs(three_runs_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", three_runs_store)


def test_compare_an_experiment(three_runs):
    records = tracking.fetch_runs(experiment="mnist")
    assert len(records) == 3
    comp = compare.compare(records)

    accs = [row["test_accuracy"] for row in comp.rows]
    assert accs == sorted(accs, reverse=True)
    assert {row["run"] for row in comp.rows} == {"linear-sgd", "linear-adam", "ann-adam"}
    by_run = {row["run"]: row for row in comp.rows}
    assert by_run["linear-sgd"]["learning_rate"] == "0.01"
    assert by_run["ann-adam"]["params"] == "101770"
    assert by_run["ann-adam"]["val_accuracy"] is None
    assert by_run["linear-adam"]["epochs"] == "2"

    md_lines = comp.markdown.strip().splitlines()
    assert md_lines[0].startswith("| run | dataset | model | optimizer | learning_rate")
    assert len(md_lines) == 2 + 3
    assert [line.split("|")[1].strip() for line in md_lines[2:]] == [r["run"] for r in comp.rows]

    parsed = list(csv.DictReader(io.StringIO(comp.csv)))
    assert [r["run"] for r in parsed] == [r["run"] for r in comp.rows]
    assert float(parsed[0]["test_accuracy"]) == pytest.approx(comp.rows[0]["test_accuracy"])

    acc_ax, loss_ax = comp.figure.axes
    assert acc_ax.get_title() == "Validation accuracy"
    labels = sorted(line.get_label() for line in acc_ax.lines)
    assert labels == ["ann-adam-mnist (training)", "linear-adam-mnist", "linear-sgd-mnist"]
    for line in loss_ax.lines:
        assert list(line.get_xdata()) == [1, 2]


def test_cli_prints_the_table_and_writes_files(three_runs, tmp_path, capsys):
    assert compare.main(["mnist", "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| run | dataset |" in out and "linear-adam" in out
    for name in ("comparison_curves.png", "comparison.md", "comparison.csv"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0


def test_cli_names_what_is_missing(tmp_path, caplog):
    assert compare.main(["no-such-experiment", "--out", str(tmp_path)]) == 1
    assert "no experiment named 'no-such-experiment'" in caplog.text
    assert compare.main(["--out", str(tmp_path)]) == 1
    assert "no sweep found" in caplog.text

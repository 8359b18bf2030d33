"""The grouped comparison: groups by configuration, their spread, the verdicts, and where they
show (a sweep's parent run, `python -m pipeline.compare`)."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline.analysis import compare
from pipeline.cli import compare as compare_cli
from pipeline.config.naming import config_key, flatten
from pipeline.tracking import runs
from pipeline.training.job import run
from tests.helpers.cli import NO_REPORT, QUIET, make_config, run_main
from tests.helpers.data import tiny_overrides, write_tiny_dataset
from tests.helpers.stores import artifact_paths, sweep_runs


def params(*overrides):
    """A run's params as MLflow stores them: the flattened resolved config, as strings."""
    cfg = OmegaConf.to_container(make_config(list(overrides)), resolve=True)
    return {k: str(v) for k, v in flatten(cfg).items()}


def record(overrides, seed, test_accuracy, run_id=None, **metrics):
    p = params(*overrides, f"seed={seed}")
    curves = {"val_accuracy": (0.5, test_accuracy), "val_loss": (1.0, 0.5)}
    return runs.RunRecord(
        run_id=run_id or f"{'-'.join(overrides)}-{seed}",
        name="-".join(overrides),
        tags={"config_key": config_key(p)},
        params=p,
        metrics={
            "test_accuracy": test_accuracy,
            "val_accuracy": test_accuracy - 0.01,
            "test_loss": 1 - test_accuracy,
            "val_loss": 1.01 - test_accuracy,
            "fit_seconds": 2.0,
            "test_f1_3": test_accuracy - 0.02,
            **metrics,
        },
        curves=curves,
    )


def study(spread=0.001):
    """2 models x 2 optimizers x 3 seeds: ANN 5 points above linear, Adam 2 above SGD."""
    base = {("linear", "sgd"): 0.90, ("linear", "adam"): 0.92, ("ann", "sgd"): 0.95}
    base[("ann", "adam")] = 0.97
    noise = {1: 0.0, 2: spread, 3: -spread / 2}
    scale = {("linear", "sgd"): 1.0, ("linear", "adam"): -1.0, ("ann", "sgd"): 2.0}
    scale[("ann", "adam")] = 0.5
    return [
        record([f"model={m}", f"optimizer={o}"], seed, acc + scale[(m, o)] * noise[seed])
        for (m, o), acc in base.items()
        for seed in (1, 2, 3)
    ]


def test_runs_differing_only_in_seed_form_one_group():
    groups = compare.group_runs(study())
    assert [g.label for g in groups] == ["ann-adam", "ann-sgd", "linear-adam", "linear-sgd"]
    assert all(g.n == 3 and g.seeds == ["1", "2", "3"] for g in groups)
    # The group key is the run's config_key tag: the same for every seed.
    assert all(len({r.tags["config_key"] for r in g.records}) == 1 for g in groups)
    assert all(g.key == g.records[0].tags["config_key"] for g in groups)
    s = groups[0].summaries["test_accuracy"]
    assert s.mean == pytest.approx(np.mean([0.97, 0.9705, 0.96975]))
    assert s.ci[0] < s.mean < s.ci[1]
    md = compare.compare(study()).markdown.strip().splitlines()
    assert md[0].startswith("| configuration | n | test accuracy | 95% CI |")
    assert len(md) == 2 + 4  # header, rule, one row per configuration
    assert md[2].startswith("| ann-adam | 3 | 0.9701 ± 0.0004 | 0.9691 to 0.9710 |")


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("model.hidden_units", ("64", "128")),
        ("optimizer.learning_rate", ("0.1", "0.01")),
        ("trainer.batch_size", ("32", "128")),
        ("trainer.validation_split", ("0.1", "0.2")),
        ("trainer.epochs", ("3", "5")),  # not in the table: its last part
    ],
)
def test_a_comparison_label_names_a_setting_as_the_run_name_does(key, values):
    from pipeline.config.naming import run_name

    records = [record(["model=ann", f"{key}={v}"], 1, 0.9) for v in values]
    labels = {g.label for g in compare.group_runs(records)}
    assert labels == {run_name("ann-sgd", ["model=ann", f"{key}={v}"]) for v in values}


def test_two_configurations_times_three_seeds_give_two_rows_in_the_csv():
    records = [r for r in study() if r.params["optimizer.name"] == "adam"]
    rows = list(csv.DictReader(io.StringIO(compare.compare(records).csv)))
    assert [(r["configuration"], r["n"], r["seeds"]) for r in rows] == [
        ("ann-adam", "3", "1 2 3"),
        ("linear-adam", "3", "1 2 3"),
    ]
    assert float(rows[0]["test_accuracy_std"]) > 0
    assert float(rows[0]["test_f1_3_mean"]) == pytest.approx(
        float(rows[0]["test_accuracy_mean"]) - 0.02
    )


def test_a_clear_difference_and_a_null_one_in_words():
    records = study()
    # A fifth configuration: linear-adam at another learning rate, no better than 0.001.
    same = [0.9201, 0.9204, 0.9198]
    lr = ["model=linear", "optimizer=adam", "optimizer.learning_rate=0.002"]
    records += [record(lr, seed, acc) for seed, acc in zip((1, 2, 3), same, strict=True)]
    comp = compare.compare(records)
    sentences = {v.sentence.split(":")[0]: v for v in comp.verdicts}
    ann = sentences["ann beats linear (adam, lr=0.001, mnist)"]
    assert ann.test.name == "paired t-test over 3 seeds"
    assert ann.test.diff == pytest.approx(0.0502, abs=1e-4)
    assert ann.sentence.startswith(
        "ann beats linear (adam, lr=0.001, mnist): +5.02 points test accuracy "
        "(95% CI +4.74 to +5.31)"
    )
    assert "paired t-test over 3 seeds, p < 0.001 (Holm-adjusted p < 0.001)" in ann.sentence
    null = next(v for v in comp.verdicts if v.setting == "optimizer.learning_rate")
    assert null.sentence.startswith(
        "no difference detectable between lr=0.001 and lr=0.002 (linear, adam, mnist): +0.03"
    )
    assert null.p_holm >= null.test.p
    # Pairs differing in two settings get no verdict: 4 model/optimizer pairs, the lr pair,
    # and sgd (lr 0.01) against adam at lr 0.002: another optimizer, with its learning rate.
    assert len(comp.verdicts) == 6
    assert "adam lr=0.002 beats sgd lr=0.01 (linear, mnist): +1.99 points" in comp.verdicts_markdown
    saved = json.loads(comp.verdicts_json)
    assert {v["test"] for v in saved} == {"paired t-test over 3 seeds"}
    assert all(v["p_holm"] >= v["p"] for v in saved)


def test_unequal_seeds_use_welch_and_single_runs_say_n1():
    records = [r for r in study() if r.params["optimizer.name"] == "sgd"]
    records = [
        r for r in records if not (r.params["model.name"] == "linear" and r.params["seed"] == "3")
    ]
    (v,) = compare.compare(records).verdicts
    assert v.test.name == "Welch's t-test, n=3 vs n=2"
    single = [r for r in study() if r.params["seed"] == "1" and r.params["model.name"] == "ann"]
    single += [r for r in study() if r.params["model.name"] == "linear"][:3]
    comp = compare.compare(single)
    assert "n=1" in comp.markdown and "nan" not in comp.markdown.lower()
    by_setting = {v.setting: v for v in comp.verdicts}
    assert by_setting["model"].test.p is None
    assert "n=1 against n=3" in by_setting["model"].sentence
    assert "no per-example predictions" in by_setting["optimizer"].sentence
    assert "nan" not in comp.csv.lower()


def test_two_single_runs_get_mcnemar_on_their_predictions():
    a = record(["model=ann"], 1, 0.9, run_id="a")
    b = record(["model=linear"], 1, 0.8, run_id="b")
    labels = np.arange(100) % 10
    right_a = np.arange(100) < 90
    right_b = np.arange(100) < 80
    saved = {"a": (np.where(right_a, labels, (labels + 1) % 10), labels)}
    saved["b"] = (np.where(right_b, labels, (labels + 1) % 10), labels)
    (v,) = compare.compare([a, b], lambda r: saved.get(r.run_id)).verdicts
    assert v.test.name == "McNemar's exact test on 100 test examples"
    assert v.test.diff == pytest.approx(0.1)
    assert v.sentence.startswith(
        "ann beats linear (mnist): +10.00 points test accuracy (95% CI +4.12 to +15.88), "
        "McNemar's exact test on 100 test examples, p = 0.002"
    )
    # Without stored predictions, or on other test sets, it says why there is no test.
    (v,) = compare.compare([a, b], lambda r: None).verdicts
    assert v.test.p is None and "no per-example predictions" in v.test.why
    c = record(["dataset.limit=500"], 1, 0.8, run_id="c")
    d = record(["dataset.limit=600"], 1, 0.8, run_id="d")
    (v,) = compare.compare([c, d], lambda r: saved["a"]).verdicts
    assert v.setting == "dataset.limit"
    assert "different test sets: McNemar's test does not apply" in v.sentence


def test_curves_band_per_configuration_with_whole_epochs():
    fig = compare.compare(study()).figure
    acc_ax, _ = fig.axes
    assert sorted(line.get_label() for line in acc_ax.lines) == [
        "ann-adam",
        "ann-sgd",
        "linear-adam",
        "linear-sgd",
    ]
    assert len(acc_ax.collections) == 4  # one ±1 std band each
    assert list(acc_ax.lines[0].get_xdata()) == [1, 2]
    ticks = [t for t in acc_ax.get_xticks() if 1 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_curves_of_runs_stopped_early_go_to_the_longest_run():
    records = [record(["model=ann"], seed, 0.9) for seed in (1, 2, 3)]
    lengths = (2, 4, 5)  # early stopping ended two of the three runs sooner
    for r, n in zip(records, lengths, strict=True):
        r.curves["val_accuracy"] = tuple(0.5 + 0.1 * k for k in range(n))
    fig = compare.compare(records).figure
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(line.get_ydata(), [0.5, 0.6, 0.7, 0.8, 0.9])


def test_parent_metrics_per_group():
    metrics = compare.compare(study()).parent_metrics()
    assert metrics["ann-adam.test_accuracy_mean"] == pytest.approx(0.970083, abs=1e-5)
    assert metrics["ann-adam.test_accuracy_std"] > 0
    assert metrics["linear-sgd.n"] == 3


def test_a_study_on_tiny_data_read_back_from_its_parent(tiny_data, isolated_tracking, tmp_path):
    sweep = tmp_path / "sweep"
    code = run_main(
        [
            "-m",
            "model=linear,ann",
            "seed=1,2",
            *tiny_data,
            "trainer.epochs=2",
            *QUIET,
            *NO_REPORT,
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert code == 0
    parent, children = sweep_runs(isolated_tracking)
    names = [c.info.run_name for c in children]
    # named by model, optimizer and what was overridden (the data's path is not a setting)
    assert names == [f"{c} epochs=2 seed={s}" for c in ("ann-sgd", "linear-sgd") for s in (1, 2)]
    keys = {c.info.run_name.split()[0] + c.info.run_name[-1]: c.data.tags["config_key"]
            for c in children}  # fmt: skip
    assert keys["ann-sgd1"] == keys["ann-sgd2"] != keys["linear-sgd1"]
    client = MlflowClient(isolated_tracking)
    files = {p.split("/")[-1] for p in artifact_paths(client, parent.info.run_id, "comparison")}
    assert files == {
        "comparison.md",
        "comparison.csv",
        "verdicts.md",
        "verdicts.json",
        "comparison_curves.png",
        "comparison.html",
    }
    rows = (sweep / "comparison" / "comparison.md").read_text().strip().splitlines()[2:]
    assert sorted(r.split("|")[1:3] for r in rows) == [
        [" ann-sgd ", " 2 "],
        [" linear-sgd ", " 2 "],
    ]
    (verdict,) = json.loads((sweep / "comparison" / "verdicts.json").read_text())
    assert verdict["setting"] == "model" and verdict["test"] == "paired t-test over 2 seeds"
    assert "paired t-test over 2 seeds" in (sweep / "comparison" / "comparison.html").read_text()
    assert parent.data.metrics["ann-sgd.n"] == 2
    assert "ann-sgd.test_accuracy_mean" in parent.data.metrics
    # Every run keeps its test predictions, for McNemar's test.
    local = runs.prediction_loader(None)(runs.fetch_runs(experiment="mnist")[0])
    assert local is not None and local[0].shape == local[1].shape == (50,)


def test_a_seed_listed_twice_stops_the_sweep_before_any_job(tiny_data, tmp_path, capsys):
    code = run_main(["-m", "seed=1,2,2", *tiny_data, f"hydra.sweep.dir={tmp_path / 's'}"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1]
        == "error: seed=1,2,2 lists 2 more than once: each value would run, and count, twice"
    )
    assert not (tmp_path / "s").exists()


def test_failed_children_are_left_out_and_counted(tiny_data, isolated_tracking, tmp_path):
    sweep = tmp_path / "sweep"
    code = run_main(
        [
            "-m",
            "optimizer.learning_rate=0.01,1e37",
            *tiny_data,
            "trainer.epochs=2",
            *QUIET,
            *NO_REPORT,
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert code != 0  # the diverged job fails the sweep, after the comparison
    text = (sweep / "comparison" / "verdicts.md").read_text()
    assert "1 run(s) did not finish and are left out." in text
    assert len((sweep / "comparison" / "comparison.md").read_text().strip().splitlines()) == 3


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
    records = runs.fetch_runs(experiment="mnist")
    assert len(records) == 3
    comp = compare.compare(records)
    assert [g.label for g in comp.groups] == sorted(
        [g.label for g in comp.groups],
        key=lambda label: (
            -next(g for g in comp.groups if g.label == label).summaries["test_accuracy"].mean
        ),
    )
    # Three configurations: optimizer and (model with validation split) differ.
    assert {g.n for g in comp.groups} == {1}
    by_label = {g.label.split()[0]: g for g in comp.groups}
    assert set(by_label) == {"linear-sgd", "linear-adam", "ann-adam"}
    assert "val_accuracy" not in by_label["ann-adam"].summaries
    acc_ax, _ = comp.figure.axes
    labels = [line.get_label() for line in acc_ax.lines]
    assert sum(label.endswith("(training)") for label in labels) == 1


def test_cli_prints_the_table_and_the_verdicts(three_runs, tmp_path, capsys):
    assert compare_cli.main(["mnist", "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| configuration | n |" in out and "linear-adam" in out
    assert "# Verdicts" in out
    assert "McNemar's exact test on 50 test examples" in out  # linear-sgd vs linear-adam
    for name in ("comparison_curves.png", "comparison.md", "comparison.csv", "verdicts.md"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0


def test_cli_names_what_is_missing(tmp_path, capsys):
    assert compare_cli.main(["no-such-experiment", "--out", str(tmp_path)]) == 1
    assert "error: no experiment named 'no-such-experiment'" in capsys.readouterr().err
    assert compare_cli.main(["--out", str(tmp_path)]) == 1
    assert "error: no sweep found" in capsys.readouterr().err


def test_cli_writes_files_only_when_asked(three_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert compare_cli.main(["mnist"]) == 0
    assert "| configuration | n |" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]  # the fixture's store


def test_cli_does_not_make_a_store_where_none_was(tmp_path, capsys):
    db = tmp_path / "none" / "mlflow.db"
    assert compare_cli.main(["--tracking-uri", f"sqlite:///{db}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: no tracking store at {db}") and err.count("\n") == 1
    assert not db.exists() and not db.parent.exists()

"""Cluster launchers: Submitit runs each job as its own process, as on a SLURM cluster."""

from tests.conftest import cli, runs_in


def test_submitit_jobs_in_other_processes_find_the_parent(tiny_data, isolated_tracking, tmp_path):
    out = cli(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            "model=linear,ann",
            *tiny_data,
            "trainer.epochs=1",
            "trainer.verbose=0",
            "tracking.log_model=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        timeout=600,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    runs = runs_in(isolated_tracking)
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == ["ann-sgd", "linear-sgd"]
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    # Submitit's own record of each job: they ran outside the launching process.
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))

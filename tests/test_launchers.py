"""Cluster launchers: Submitit runs each job as its own process, as on a SLURM cluster."""

import pytest

from tests.helpers import QUIET, cli, sweep_runs

pytestmark = pytest.mark.cli


def test_submitit_jobs_in_other_processes_find_the_parent(tiny_data, isolated_tracking, tmp_path):
    out = cli(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            "model=linear,ann",
            *tiny_data,
            "trainer.epochs=1",
            *QUIET,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        timeout=600,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    parent, children = sweep_runs(isolated_tracking)
    assert parent.info.status == "FINISHED"
    assert [r.info.run_name for r in children] == ["ann-sgd", "linear-sgd"]
    assert all(r.info.status == "FINISHED" for r in children)
    # Submitit's own record of each job: they ran outside the launching process.
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))

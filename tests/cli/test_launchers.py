"""Cluster launchers: Submitit runs each job as its own process, as on a SLURM cluster; Ray runs
them on a Ray cluster started here on 127.0.0.1."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import QUIET, cli
from tests.helpers.services import free_port, require_system
from tests.helpers.stores import sweep_runs

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
    assert [r.info.run_name for r in children] == ["ann-sgd epochs=1", "linear-sgd epochs=1"]
    assert all(r.info.status == "FINISHED" for r in children)
    # Submitit's own record of each job: they ran outside the launching process.
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))


@pytest.mark.system
def test_ray_jobs_on_a_running_cluster_find_the_parent(tiny_data, isolated_tracking, tmp_path):
    """The README's Ray command against `ray start --head` on 127.0.0.1 (the `ray` extra)."""
    require_system(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher"), "the ray extra")
    ray = Path(sys.executable).with_name("ray")
    port = free_port()
    env = {**os.environ, "PATH": f"{ray.parent}{os.pathsep}{os.environ['PATH']}"}
    # Ray's sockets need a short folder; the cluster's workers read the project as installed.
    temp = Path(f"/tmp/ray-{os.getpid()}")
    start = [str(ray), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
             f"--temp-dir={temp}"]  # fmt: skip
    started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    try:
        out = cli(
            [
                "-m",
                "hydra/launcher=ray",
                f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
                # Ray refuses a memory size when it joins a running cluster (hydra#2893).
                "+hydra.launcher.ray.init.object_store_memory=null",
                "model=linear,ann",
                *tiny_data,
                "trainer.epochs=1",
                *QUIET,
                # The cluster's workers do not share this process's environment.
                f"tracking.uri={isolated_tracking}",
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
            ],
            env=env,
            timeout=600,
        )
    finally:
        subprocess.run([str(ray), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    parent, children = sweep_runs(isolated_tracking)
    assert parent.info.status == "FINISHED"
    assert [r.info.run_name for r in children] == ["ann-sgd epochs=1", "linear-sgd epochs=1"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert "Connected to Ray cluster" in out.stdout + out.stderr

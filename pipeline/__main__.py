"""Entry point: ``python -m pipeline [overrides]``; ``-m`` for a sweep.

Kept thin so that ``--help`` and ``--cfg job`` answer without importing TensorFlow or MLflow.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.config import register
from pipeline.errors import PipelineError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

log = logging.getLogger("pipeline")

register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one job and return its objective (validation accuracy, else test accuracy)."""
    from pipeline.run import run_from_hydra

    try:
        return run_from_hydra(cfg)
    except PipelineError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()

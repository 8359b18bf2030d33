"""Entry point: ``python -m pipeline [overrides]``; ``-m`` for a sweep.

Kept thin so that ``--help`` and ``--cfg job`` answer without importing TensorFlow or MLflow.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.config import register

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one job and return its objective (validation accuracy, else test accuracy)."""
    from pipeline.run import run_from_hydra

    return run_from_hydra(cfg)


if __name__ == "__main__":
    main()

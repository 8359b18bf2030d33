"""Stage `report`: figures of a run, returned as matplotlib Figures (never written here)."""

from __future__ import annotations

# Figures are built from matplotlib.figure.Figure, not pyplot: they render with Agg and no
# window can ever open, whatever backend the environment selects.
from matplotlib.figure import Figure

from pipeline.config import ReportConfig
from pipeline.stages.fit import History


def learning_curves(history: History, title: str) -> Figure:
    """Accuracy and loss per epoch, training vs validation (training only without validation)."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    epochs = range(1, history.epochs + 1)
    for ax, name in zip(fig.subplots(1, 2), ("accuracy", "loss"), strict=True):
        ax.plot(epochs, history.metrics[name], "o-", ms=3, label=f"training {name}")
        if history.has_validation:
            ax.plot(epochs, history.metrics[f"val_{name}"], "s-", ms=3, label=f"validation {name}")
        ax.set_title(
            f"{'Training and validation' if history.has_validation else 'Training'} {name}"
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def report(cfg: ReportConfig, history: History, title: str) -> dict[str, Figure]:
    """The run's figures by artifact file name.

    Args:
        title: shown on each figure, e.g. "linear / sgd / mnist".
    """
    figures: dict[str, Figure] = {}
    if cfg.learning_curves:
        figures["learning_curves.png"] = learning_curves(history, title)
    return figures

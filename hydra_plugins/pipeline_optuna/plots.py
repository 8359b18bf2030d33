"""The study's own figures, drawn by Optuna's matplotlib backend for the parent run: the
optimization history and the parameters' importances (for each objective), and the Pareto
front of a multi-objective study."""

import logging
import warnings
from pathlib import Path

from pipeline.errors import first_line

log = logging.getLogger(__name__)


def draw(study, objectives: list[str], folder: Path) -> dict[str, str]:
    """Each figure the study can give, as a PNG in `folder`: {name: path}. A figure the study
    cannot give yet (importances need two finished trials and a parameter) is left out, with
    the reason in the log; a search never fails for a figure."""
    import matplotlib

    matplotlib.use("Agg")  # files only, whatever display there is
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis
    from optuna.trial import TrialState

    finished = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not finished:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    figures = {}
    for i, name in enumerate(objectives):
        how = {"target_name": name} | ({"target": _nth(i)} if len(objectives) > 1 else {})
        figures[f"history_{name}"] = (vis.plot_optimization_history, how)
        figures[f"importances_{name}"] = (vis.plot_param_importances, how)
    if len(objectives) > 1:
        figures["pareto_front"] = (vis.plot_pareto_front, {"target_names": objectives})
    drawn = {}
    for name, (plot, how) in figures.items():
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore")
                ax = plot(study, **how)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            path = folder / f"{name}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            drawn[name] = str(path)
        except Exception as exc:  # a figure must not fail the search
            first = first_line(exc) or type(exc).__name__
            log.info("search figure %s not drawn: %s", name, first)
            plt.close("all")
    return drawn


def _nth(i: int):
    return lambda trial: trial.values[i]

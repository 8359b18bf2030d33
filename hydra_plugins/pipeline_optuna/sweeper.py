"""Hydra's `optuna` sweeper on current Optuna: a study that lives in its storage (in memory, a
database, or a journal file for a cluster's shared file system), shared by every process
started with the same study name and storage, resumed when started again, trials pruned by
epoch. Trials are launched through Hydra's launcher, so the basic, joblib, Submitit and Ray
launchers all run them.

    python -m pipeline hparams_search=optuna [hydra.sweeper.storage=sqlite:////abs/optuna.db]

Each process asks the study for `n_jobs` trials at a time, launches them as one batch, and tells
the study how each ended: its objectives (the job's return value), pruned, or failed. It runs
`n_trials` trials; other processes on the same study add theirs. The space is parsed in
`space`; the sampler, pruner and storage are made in `samplers`; the figures in `plots`.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without registering them
# in sys.modules, and dataclasses cannot resolve string annotations there.
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

from hydra_plugins.pipeline_optuna import plots, space
from hydra_plugins.pipeline_optuna.samplers import (
    SAMPLERS,
    deferred,
    grid_size,
    is_grid,
    make_pruner,
    make_storage,
    spec,
)
from hydra_plugins.pipeline_optuna.space import SearchError
from pipeline.errors import first_line
from pipeline.tracking.interrupts import held

__all__ = ["IN_MEMORY", "OptunaSweeper", "SearchError", "make_pruner", "make_storage"]

log = logging.getLogger(__name__)

RESULT_FILE = "optimization_results.yaml"
# What a search can optimise: the job's final metrics on the training and validation data,
# its fit time and its model's size (the test set stays out of the choice).
OBJECTIVES = ("val_accuracy", "val_loss", "accuracy", "loss", "fit_seconds", "num_params")
# Studies of this process by name, for jobs run in this process when the study is in memory.
IN_MEMORY: dict[str, Any] = {}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.pipeline_optuna.sweeper.OptunaSweeper"
    # The sampler's and pruner's `_target_` mappings reach the sweeper as config, made by it
    # (with the seed it derives), not by Hydra.
    _recursive_: bool = False
    # maximize or minimize, or a list of them, one per objective
    direction: Any = "maximize"
    # the metrics the directions apply to (see OBJECTIVES); null: [val_accuracy]
    objectives: Any = None
    study_name: Optional[str] = None  # noqa: UP045 (evaluated by OmegaConf)
    # null: in memory; sqlite:////abs/optuna.db, postgresql+psycopg2://...; journal:/path/file
    storage: Optional[str] = None  # noqa: UP045
    n_trials: int = 20  # trials this process runs (other processes on the study add theirs)
    n_jobs: int = 1  # trials asked for at once, and launched together
    max_failure_rate: float = 1.0
    # a short name (samplers.SAMPLERS) or {_target_: optuna.samplers.X, its options}
    sampler: Any = "tpe"
    seed: Optional[int] = None  # noqa: UP045
    # a short name (samplers.PRUNERS) or {_target_: optuna.pruners.X, its options}
    pruner: Any = "median"
    # The median pruner compares from this epoch on, once this many trials have finished.
    pruner_warmup_epochs: int = 1
    pruner_startup_trials: int = 3
    params: dict[str, str] = field(default_factory=dict)
    # More of the space for the chosen model only, by its name: the keys of its own builder.
    model_params: dict[str, dict[str, str]] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf)


def _plain(value: Any) -> Any:
    """An OmegaConf node as plain Python (a short name stays a string)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


class OptunaSweeper(Sweeper):
    def __init__(self, **conf: Any) -> None:
        self.conf = OptunaSweeperConf(**{k: _plain(v) for k, v in conf.items()})
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_idx = 0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # --- the study ------------------------------------------------------------------------

    @property
    def directions(self) -> list[str]:
        d = self.conf.direction
        return [str(x) for x in d] if isinstance(d, list | tuple) else [str(d)]

    @property
    def objectives(self) -> list[str]:
        names = self.conf.objectives
        if names is None:
            return ["val_accuracy"]
        return [str(x) for x in names] if isinstance(names, list | tuple) else [str(names)]

    def _check(self) -> None:
        c = self.conf
        if c.n_trials < 1:
            raise SearchError(f"hydra.sweeper.n_trials={c.n_trials} is invalid: expected >= 1")
        if c.n_jobs < 1:
            raise SearchError(f"hydra.sweeper.n_jobs={c.n_jobs} is invalid: expected >= 1")
        for d in self.directions:
            if d not in ("maximize", "minimize"):
                raise SearchError(f"hydra.sweeper.direction={d}: expected maximize or minimize")
        for name in self.objectives:
            if name not in OBJECTIVES:
                raise SearchError(
                    f"hydra.sweeper.objectives: {name} is not one a search takes "
                    f"({', '.join(OBJECTIVES)}; the test set stays out of the choice)"
                )
        if len(self.directions) != len(self.objectives):
            raise SearchError(
                f"hydra.sweeper.direction has {len(self.directions)} entries and "
                f"hydra.sweeper.objectives {len(self.objectives)}: one direction per objective"
            )
        spec(c.sampler, "sampler", SAMPLERS)
        if len(self.objectives) == 1:
            make_pruner(c.pruner, c.pruner_warmup_epochs, c.pruner_startup_trials)

    def _pruner_spec(self) -> Any:
        """The pruner as the jobs are told it: none for a multi-objective study, which Optuna
        does not prune."""
        return self.conf.pruner if len(self.objectives) == 1 else "none"

    def _space(self, arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The search space (params, the model's own, and sweep overrides) and the fixed
        overrides."""
        model = OmegaConf.select(self.config, "model.name") if self.config is not None else None
        own = (self.conf.model_params or {}).get(model) or {}
        entries = [f"{k}={v}" for k, v in {**(self.conf.params or {}), **own}.items()]
        return space.parse(entries, arguments, self.conf.seed)

    def _study(self, searched: dict[str, Any]):
        import optuna

        storage = make_storage(self.conf.storage)
        name = self.conf.study_name
        c = self.conf
        try:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                directions=self.directions,
                sampler=deferred(c.sampler, c.seed, searched),
                pruner=make_pruner(
                    self._pruner_spec(), c.pruner_warmup_epochs, c.pruner_startup_trials
                ),
                load_if_exists=storage is not None,
            )
        except SearchError:
            raise
        except Exception as exc:
            first = first_line(exc) or type(exc).__name__
            raise SearchError(
                f"hydra.sweeper.storage={self.conf.storage} does not answer: {first}"
            ) from exc
        found = [d.name.lower() for d in study.directions]
        if found != self.directions:
            raise SearchError(
                f"study {name!r} in {self.conf.storage} was made to {', '.join(found)}; Optuna "
                "cannot change a study's directions: choose another hydra.sweeper.study_name"
            )
        self._check_space(study, searched)
        if storage is None:
            IN_MEMORY[study.study_name] = study
        return study

    def _check_space(self, study, searched: dict[str, Any]) -> None:
        """An existing study searched another space: its trials would not compare."""
        for trial in study.get_trials(deepcopy=False):
            if not trial.distributions:
                continue
            if set(trial.distributions) != set(searched) or any(
                trial.distributions[k] != searched[k] for k in searched
            ):
                raise SearchError(
                    f"study {study.study_name!r} in {self.conf.storage} searched another space "
                    f"({', '.join(sorted(trial.distributions))}); its trials would not compare "
                    "with these: choose another hydra.sweeper.study_name"
                )
            return

    def _ask(self, study, searched: dict[str, Any]):
        """A new trial with the space's parameters drawn."""
        trial = study.ask()
        space.suggest(trial, searched)
        return trial

    # --- the search ---------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        assert self.config is not None and self.launcher is not None
        self._check()
        searched, fixed = self._space(arguments)
        n_trials = self.conf.n_trials
        if is_grid(self.conf.sampler):  # every point once, and no more
            n_trials = min(n_trials, grid_size(searched))
        study = self._study(searched)
        storage = self.conf.storage
        log.info(
            "Optuna %s study %r (%s, %s): %d trials there already; this process runs %d, "
            "%d at a time",
            optuna.__version__,
            study.study_name,
            storage or "in memory",
            spec(self.conf.sampler, "sampler", SAMPLERS)[0].rsplit(".", 1)[-1],
            len(study.trials),
            n_trials,
            self.conf.n_jobs,
        )
        failed: dict[int, str] = {}
        done = 0
        while done < n_trials:
            batch = min(self.conf.n_jobs, n_trials - done)
            trials: list = []
            try:
                with held():  # a trial asked is launched or told FAIL, never left RUNNING
                    trials = [self._ask(study, searched) for _ in range(batch)]
                    overrides = [tuple(fixed + self._trial_overrides(study, t)) for t in trials]
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException:  # Ctrl-C, SIGTERM: the study keeps no trial RUNNING forever
                with held():
                    for trial in trials:
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            self.job_idx += len(returns)
            with held():  # every trial of the batch told, or none
                for trial, ret in zip(trials, returns, strict=True):
                    error = self._tell(study, trial, ret)
                    if error is not None:
                        failed[trial.number] = error
                        log.warning("trial %d failed: %s", trial.number, error)
            done += batch
            if len(failed) / done > self.conf.max_failure_rate:
                raise SearchError(
                    f"{len(failed)} of {done} trials failed, more than "
                    f"hydra.sweeper.max_failure_rate={self.conf.max_failure_rate}"
                )
        self._write_result(study, failed)

    def _trial_overrides(self, study, trial) -> list[str]:
        """What a trial's job is told: its parameters and where its trial lives."""
        c, storage = self.conf, self.conf.storage
        pruner = self._pruner_spec()
        return [
            *(f"{k}={_value(v)}" for k, v in trial.params.items()),
            f"search.study={study.study_name}",
            f"search.storage='{storage}'" if storage else "search.storage=null",
            f"search.trial_id={trial._trial_id}",
            f"search.trial_number={trial.number}",
            f"search.pruner={_override_value(pruner)}",
            f"search.pruner_warmup_epochs={c.pruner_warmup_epochs}",
            f"search.pruner_startup_trials={c.pruner_startup_trials}",
            f"search.objectives=[{','.join(self.objectives)}]",
        ]

    def _tell(self, study, trial, ret) -> str | None:
        """Tell the study how the trial's job ended; its error when it failed."""
        import optuna

        state, value = _outcome(ret, len(self.objectives))
        if state == "complete":
            try:
                study.tell(trial, value)
            except RuntimeError as exc:  # the grid sampler's last point stops the study
                if "Study.stop" not in str(exc):
                    raise
            return None
        if state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return None
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return str(value)

    def _write_result(self, study, failed: dict[int, str]) -> None:
        """The study's best trial, or its Pareto front for several objectives (of every process
        on it), the trials' counts by state, this process's failed trials with their errors,
        and the study's figures, for the parent run."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        counts = {
            state.name.lower(): sum(t.state == state for t in trials)
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        }
        result: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "objectives": self.objectives,
            "directions": self.directions,
            **counts,
            "failed_trials": {int(k): v for k, v in failed.items()},
        }
        if counts["complete"]:
            result |= _best(study, self.objectives)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        result["plots"] = plots.draw(study, self.objectives, sweep_dir / "search")
        OmegaConf.save(OmegaConf.create(result), sweep_dir / RESULT_FILE)


def _best(study, objectives: list[str]) -> dict[str, Any]:
    """The best trial of a one-objective study; the Pareto front of a multi-objective one."""
    if len(objectives) == 1:
        best = study.best_trial
        return {
            "best_params": dict(best.params),
            "best_value": float(best.value),
            "best_trial": best.number,
        }
    front = sorted(study.best_trials, key=lambda t: t.number)
    return {
        "pareto_front": [
            {
                "trial": t.number,
                "params": dict(t.params),
                "values": dict(zip(objectives, map(float, t.values), strict=True)),
            }
            for t in front
        ]
    }


def _value(v: Any) -> str:
    return repr(v) if isinstance(v, float) and math.isfinite(v) else str(v)


def _override_value(value: Any) -> str:
    """A short name as it is; a `_target_` mapping as a quoted JSON string for the job."""
    import json

    return value if isinstance(value, str) else "'" + json.dumps(value) + "'"


def _outcome(ret, count: int = 1) -> tuple[str, Any]:
    """How a job ended: ("complete", objective or objectives), ("pruned", epoch) or ("failed",
    error)."""
    from hydra.core.utils import JobStatus
    from optuna import TrialPruned

    if ret.status == JobStatus.COMPLETED:
        value = ret.return_value
        values = list(value) if isinstance(value, list | tuple) else [value]
        if len(values) != count or any(v is None or not math.isfinite(float(v)) for v in values):
            return "failed", f"objective {value!r}"
        return "complete", float(values[0]) if count == 1 else [float(v) for v in values]
    error = ret._return_value
    if isinstance(error, TrialPruned):
        return "pruned", str(error)
    return "failed", f"{type(error).__name__}: {error}"

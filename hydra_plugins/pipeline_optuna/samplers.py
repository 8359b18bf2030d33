"""The study's sampler, pruner and storage, from the sweeper's config.

A sampler or pruner is a short name (`tpe`, `random`, `grid`, `cmaes`, `qmc`, `nsgaii`, `gp`;
`median`, `hyperband`, `percentile`, `successive_halving`, `none`) or a mapping with `_target_`
(any class of `optuna.samplers` or `optuna.pruners`, or one of your own) and its options, checked
against the class's signature before any trial:

    hydra.sweeper.sampler=qmc
    hydra.sweeper.sampler._target_=optuna.samplers.TPESampler
        +hydra.sweeper.sampler.n_startup_trials=5
"""

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra_plugins.pipeline_optuna.space import SearchError, grid
from pipeline.config.naming import closest
from pipeline.config.targets import check_keys, resolve
from pipeline.errors import ConfigError, first_line

SAMPLERS = {
    "tpe": "optuna.samplers.TPESampler",
    "random": "optuna.samplers.RandomSampler",
    "grid": "optuna.samplers.GridSampler",
    "cmaes": "optuna.samplers.CmaEsSampler",
    "qmc": "optuna.samplers.QMCSampler",
    "nsgaii": "optuna.samplers.NSGAIISampler",
    "gp": "optuna.samplers.GPSampler",
}
PRUNERS = {
    "median": "optuna.pruners.MedianPruner",
    "hyperband": "optuna.pruners.HyperbandPruner",
    "percentile": "optuna.pruners.PercentilePruner",
    "successive_halving": "optuna.pruners.SuccessiveHalvingPruner",
    "none": "optuna.pruners.NopPruner",
}
# What a sampler needs beyond Optuna, and how to get it.
NEEDS = {
    "CmaEsSampler": ("cmaes", "pip install cmaes"),
    "GPSampler": ("torch", "pip install torch"),
}
JOURNAL_PREFIX = "journal:"


def spec(value: Any, kind: str, names: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """A short name's or a `_target_` mapping's class path and options.

    Raises:
        SearchError: a name that is not one, or a mapping without `_target_`.
    """
    where = f"hydra.sweeper.{kind}"
    if isinstance(value, str):
        if value not in names:
            close = closest(value, list(names))
            hint = f"; did you mean {where}={close}?" if close else ""
            raise SearchError(
                f"{where}={value}: expected one of {', '.join(names)}, or a mapping with "
                f"_target_ (a class of optuna.{kind}s){hint}"
            )
        return names[value], {}
    options = dict(value or {})
    target = options.pop("_target_", None)
    if not isinstance(target, str):
        raise SearchError(f"{where} needs _target_ (e.g. optuna.{kind}s.…) or a short name")
    return target, options


def build(value: Any, kind: str, names: Mapping[str, str], given: dict[str, Any]):
    """The class `value` names, called with its options and those of `given` it takes.

    Raises:
        SearchError: the class does not import, takes no such option, or needs a package that
            is not installed; names it.
    """
    import importlib.util

    target, options = spec(value, kind, names)
    where = f"hydra.sweeper.{kind}"
    try:
        cls = resolve(target, f"{where}._target_")
        check_keys(cls, options, where, given=tuple(given))
    except ConfigError as exc:
        raise SearchError(str(exc)) from None
    module, how = NEEDS.get(getattr(cls, "__name__", ""), (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        raise SearchError(f"{where}={target} needs {module}, which is not installed: {how}")
    import inspect
    import warnings

    import optuna

    takes = inspect.signature(cls).parameters
    try:
        with warnings.catch_warnings():  # Optuna marks QMC, GP and others experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**options, **{k: v for k, v in given.items() if k in takes})
    except (TypeError, ValueError) as exc:
        raise SearchError(f"{where}={target}: {exc}") from None


def make_sampler(value: Any, seed: int | None, space: dict[str, Any]):
    """The study's sampler, drawing from `seed`; the grid sampler's grid is the space's."""
    given: dict[str, Any] = {"seed": seed}
    if is_grid(value):
        given["search_space"] = grid(space)
    return build(value, "sampler", SAMPLERS, given)


def grid_size(space: dict[str, Any]) -> int:
    size = 1
    for values in grid(space).values():
        size *= len(values)
    return size


def is_grid(value: Any) -> bool:
    target, _ = spec(value, "sampler", SAMPLERS)
    return target.rsplit(".", 1)[-1] == "GridSampler"


def make_pruner(value: Any, warmup_epochs: int = 1, startup_trials: int = 3):
    """The study's pruner; a job that loads the study from its storage builds the same one.
    `median` compares from epoch `warmup_epochs` on, once `startup_trials` trials finished."""
    if value == "median":
        value = {
            "_target_": PRUNERS["median"],
            "n_startup_trials": startup_trials,
            "n_warmup_steps": warmup_epochs,
        }
    return build(value, "pruner", PRUNERS, {})


def process_seed(seed: int | None, first_trial: int) -> int | None:
    """The seed of a process whose first trial has the number `first_trial`: `seed` itself for
    a study's first process, another for each process that joins a stored study (trial
    numbers are handed out once each), so that processes sharing a study do not propose alike
    and the same command on the same study proposes alike."""
    if seed is None or first_trial == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{first_trial}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def deferred(value: Any, seed: int | None, space: dict[str, Any]):
    """The study's sampler, made when this process's first trial starts, seeded from `seed`
    and that trial's number (`process_seed`); until then nothing is drawn."""
    from optuna.samplers import BaseSampler

    class Deferred(BaseSampler):
        def __init__(self) -> None:
            self.inner = None

        def before_trial(self, study, trial) -> None:
            if self.inner is None:
                self.inner = make_sampler(value, process_seed(seed, trial.number), space)
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            if self.inner is not None:
                self.inner.reseed_rng()

        def __str__(self) -> str:
            return str(self.inner) if self.inner is not None else "sampler (not yet made)"

    make_sampler(value, seed, space)  # a bad sampler or option fails now, before any trial
    return Deferred()


def make_storage(storage: str | None):
    """Optuna's storage for the configured string (None: in memory)."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if storage is None:
        return None
    if storage.startswith(JOURNAL_PREFIX):
        path = Path(storage.removeprefix(JOURNAL_PREFIX)).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a"):
                pass
        except OSError as exc:
            raise SearchError(
                f"hydra.sweeper.storage={storage}: the journal file cannot be written "
                f"({exc.strerror or exc})"
            ) from exc
        return JournalStorage(JournalFileBackend(str(path)))
    try:
        return RDBStorage(storage, engine_kwargs=_engine_kwargs(storage))
    except Exception as exc:  # SQLAlchemy's and the drivers' errors are many
        first = first_line(exc) or type(exc).__name__
        raise SearchError(f"hydra.sweeper.storage={storage} does not answer: {first}") from exc
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _engine_kwargs(storage: str) -> dict:
    if storage.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # processes sharing one file take turns
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}

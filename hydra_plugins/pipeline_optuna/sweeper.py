"""Hydra's `optuna` sweeper on current Optuna: a study that lives in its storage (in memory, a
database, or a journal file for a cluster's shared file system), shared by every process
started with the same study name and storage, resumed when started again, trials pruned by
epoch. Trials are launched through Hydra's launcher, so the basic, joblib, Submitit and Ray
launchers all run them.

    python -m pipeline hparams_search=optuna [hydra.sweeper.storage=sqlite:////abs/optuna.db]

Each process asks the study for `n_jobs` trials at a time, launches them as one batch, and tells
the study how each ended: its objective (the job's return value), pruned, or failed. It runs
`n_trials` trials; other processes on the same study add theirs.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without registering them
# in sys.modules, and dataclasses cannot resolve string annotations there.
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random")
JOURNAL_PREFIX = "journal:"
RESULT_FILE = "optimization_results.yaml"
# Studies of this process by name, for jobs run in this process when the study is in memory.
IN_MEMORY: dict[str, Any] = {}


class SearchError(ConfigError):
    """A search that cannot start or go on: the message is the one line the user sees."""


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.pipeline_optuna.sweeper.OptunaSweeper"
    direction: str = "maximize"
    study_name: Optional[str] = None  # noqa: UP045 (evaluated by OmegaConf)
    # null: in memory; sqlite:////abs/optuna.db, postgresql+psycopg2://...; journal:/path/file
    storage: Optional[str] = None  # noqa: UP045
    n_trials: int = 20  # trials this process runs (other processes on the study add theirs)
    n_jobs: int = 1  # trials asked for at once, and launched together
    max_failure_rate: float = 1.0
    sampler: str = "tpe"
    seed: Optional[int] = None  # noqa: UP045
    pruner: str = "median"  # median, hyperband, none
    # The median pruner compares from this epoch on, once this many trials have finished.
    pruner_warmup_epochs: int = 1
    pruner_startup_trials: int = 3
    params: dict[str, str] = field(default_factory=dict)
    # More of the space for the chosen model only, by its name: the keys of its own builder.
    model_params: dict[str, dict[str, str]] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf)


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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SearchError(f"hydra.sweeper.storage={storage} does not answer: {first}") from exc
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_pruner(name: str, warmup_epochs: int, startup_trials: int):
    """The study's pruner; a job that loads the study from its storage builds the same one."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def _engine_kwargs(storage: str) -> dict:
    if storage.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # processes sharing one file take turns
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def distribution(override: Override):
    """Optuna's distribution for one search-space entry (`choice`, `range`, `interval`, with
    `tag(log, ...)` for a log scale)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    value = override.value()
    log_scale = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution([v for v in value.list])
    if isinstance(value, RangeSweep):
        return IntDistribution(int(value.start), int(value.stop) - 1, step=int(value.step or 1))
    if isinstance(value, IntervalSweep):
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise SearchError(f"{override.input_line}: the search space takes choice, range or interval")


class OptunaSweeper(Sweeper):
    def __init__(self, **conf: Any) -> None:
        self.conf = OptunaSweeperConf(**conf)
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

    def _check(self) -> None:
        c = self.conf
        if c.n_trials < 1:
            raise SearchError(f"hydra.sweeper.n_trials={c.n_trials} is invalid: expected >= 1")
        if c.n_jobs < 1:
            raise SearchError(f"hydra.sweeper.n_jobs={c.n_jobs} is invalid: expected >= 1")
        if c.direction not in ("maximize", "minimize"):
            raise SearchError(
                f"hydra.sweeper.direction={c.direction}: expected maximize or minimize"
            )
        if c.pruner not in PRUNERS:
            raise SearchError(f"hydra.sweeper.pruner={c.pruner}: expected one of {PRUNERS}")
        if c.sampler not in SAMPLERS:
            raise SearchError(f"hydra.sweeper.sampler={c.sampler}: expected one of {SAMPLERS}")

    def _pruner(self):
        c = self.conf
        return make_pruner(c.pruner, c.pruner_warmup_epochs, c.pruner_startup_trials)

    def _sampler(self):
        import optuna

        # A shared study's processes would propose the same trials from the same seed: there
        # each process draws its own.
        seed = self.conf.seed if self.conf.storage is None else None
        if self.conf.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def _space(self, arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The search space (params and sweep overrides) and the fixed overrides."""
        parser = OverridesParser.create()
        model = OmegaConf.select(self.config, "model.name") if self.config is not None else None
        own = (self.conf.model_params or {}).get(model) or {}
        entries = [f"{k}={v}" for k, v in {**(self.conf.params or {}), **own}.items()]
        space: dict[str, Any] = {}
        for override in parser.parse_overrides(entries):
            space[override.get_key_element()] = distribution(override)
        fixed: list[str] = []
        for override in parser.parse_overrides(arguments):
            if override.is_sweep_override():
                space[override.get_key_element()] = distribution(override)
            else:
                fixed.append(override.input_line)
        return space, fixed

    def _study(self, space: dict[str, Any]):
        import optuna

        storage = make_storage(self.conf.storage)
        name = self.conf.study_name
        try:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                direction=self.conf.direction,
                sampler=self._sampler(),
                pruner=self._pruner(),
                load_if_exists=storage is not None,
            )
        except SearchError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SearchError(
                f"hydra.sweeper.storage={self.conf.storage} does not answer: {first}"
            ) from exc
        if study.direction.name.lower() != self.conf.direction:
            raise SearchError(
                f"study {name!r} in {self.conf.storage} maximises or minimises otherwise "
                f"({study.direction.name.lower()}); Optuna cannot change a study's direction: "
                "choose another hydra.sweeper.study_name"
            )
        self._check_space(study, space)
        if storage is None:
            IN_MEMORY[study.study_name] = study
        return study

    def _check_space(self, study, space: dict[str, Any]) -> None:
        """An existing study searched another space: its trials would not compare."""
        for trial in study.get_trials(deepcopy=False):
            if not trial.distributions:
                continue
            if set(trial.distributions) != set(space) or any(
                trial.distributions[k] != space[k] for k in space
            ):
                raise SearchError(
                    f"study {study.study_name!r} in {self.conf.storage} searched another space "
                    f"({', '.join(sorted(trial.distributions))}); its trials would not compare "
                    "with these: choose another hydra.sweeper.study_name"
                )
            return

    # --- the search ---------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        assert self.config is not None and self.launcher is not None
        self._check()
        space, fixed = self._space(arguments)
        study = self._study(space)
        storage = self.conf.storage
        before = len(study.trials)
        log.info(
            "Optuna %s study %r (%s): %d trials there already; this process runs %d, %d at a time",
            optuna.__version__,
            study.study_name,
            storage or "in memory",
            before,
            self.conf.n_trials,
            self.conf.n_jobs,
        )
        done = failures = 0
        while done < self.conf.n_trials:
            batch = min(self.conf.n_jobs, self.conf.n_trials - done)
            trials = [study.ask(space) for _ in range(batch)]
            overrides = []
            for trial in trials:
                chosen = [f"{k}={_value(v)}" for k, v in trial.params.items()]
                where = [
                    f"search.study={study.study_name}",
                    f"search.storage='{storage}'" if storage else "search.storage=null",
                    f"search.trial_id={trial._trial_id}",
                    f"search.trial_number={trial.number}",
                    f"search.pruner={self.conf.pruner}",
                    f"search.pruner_warmup_epochs={self.conf.pruner_warmup_epochs}",
                    f"search.pruner_startup_trials={self.conf.pruner_startup_trials}",
                ]
                overrides.append(tuple(fixed + chosen + where))
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException:  # Ctrl-C, SIGTERM: the study keeps no trial RUNNING forever
                for trial in trials:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            self.job_idx += len(returns)
            for trial, ret in zip(trials, returns, strict=True):
                state, value = _outcome(ret)
                if state == "complete":
                    study.tell(trial, value)
                elif state == "pruned":
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    failures += 1
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    log.warning("trial %d failed: %s", trial.number, value)
            done += batch
            if failures / done > self.conf.max_failure_rate:
                raise SearchError(
                    f"{failures} of {done} trials failed, more than "
                    f"hydra.sweeper.max_failure_rate={self.conf.max_failure_rate}"
                )
        self._write_result(study)

    def _write_result(self, study) -> None:
        """The study's best trial (of every process on it), for the parent run."""
        from optuna.trial import TrialState

        finished = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        counts = {
            state.name.lower(): sum(t.state == state for t in study.get_trials(deepcopy=False))
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        }
        result: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, **counts}
        if finished:
            best = study.best_trial
            result |= {
                "best_params": dict(best.params),
                "best_value": float(best.value),
                "best_trial": best.number,
            }
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(result), sweep_dir / RESULT_FILE)


def _value(v: Any) -> str:
    return repr(v) if isinstance(v, float) and math.isfinite(v) else str(v)


def _outcome(ret) -> tuple[str, Any]:
    """How a job ended: ("complete", objective), ("pruned", epoch) or ("failed", error)."""
    from hydra.core.utils import JobStatus
    from optuna import TrialPruned

    if ret.status == JobStatus.COMPLETED:
        value = ret.return_value
        if value is None or not math.isfinite(float(value)):
            return "failed", f"objective {value!r}"
        return "complete", float(value)
    error = ret._return_value
    if isinstance(error, TrialPruned):
        return "pruned", str(error)
    return "failed", f"{type(error).__name__}: {error}"

"""Errors a user can cause and fix; each message names the key, file or server at fault."""


class PipelineError(Exception):
    """Base of the errors reported as one line, without a traceback."""


class ConfigError(PipelineError, ValueError):
    """A config value is missing, of the wrong type or out of range."""


class SearchError(ConfigError):
    """A search (the `optuna` sweeper) that cannot start or go on: one line. It lives here, not
    in the sweeper's package, which Hydra's plugin scan loads a second time."""


class DataError(PipelineError):
    """A data file is missing, unreadable or not what the config says."""


class TrackingError(PipelineError):
    """The MLflow tracking store cannot be reached or written."""


class ResumeError(PipelineError):
    """`resume=` names nothing that can be resumed (finished, another configuration or store,
    its checkpoint gone or corrupt); nothing was changed."""


class TrainingError(PipelineError):
    """Training cannot go on, e.g. the loss diverged; `tags` say where, for the run record."""

    def __init__(self, message: str, tags: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.tags = dict(tags or {})

    def __reduce__(self):  # a job's error travels back from a parallel launcher's worker
        return type(self), (str(self), self.tags)


class StageError(RuntimeError):
    """A stage failed after training; names the stage. (Not a user error: keeps its traceback.)"""

    def __init__(self, stage: str, cause: BaseException | str) -> None:
        what = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"stage {stage} failed: {what}")
        self.stage, self.what = stage, what
        self.tags = {"failed_stage": stage}

    def __reduce__(self):  # unpickled as it was made, not from its message
        return type(self), (self.stage, self.what)


class SweepAborted(BaseException):
    """Carries a PipelineError out of a Hydra callback, which turns any Exception into a
    warning and goes on; the entry point reports `error` on one line and exits 1."""

    def __init__(self, error: PipelineError) -> None:
        super().__init__(str(error))
        self.error = error

    def __reduce__(self):
        return type(self), (self.error,)


class ImageError(PipelineError):
    """An image that cannot be read, or holds no digit where one is looked for."""


class PortInUseError(PipelineError):
    """A server's port is taken, e.g. by another server; says how to choose another."""


class InputError(PipelineError, ValueError):
    """Arrays given to a model that are not images it takes: their shape, type or values."""


def first_line(exc: BaseException) -> str:
    """The first line of what `exc` says (its `message` where it has one, as MLflow's errors
    do), or "" if it says nothing: for one-line reports of errors from other libraries."""
    text = (getattr(exc, "message", None) or str(exc)).strip()
    return text.splitlines()[0] if text else ""

"""Errors a user can cause and fix; each message names the key, file or server at fault."""


class PipelineError(Exception):
    """Base of the errors reported as one line, without a traceback."""


class ConfigError(PipelineError, ValueError):
    """A config value is missing, of the wrong type or out of range."""


class DataError(PipelineError):
    """A data file is missing, unreadable or not what the config says."""


class TrackingError(PipelineError):
    """The MLflow tracking store cannot be reached or written."""

"""The command line's one error path: a mistake a user can fix, as one `error:` line, exit code 1.

Hydra and OmegaConf keep what went wrong in attributes (the config not found and its group's
options, the override that did not parse, the key at fault); the line is built from those, and
ends with a did-you-mean when a real option or key is close to the one given.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from pipeline.config.naming import closest
from pipeline.config.schema import CONF_DIR, known_keys


def fail(exc: BaseException) -> int:
    """Write `error: <one line>` for `exc` to stderr; returns the exit code, 1."""
    sys.stderr.write(f"error: {one_line(exc)}\n")
    return 1


def one_line(exc: BaseException) -> str:
    """What went wrong, on one line, without Hydra's search path; with a did-you-mean if one is
    close: "In 'config': Could not find 'model/lineer'; Available options in 'model': ann,
    linear; did you mean model=linear?"."""
    parts = [part for part in _parts(exc) if part]
    guess = did_you_mean(exc)
    if guess:
        parts.append(f"did you mean {guess}?")
    return "; ".join(parts) or type(exc).__name__


def did_you_mean(exc: BaseException) -> str | None:
    """The option or key closest to the misspelled one `exc` names, if one is close:
    `model=linear` for a missing `model/lineer`, `trainer.epochs` for `trainer.epoch`."""
    if isinstance(exc, MissingConfigException):
        group, _, wrong = (exc.missing_cfg_file or "").rpartition("/")
        close = closest(wrong, exc.options or [])
        return f"{group}={close}" if group and close else None
    key = _missing_key(exc)
    # Hydra's own settings are not the schema's: no key of it would be close.
    if key is None or key.split(".")[0] == "hydra":
        return None
    groups = [p.name for p in Path(CONF_DIR).iterdir() if p.is_dir()]
    return closest(key, known_keys() + groups)


def _parts(exc: BaseException) -> list[str]:
    """The pieces of the line for `exc`, from its attributes where Hydra gives them."""
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group = exc.missing_cfg_file.rpartition("/")[0]
        return [_first_line(exc), f"Available options in '{group}': {', '.join(exc.options)}"]
    if isinstance(exc, OverrideParseException):
        # The parser's own error, which Hydra's message wraps in a caret drawing and a link.
        parser = exc.__context__
        why = _first_line(parser if isinstance(parser, HydraException) else exc.message)
        return [f"Could not parse '{exc.override}': {why}"]
    omegaconf = _omegaconf_cause(exc)
    if omegaconf is not None:
        # Hydra's line says which override or file failed, OmegaConf's why.
        return [_first_line(exc), _first_line(omegaconf)]
    if isinstance(exc, HydraException):
        # No attribute says more: every line, for the hints Hydra gives with some errors (add
        # --multirun to sweep, drop the + to override), but none of its search path.
        return _lines(exc)
    return [_first_line(exc)]


def _omegaconf_cause(exc: BaseException) -> OmegaConfBaseException | None:
    """The OmegaConf error a Hydra error was raised from or while handling, if any."""
    if not isinstance(exc, HydraException):
        return None
    for error in (exc.__cause__, exc.__context__):
        if isinstance(error, OmegaConfBaseException):
            return error
    return None


def _missing_key(exc: BaseException) -> str | None:
    """The full key of a key that the config lacks, as OmegaConf reports it, or None."""
    for error in (exc, _omegaconf_cause(exc)):
        if isinstance(error, ConfigAttributeError | ConfigKeyError) and error.full_key:
            return str(error.full_key)
    return None


def _lines(message: BaseException | str) -> list[str]:
    """The lines of a message up to Hydra's search path or link, each without the full stop or
    colon that would end a piece."""
    lines = []
    for line in str(message).splitlines():
        if line.strip().startswith(("Config search path", "See https://hydra.cc")):
            break
        if line.strip():
            lines.append(line.strip().rstrip(".:"))
    return lines


def _first_line(message: BaseException | str) -> str:
    """The first line of a message, without the full stop or colon that would end a piece."""
    lines = _lines(message)
    return lines[0] if lines else ""

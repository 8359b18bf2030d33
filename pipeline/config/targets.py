"""`_target_`s: a model's builder or an optimizer's class, imported by its dotted path and its
keys checked against its signature, so that a key it does not take is one line before any data.

A user's own builder (`model._target_=my_models.lenet`) is found in the folder the command runs
in, as `python -m` finds modules there.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pipeline.config.naming import closest
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """The range of a builder's numeric key (of each item, for a list), checked with the
    config: `hidden_units: Annotated[int, Range(min=1)] = 128`."""

    min: float | None = None
    max: float | None = None
    max_excluded: bool = False

    def admits(self, value: Any) -> bool:
        items = value if isinstance(value, list | tuple) else [value]
        return bool(items) and all(self._admits(v) for v in items)

    def _admits(self, v: float) -> bool:
        if self.min is not None and v < self.min:
            return False
        return self.max is None or v < self.max or (v == self.max and not self.max_excluded)

    def __str__(self) -> str:
        if self.max is None:
            return f">= {self.min}"
        if self.min is None:
            return f"<= {self.max}"
        return f"in [{self.min}, {self.max}{')' if self.max_excluded else ']'}"


def resolve(target: str, where: str) -> Callable:
    """The function or class at the dotted path `target`.

    Raises:
        ConfigError: `target` does not import; names `where` (e.g. `model._target_`).
    """
    module_name, _, attribute = target.rpartition(".")
    if not module_name:
        raise ConfigError(f"{where}={target!r} is invalid: expected a dotted path, module.name")
    if os.getcwd() not in sys.path:  # a user's builder beside the command
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}={target}: cannot import {module_name}: {exc}") from exc
    found = getattr(module, attribute, None)
    if not callable(found):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = closest(attribute, public)
        hint = f"; did you mean {module_name}.{close}?" if close else ""
        raise ConfigError(f"{where}={target}: {module_name} has no {attribute}{hint}")
    return found


def check_keys(
    target: Callable, keys: Mapping[str, Any], prefix: str, given: tuple[str, ...] = ()
) -> None:
    """Every key of `keys` is a parameter of `target`, of the type it is annotated with.

    Args:
        prefix: the keys' config section, for the message (`model`).
        given: parameters the pipeline passes itself (`input_shape`, `num_classes`).
    Raises:
        ConfigError: names the key, with a did-you-mean where one is close.
    """
    parameters = _parameters(target)
    hints = _hints(target)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    names = [n for n, p in parameters.items() if n not in given and p.kind is not p.VAR_KEYWORD]
    for key, value in keys.items():
        if key not in parameters or key in given:
            if takes_any:
                continue
            close = closest(key, names)
            hint = f"; did you mean {prefix}.{close}?" if close else ""
            takes = ", ".join(names) or "no keys"
            raise ConfigError(
                f"{prefix}.{key} is not a key of {_name(target)} (it takes {takes}){hint}"
            )
        _check_type(parameters[key], hints.get(key), value, f"{prefix}.{key}")
    missing = [
        n
        for n, p in parameters.items()
        if n not in given and n not in keys and p.default is p.empty and p.kind is p.KEYWORD_ONLY
    ]
    if missing:
        raise ConfigError(f"{prefix}.{missing[0]} is missing: {_name(target)} needs it")


def _parameters(target: Callable) -> dict[str, inspect.Parameter]:
    """The target's named parameters; for a class, those of every __init__ its own passes
    **kwargs on to (Keras' optimizers hand theirs to the base class, which refuses the rest)."""
    if not inspect.isclass(target):
        found = dict(inspect.signature(target).parameters)
    else:
        found = {}
        for cls in target.__mro__:
            if "__init__" not in vars(cls) or cls is object:
                continue
            own = inspect.signature(cls.__init__).parameters
            found |= {n: p for n, p in own.items() if n not in found}
            if not any(p.kind is p.VAR_KEYWORD for p in own.values()):
                break
        # What the last __init__ takes as **kwargs is not a setting a config should pass.
        found = {n: p for n, p in found.items() if p.kind is not p.VAR_KEYWORD}
    return {n: p for n, p in found.items() if n != "self" and p.kind is not p.VAR_POSITIONAL}


def _hints(target: Callable) -> dict[str, Any]:
    """The target's annotations, resolved (`from __future__ import annotations` leaves strings)."""
    try:
        function = target.__init__ if inspect.isclass(target) else target
        return typing.get_type_hints(function, include_extras=True)
    except Exception:  # a name only its module knows: its parameters go unchecked
        return {}


def _name(target: Callable) -> str:
    return f"{target.__module__}.{target.__qualname__}"


def _check_type(parameter: inspect.Parameter, hint: Any, value: Any, key: str) -> None:
    """`value` fits the parameter's annotation, where the annotation is a plain type."""
    ranges = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Range)]
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    expected = _plain_types(parameter, hint)
    if value is None:
        return
    for bounds in ranges:
        if isinstance(value, int | float | list | tuple) and not bounds.admits(value):
            raise ConfigError(f"{key}={value!r} is invalid: expected {bounds}")
    if not expected:
        return
    if isinstance(value, bool) and bool not in expected:
        ok = False  # yaml's true is not a number of units
    else:
        ok = isinstance(value, expected) or (float in expected and isinstance(value, int))
    if not ok:
        names = " or ".join(t.__name__ for t in expected)
        raise ConfigError(f"{key}={value!r} is invalid: expected {names}")


def _plain_types(parameter: inspect.Parameter, annotation: Any) -> tuple[type, ...]:
    """The builtin types a parameter's annotation (else its default's type) admits, or () when
    it says nothing plain."""
    if annotation is None:
        if parameter.default is parameter.empty or parameter.default is None:
            return ()
        annotation = type(parameter.default)
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    candidates = args if origin in (typing.Union, types.UnionType) else (annotation,)
    plain = []
    for candidate in candidates:
        base = typing.get_origin(candidate) or candidate
        if base in (tuple, list):
            plain += [list, tuple]
        elif base in (int, float, str, bool):
            plain.append(base)
        elif candidate is type(None):
            continue
        else:
            return ()
    return tuple(plain)

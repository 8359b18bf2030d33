"""The search space, parsed as Hydra's sweepers parse overrides: the config's `params` (and the
chosen model's `model_params`), then the command line's, which win.

A sweep (`choice`, `range`, `interval`, `tag(log, ...)`, `shuffle(...)`) is searched; a plain
value is fixed and leaves the space, whether it is in `params` or on the command line.
"""

import math
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from pipeline.errors import SearchError

__all__ = ["SearchError", "distribution", "grid", "parse", "suggest"]


def parse(entries: list[str], arguments: list[str], seed: int | None):
    """The search space `{key: distribution}` and the fixed overrides (as given) of the
    config's entries (`key=value` lines) and the command line's arguments, which win: a value
    fixed there leaves the space, a sweep there replaces the config's."""
    parser = OverridesParser.create()
    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in parser.parse_overrides(entries) + parser.parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(override, seed)
            fixed.pop(key, None)
        else:
            fixed[key] = override.input_line
            space.pop(key, None)
    return space, list(fixed.values())


def distribution(override: Override, seed: int | None = None):
    """Optuna's distribution for one search-space entry: `choice(...)`, `range(...)` and
    `interval(...)`, with `tag(log, ...)` for a log scale and `shuffle(...)` for a choice or
    range searched as a choice in shuffled order (shuffled by `seed`, so that a seeded search
    repeats and a stored study's space stays the same).

    A `range` keeps Hydra's meaning: the stop is excluded (`range(1,4)` is 1, 2, 3), for
    integers and floats alike (`range(0.5,2.5,step=0.5)` is 0.5, 1.0, 1.5, 2.0). The upstream
    plugin gives Optuna the stop itself as the highest value.

    Raises:
        SearchError: a range with no values or a step that is not positive, or a sweep of
            another kind; names the entry.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    value = override.value()
    log_scale = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep | RangeSweep) and value.shuffle:
        return CategoricalDistribution(_shuffled(override, seed))
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution([v for v in value.list])
    if isinstance(value, RangeSweep):
        return _range(override, value, IntDistribution, FloatDistribution)
    if isinstance(value, IntervalSweep):
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise SearchError(f"{override.input_line}: the search space takes choice, range or interval")


def _shuffled(override: Override, seed: int | None) -> list:
    """A shuffled choice's or range's values, in an order set by `seed`."""
    import random

    from hydra.core.override_parser.types import Transformer

    value = override.value()
    value.shuffle = False
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    random.Random(seed).shuffle(values)
    return values


def _range(override: Override, value: RangeSweep, int_dist, float_dist):
    """An integer or a stepped float distribution over a range's values, stop excluded."""
    start, stop, step = value.start, value.stop, 1 if value.step is None else value.step
    if not step > 0:
        raise SearchError(f"{override.input_line}: a search range needs a step > 0")
    count = math.ceil((stop - start) / step - 1e-9)
    if count < 1:
        raise SearchError(
            f"{override.input_line}: the range holds no value (its stop is excluded, as in Hydra)"
        )
    if all(isinstance(v, int) for v in (start, stop, step)):
        return int_dist(start, start + (count - 1) * step, step=step)
    high = round(start + (count - 1) * step, 12)
    return float_dist(float(start), high, step=float(step))


def suggest(trial, space: dict[str, Any]) -> None:
    """Draw each of the space's parameters for `trial` from the study's sampler."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def grid(space: dict[str, Any]) -> dict[str, list]:
    """The grid sampler's values of each parameter: a choice's, or a range's (stepped).

    Raises:
        SearchError: an interval, which has no grid; names it.
    """
    from optuna.distributions import CategoricalDistribution

    values: dict[str, list] = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values[name] = list(dist.choices)
        elif dist.step is not None and not dist.log:
            count = round((dist.high - dist.low) / dist.step) + 1
            values[name] = [_step(dist, i) for i in range(count)]
        else:
            raise SearchError(
                f"{name}: an interval has no grid; the grid sampler takes choice(...) or range(...)"
            )
    return values


def _step(dist, i: int):
    value = dist.low + i * dist.step
    return value if isinstance(value, int) else round(value, 12)

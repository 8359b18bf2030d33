"""Names derived from a config: which keys are settings, run names, the configuration key, and
the one table of short names that run names and comparison labels share."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Keys that do not change what a run learns: the seed, where files are read or written, what is
# recorded and shown, how the work is split; and the counts a run logs beside its config.
NOT_SETTINGS = (
    "seed",
    "resume",
    "tracking.",
    "report.",
    "search.",
    "dataset.path",
    "dataset.cache_dir",
    "dataset.mirrors",
    "trainer.verbose",
    "trainer.intra_op_threads",
    "trainer.steps_per_execution",
    "trainer.checkpoint",
    "num_params",
    "num_replicas",
)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept as one value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def settings(flat: Mapping[str, Any]) -> dict[str, str]:
    """The settings of a flattened config (or of a run's params) that decide what it learns:
    every key but NOT_SETTINGS, values as strings (as MLflow stores params)."""
    return {
        k: str(v)
        for k, v in flat.items()
        if not any(
            k == skip or (skip.endswith(".") and k.startswith(skip)) for skip in NOT_SETTINGS
        )
    }


# Short forms of the keys most often overridden, in run names and comparison labels alike.
SHORT_KEYS = {
    "optimizer.learning_rate": "lr",
    "trainer.batch_size": "bs",
    "trainer.validation_split": "val",
    "model.hidden_units": "hidden",
}
# Config groups whose choice is not in a run's name: model and optimizer are its first words,
# the dataset is its experiment, and the others are presets or places.
UNNAMED_GROUPS = ("model", "optimizer", "dataset", "experiment", "tracking", "hparams_search")
# Keys whose values would only lengthen a name: Hydra's own, and the data files' names and
# digests (a run's dataset inputs show its data).
UNNAMED_PREFIXES = ("hydra", "dataset.files.", "dataset.dirname")
MAX_NAME_CHARS = 60


def short_key(key: str) -> str:
    """The short form of a config key: `lr` for optimizer.learning_rate, else its last part."""
    return SHORT_KEYS.get(key, key.rsplit(".", 1)[-1])


def run_name(base: str, overrides: list[str] | tuple[str, ...]) -> str:
    """`base` followed by the overrides that set the run apart, in short form, e.g.
    `linear-sgd lr=0.1 bs=128 seed=3`: every `key=value` that changes what is learnt (or the
    seed), not group choices in the name already, nor paths, tracking or report settings.
    Capped at MAX_NAME_CHARS; the run's `overrides` tag keeps them all."""
    words, seed = [base], []
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key.startswith(UNNAMED_PREFIXES) or key in UNNAMED_GROUPS:
            continue
        word = f"{short_key(key)}={_short_value(value)}"
        if key == "seed":
            seed = [word]  # last: runs of one configuration differ there
        elif settings({key: value}):
            words.append(word)
    name = " ".join(words + seed)
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"


def _short_value(value: str) -> str:
    """0.012345678 -> 0.0123 (a search's floats); anything else as given."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.3g}" if "." in value and len(value) > 6 else value


def config_key(flat: Mapping[str, Any]) -> str:
    """One key for all runs that differ only in seed (or in NOT_SETTINGS), e.g.
    `ann-adam-mnist-1f3e9a0c`: readable first, then a digest of every setting."""
    kept = settings(flat)
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:8]
    names = (kept.get(f"{group}.name", "?") for group in ("model", "optimizer", "dataset"))
    return "-".join([*names, digest])


# How alike a misspelled key, option or name and a real one must be (difflib's ratio) to be
# offered: `lineer` -> `linear` (0.83), but not `cnn` -> `ann` (0.67).
CLOSE_ENOUGH = 0.7


def closest(wrong: str, choices: list[str]) -> str | None:
    """The choice most like `wrong`, for a did-you-mean, if one is close enough and `wrong` is
    not itself one."""
    if not wrong or wrong in choices:
        return None
    close = difflib.get_close_matches(wrong, choices, n=1, cutoff=CLOSE_ENOUGH)
    if close:
        return close[0]
    # A short name is far from its neighbours by ratio after one slip (anm: ann).
    edits = [c for c in choices if len(wrong) >= 3 and _one_edit(wrong, c)]
    return edits[0] if edits else None


def _one_edit(a: str, b: str) -> bool:
    """`a` becomes `b` by one letter changed, added, dropped, or two neighbours swapped."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        swapped = len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
        return len(diff) == 1 or (swapped and a[diff[1]] == b[diff[0]])
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))

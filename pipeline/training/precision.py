"""`trainer.precision`: the numbers the model computes in.

`float32` everywhere (the default), `mixed_bfloat16` (Keras' mixed precision: variables in float32,
layers computing in bfloat16, the output cast back to float32), or `auto`: both are timed on a few
training steps of this very model on this machine, and bfloat16 is taken only where it is clearly
faster. A convolutional network is compute-bound and may gain from bfloat16 on a CPU with wide
vector units; the dense models are bound by the per-step overhead and do not. The choice is kept
per machine, TensorFlow version, model, batch and threads, so it is measured once and every later
run of the same configuration computes in the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.training import backend
from pipeline.training.backend import keras

log = logging.getLogger(__name__)

POLICIES = ("float32", "mixed_bfloat16")
CHOICES = (*POLICIES, "auto")
# bfloat16 is taken when its steps take at most this share of float32's.
MARGIN = 0.9
WARM_UP_STEPS = 3
TIMED_STEPS = 10
REPEATS = 3


def apply(policy: str) -> None:
    """Make `policy` Keras' global dtype policy for the layers built next."""
    keras.mixed_precision.set_global_policy(policy)


def computes_in_float32() -> bool:
    return keras.mixed_precision.global_policy().compute_dtype == "float32"


def choose(
    setting: str,
    build: Callable[[], keras.Model],
    input_shape: tuple[int, ...],
    batch_size: int,
    key: dict,
    cache: Path,
) -> str:
    """The policy to train in: `setting` itself, or for `auto` the faster of POLICIES here.

    Args:
        build: builds and compiles the model (one step per call) under the global policy.
        key: what the timing depends on besides the machine (model, optimizer, threads).
        cache: the JSON file that keeps each measured choice.
    """
    if setting != "auto":
        return setting
    ident = _ident(key, input_shape, batch_size)
    kept = _read(cache)
    if ident in kept:
        entry = kept[ident]
        log.info("trainer.precision=auto: %s (%s, measured before)", entry["choice"], _says(entry))
        return entry["choice"]
    seconds = {"float32": _time_steps("float32", build, input_shape, batch_size)}
    # Where bfloat16 is emulated it is several times slower: one slow repeat is enough to say so.
    seconds["mixed_bfloat16"] = _time_steps(
        "mixed_bfloat16", build, input_shape, batch_size, enough=2 * seconds["float32"]
    )
    faster = seconds["mixed_bfloat16"] <= MARGIN * seconds["float32"]
    entry = {"choice": "mixed_bfloat16" if faster else "float32", "seconds": seconds}
    log.info("trainer.precision=auto: %s (%s)", entry["choice"], _says(entry))
    kept[ident] = entry
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(kept, indent=2) + "\n")
    except OSError as exc:  # the choice still holds for this run
        log.warning("precision choice not kept in %s: %s", cache, exc)
    return entry["choice"]


def _says(entry: dict) -> str:
    s = entry["seconds"]
    return (
        f"{TIMED_STEPS} steps in {s['mixed_bfloat16']:.3f} s with bfloat16 against "
        f"{s['float32']:.3f} s in float32"
    )


def _ident(key: dict, input_shape: tuple[int, ...], batch_size: int) -> str:
    text = json.dumps(
        {
            "cpu": _cpu_name(),
            **backend.version(),
            "shape": list(input_shape),
            "batch": batch_size,
            **key,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(cache: Path) -> dict:
    try:
        kept = json.loads(cache.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: measure again
        return {}
    return kept if isinstance(kept, dict) else {}


def _time_steps(
    policy: str,
    build: Callable[[], keras.Model],
    input_shape: tuple[int, ...],
    batch_size: int,
    enough: float = float("inf"),
) -> float:
    """The median seconds of TIMED_STEPS training steps under `policy` (model built afresh) over
    REPEATS, or the first repeat's where that took longer than `enough`."""
    apply(policy)
    try:
        model = build()
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (batch_size, *input_shape), dtype=np.uint8)
        y = rng.integers(0, model.output_shape[-1], batch_size)
        for _ in range(WARM_UP_STEPS):
            model.train_on_batch(x, y)
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            for _ in range(TIMED_STEPS):
                model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
            if times[-1] > enough:
                break
        return float(np.median(times))
    finally:
        apply("float32")
        keras.backend.clear_session(free_memory=False)

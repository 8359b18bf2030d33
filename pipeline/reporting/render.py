"""Draws a job's report in the recorder process: each figure on its own and timed, the texts,
and the one page that holds them all."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from pipeline.reporting.inputs import ReportRequest

PLOT_DPI = 90


REPORT_TIMINGS = "report_timings.json"


FIGURE_SWITCHES = (
    "samples",
    "learning_curves",
    "predictions",
    "confusion_matrix",
    "mistakes",
    "weights",
)


def draw_figures(
    switches, cfg, ds, history, metrics, weights, request: ReportRequest, out: Path
) -> tuple[dict[str, bytes | str], dict[str, float]]:
    """Draw the report's artifacts of `switches` (each on its own, timed) into `out/plots` and
    `out`; return what was written by name, and the seconds of each switch."""
    import time
    from dataclasses import replace

    from pipeline.reporting.figures import report

    written: dict[str, bytes | str] = {}
    seconds: dict[str, float] = {}
    for switch in switches:
        if not getattr(cfg, switch):
            continue
        began = time.perf_counter()
        one = replace(cfg, **{s: s == switch for s in FIGURE_SWITCHES})
        for name, item in report(one, ds, history, metrics, weights, request.title).items():
            if isinstance(item, str):
                (out / name).write_text(item)
                written[name] = item
            else:
                buf = io.BytesIO()
                item.savefig(buf, format="png", dpi=PLOT_DPI)
                (out / "plots").mkdir(parents=True, exist_ok=True)
                (out / "plots" / name).write_bytes(buf.getvalue())
                written[name] = buf.getvalue()
        seconds[switch] = time.perf_counter() - began
    return written, seconds


def draw_samples(
    out: Path, request: ReportRequest, images, labels, class_names
) -> tuple[dict, dict]:
    """samples.png, which needs only the data: drawn while the model trains."""
    import numpy as np

    from pipeline.data.load import Dataset

    empty = np.zeros((0, *images.shape[1:]), np.uint8)
    ds = Dataset(
        "",
        images,
        labels,
        empty,
        np.zeros(0, np.uint8),
        tuple(class_names),
        ink_on_black=request.ink_on_black,
    )
    return draw_figures(["samples"], request.config, ds, None, None, {}, request, out)


def draw_report(
    inputs: Path, out: Path, request: ReportRequest, drawn: tuple[dict, dict] = ({}, {})
) -> list[Path]:
    """Draw the report's figures into `out/plots` and its texts (and report.html) into `out`,
    from the arrays at `inputs`; return the text files written.

    Each figure is drawn and encoded on its own, and its seconds go to report_timings.json.
    `drawn` holds what was drawn before (the samples, during training) and its seconds.
    """
    import json
    import time

    from pipeline.reporting.inputs import load_report_inputs
    from pipeline.reporting.pages import render_html

    cfg = request.config
    ds, history, metrics = load_report_inputs(inputs)
    with np_load(request.weights) as weights:
        todo = [s for s in FIGURE_SWITCHES if f"{s}.png" not in drawn[0]]
        written, seconds = draw_figures(todo, cfg, ds, history, metrics, weights, request, out)
    written = drawn[0] | written  # the samples, drawn first, come first
    seconds = drawn[1] | seconds
    texts = [out / name for name, item in written.items() if isinstance(item, str)]
    if cfg.html:
        began = time.perf_counter()
        page = render_html(request.title, request.settings, request.final, written)
        (out / "report.html").write_text(page)
        texts.append(out / "report.html")
        seconds["html"] = time.perf_counter() - began
    (out / REPORT_TIMINGS).write_text(json.dumps(seconds, indent=2) + "\n")
    return texts


def warm_up() -> None:
    """Import and exercise what the report draws with, while the trainer imports TensorFlow:
    matplotlib's first figure loads its fonts."""
    from matplotlib.figure import Figure

    import pipeline.reporting.figures  # noqa: F401  (matplotlib, scikit-learn's displays)

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().set_title("warm")
    fig.savefig(io.BytesIO(), format="png")


@contextlib.contextmanager
def np_load(path: str):
    import numpy as np

    with np.load(path, allow_pickle=False) as saved:
        yield {k: saved[k] for k in saved.files}

"""The recorder process: it owns one job's MLflow run, records what the training process sends,
draws the report, and closes the run with the status that happened.

It runs beside training on the other core (started by `client.RecorderClient` before TensorFlow
is imported) and never imports TensorFlow: the model arrives as a saved .keras file, the report's
inputs as arrays. Ctrl-C reaches the whole terminal's process group, so the recorder ignores
SIGINT and SIGTERM: the training process tells it how the job ended, and if that process dies
without a word, the closed pipe says so.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import sys
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DIED = (
    "training process {pid} died before it closed the run (killed, e.g. by SIGKILL or the "
    "out-of-memory killer, or crashed); the epochs recorded until then are kept"
)
PLOT_DPI = 90
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # as Hydra's job log


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}"


class _Run:
    """The MLflow run of one job, or nothing when tracking is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        self.failure: tuple[str, str] | None = None  # (stage, error) of the recorder's own part
        self.drawn: tuple[dict, dict] = ({}, {})  # figures drawn during training, their seconds
        self.latest: dict[str, float] = {}  # each metric's last value
        self.model_logged = False

    def open(self, spec) -> str | None:
        if not self.enabled:
            return None
        import mlflow

        from pipeline.tracking.links import run_url, ui_base
        from pipeline.tracking.parents import parent_experiment_after_setup
        from pipeline.tracking.store import setup, store_ready

        if spec.parent_run_id is not None:
            experiment_id = parent_experiment_after_setup(spec.tracking, spec.parent_run_id)
        else:
            experiment_id = setup(spec.tracking, spec.experiment)
        name, tags = store_ready(spec.run_name, spec.tags)
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=name,
            tags=tags,
            parent_run_id=spec.parent_run_id,
        )
        self.run_id = run.info.run_id
        self.name = name
        self.spec = spec
        self.url = run_url(ui_base(spec.tracking.uri), experiment_id, self.run_id)
        if spec.params:
            mlflow.log_params(spec.params)
        log.info("MLflow run %s (%s) in %s", self.run_id, name, mlflow.get_tracking_uri())
        return self.run_id

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def datasets(self, dataset_cfg, inputs: list[dict]) -> None:
        if not self.active:
            return
        import mlflow

        from pipeline.stages.load import load

        ds = load(dataset_cfg)  # read once per process, as in the trainer
        for item in inputs:
            x = getattr(ds, f"{item['part']}_x")[item["start"] : item["stop"]]
            y = getattr(ds, f"{item['part']}_y")[item["start"] : item["stop"]]
            with warnings.catch_warnings():  # "will assume … a LocalArtifactDatasetSource"
                warnings.simplefilter("ignore")
                dataset = mlflow.data.from_numpy(
                    x, targets=y, source=item["source"], name=item["name"], digest=item["digest"]
                )
            mlflow.log_input(dataset, context=item["context"])

    def params(self, params: Mapping[str, Any]) -> None:
        if self.active:
            import mlflow

            mlflow.log_params(dict(params))

    def metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.active:
            import mlflow

            mlflow.log_metrics(dict(metrics), step=step)
            self.latest |= metrics

    def files(self, paths, folder: str | None = None) -> None:
        if self.active:
            import mlflow

            for path in paths:
                if Path(path).is_file():
                    mlflow.log_artifact(path, artifact_path=folder)

    def folder(self, local_dir: str, folder: str) -> None:
        if self.active and Path(local_dir).is_dir():
            import mlflow

            mlflow.log_artifacts(local_dir, folder)

    def model(self, saved: str, example_in, example_out, versions: dict) -> None:
        if self.active:
            log_keras_file(Path(saved), example_in, example_out, versions)
            self.model_logged = True

    def samples(self, out_dir: str, request: dict, images, labels, class_names) -> None:
        self.drawn = draw_samples(Path(out_dir), request, images, labels, class_names)

    def report(self, inputs: str, out_dir: str, request: dict) -> None:
        try:
            written = draw_report(Path(inputs), Path(out_dir), request, self.drawn)
        finally:
            Path(inputs).unlink(missing_ok=True)  # the arrays were only for the figures
        if self.active:
            self.folder(str(Path(out_dir) / "plots"), "plots")
            self.files([str(p) for p in written])

    def close(self, status: str, error: str | None, tags: Mapping[str, str]) -> None:
        if not self.active:
            return
        import mlflow
        from mlflow.entities import RunStatus

        from pipeline.tracking.store import MAX_TAG_CHARS

        if self.failure is not None and status == "FINISHED":
            stage, message = self.failure
            status, error = "FAILED", f"stage {stage} failed: {message}"
            tags = {**tags, "failed_stage": stage}
        try:
            for key, value in tags.items():
                mlflow.set_tag(key, str(value)[:MAX_TAG_CHARS])
            if error:
                mlflow.set_tag("error", error[:MAX_TAG_CHARS])
        finally:
            mlflow.end_run(RunStatus.to_string(getattr(RunStatus, status)))
        log.info("run %s %s: %s", self.name, status, self.url)
        if status == "FINISHED" and self.spec.tracking.register and self.model_logged:
            self._register()
        self.run_id = None

    def _register(self) -> None:
        """A single run asked to be registered (`tracking.register=true`)."""
        from pipeline.tracking.registry import register

        try:
            message = register(
                self.run_id,
                self.spec.tags.get("dataset", self.spec.experiment),
                self.latest,
                self.spec.tags,
                {k: str(v) for k, v in self.spec.params.items()},
            )
            log.info("%s", message)
        except Exception as exc:  # the run is recorded; only its registration failed
            log.error("registering the model failed: %s", _one_line(exc))


def serve(conn) -> None:
    """Record the jobs of the training process, one after the other, until it closes the pipe
    or dies."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # To stdout, as Hydra's console log: stderr is for the job's one-line errors.
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stdout)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("pipeline.stages").setLevel(logging.WARNING)  # the trainer says it
    import mlflow  # noqa: F401  (now, on this core, while the trainer imports TensorFlow)

    warm_up()

    parent_pid = os.getppid()
    run = _Run(enabled=False)
    job = None  # the number of the job whose run is open, carried by each reply to it
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            # The training process is gone; if a run is open, it never closed it.
            if run.active:
                run.close("FAILED", DIED.format(pid=parent_pid), {})
            return
        kind, args = message[0], message[1:]
        if kind == "sync":  # everything sent before is done
            conn.send(("synced", *args))
        elif kind == "open":
            spec, enabled, job = args
            run = _Run(enabled)
            try:
                conn.send(("opened", job, run.open(spec)))
            except Exception as exc:
                conn.send(("store_error", job, f"tracking store: {_one_line(exc)}"))
        elif kind == "close":
            job, *args = args  # (a job that failed before it opened a run closes too)
            try:
                run.close(*args)
            except Exception as exc:
                log.error("closing the run failed: %s", _one_line(exc))
                run.failure = run.failure or ("recording (close)", _one_line(exc))
            finally:
                with contextlib.suppress(OSError):
                    conn.send(("closed", job, run.failure))
            run = _Run(enabled=False)
        else:
            try:
                getattr(run, kind)(*args)
            except Exception as exc:
                # The run goes on: later records are kept, and its end says what failed.
                stage = "report" if kind in ("report", "samples") else f"recording ({kind})"
                log.error("%s failed: %s\n%s", stage, _one_line(exc), traceback.format_exc())
                if run.failure is None:
                    run.failure = (stage, _one_line(exc))


# --- the model, logged from its file -----------------------------------------------------------


class _KerasFileFlavor:
    """MLflow's Keras flavour, written from a saved .keras file without importing Keras.

    Loads with `mlflow.keras.load_model` and as a pyfunc exactly as a model saved by
    `mlflow.keras.save_model` does: the same folder (data/model.keras, data/keras_module.txt),
    the same flavour entries, environment files.
    """

    @staticmethod
    def save_model(
        path: str,
        saved: Path,
        versions: dict,
        mlflow_model=None,
        signature=None,
        input_example=None,
        pip_requirements=None,
        **_: Any,
    ) -> None:
        import yaml
        from mlflow import pyfunc
        from mlflow.models.model import MLMODEL_FILE_NAME, Model
        from mlflow.models.utils import _save_example
        from mlflow.utils.environment import (
            _CONDA_ENV_FILE_NAME,
            _PYTHON_ENV_FILE_NAME,
            _REQUIREMENTS_FILE_NAME,
            _process_pip_requirements,
            _PythonEnv,
        )
        from mlflow.utils.file_utils import write_to

        os.makedirs(os.path.join(path, "data"), exist_ok=True)
        model = mlflow_model or Model()
        if signature is not None:
            model.signature = signature
        if input_example is not None:
            _save_example(model, input_example, path)
        Path(path, "data", "keras_module.txt").write_text("keras")
        shutil.copyfile(saved, Path(path, "data", "model.keras"))
        model.add_flavor(
            "keras",
            data="data",
            keras_version=versions["keras"],
            keras_backend=versions["backend"],
            save_exported_model=False,
        )
        pyfunc.add_to_model(
            model,
            loader_module="mlflow.keras",
            conda_env=_CONDA_ENV_FILE_NAME,
            python_env=_PYTHON_ENV_FILE_NAME,
        )
        model.save(os.path.join(path, MLMODEL_FILE_NAME))
        conda_env, requirements, _ = _process_pip_requirements(None, pip_requirements, None)
        with open(os.path.join(path, _CONDA_ENV_FILE_NAME), "w") as f:
            yaml.safe_dump(conda_env, stream=f, default_flow_style=False)
        write_to(os.path.join(path, _REQUIREMENTS_FILE_NAME), "\n".join(requirements))
        _PythonEnv.current().to_yaml(os.path.join(path, _PYTHON_ENV_FILE_NAME))


def log_keras_file(saved: Path, example_in, example_out, versions: dict) -> str:
    """Log a saved .keras model in MLflow's Keras flavour, with signature and input example.

    Returns:
        The model's URI, loadable with `mlflow.keras.load_model`.
    """
    from mlflow.models import Model, infer_signature

    requirements = [f"keras=={versions['keras']}", f"tensorflow=={versions['tensorflow']}"]
    with contextlib.redirect_stdout(io.StringIO()):
        info = Model.log(
            artifact_path=None,
            name="model",
            flavor=_KerasFileFlavor,
            flavor_name="mlflow.keras",
            saved=saved,
            versions=versions,
            signature=infer_signature(example_in, example_out),
            input_example=example_in,
            pip_requirements=requirements,
            # Checking the example would load the model with TensorFlow in this process; the
            # tests load the logged model and predict with it instead.
            validate_serving_input=False,
        )
    return info.model_uri


# --- the report --------------------------------------------------------------------------------


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
    switches, cfg, ds, history, metrics, weights, request: dict, out: Path
) -> tuple[dict[str, bytes | str], dict[str, float]]:
    """Draw the report's artifacts of `switches` (each on its own, timed) into `out/plots` and
    `out`; return what was written by name, and the seconds of each switch."""
    import time
    from dataclasses import replace

    from pipeline.stages.report import report

    written: dict[str, bytes | str] = {}
    seconds: dict[str, float] = {}
    for switch in switches:
        if not getattr(cfg, switch):
            continue
        began = time.perf_counter()
        one = replace(cfg, **{s: s == switch for s in FIGURE_SWITCHES})
        for name, item in report(
            one, ds, history, metrics, weights, request["model"], request["title"]
        ).items():
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


def draw_samples(out: Path, request: dict, images, labels, class_names) -> tuple[dict, dict]:
    """samples.png, which needs only the data: drawn while the model trains."""
    import numpy as np

    from pipeline.config import ReportConfig
    from pipeline.stages.load import Dataset

    empty = np.zeros((0, *images.shape[1:]), np.uint8)
    ds = Dataset("", images, labels, empty, np.zeros(0, np.uint8), tuple(class_names))
    cfg = ReportConfig(**request["config"])
    return draw_figures(["samples"], cfg, ds, None, None, {}, request, out)


def draw_report(
    inputs: Path, out: Path, request: dict, drawn: tuple[dict, dict] = ({}, {})
) -> list[Path]:
    """Draw the report's figures into `out/plots` and its texts (and report.html) into `out`,
    from the arrays at `inputs`; return the text files written.

    Each figure is drawn and encoded on its own, and its seconds go to report_timings.json.
    `drawn` holds what was drawn before (the samples, during training) and its seconds.
    """
    import json
    import time

    from pipeline.config import ReportConfig
    from pipeline.stages.report import render_html
    from pipeline.stages.results import load_report_inputs

    cfg = ReportConfig(**request["config"])
    ds, history, metrics = load_report_inputs(inputs)
    with np_load(request["weights"]) as weights:
        todo = [s for s in FIGURE_SWITCHES if f"{s}.png" not in drawn[0]]
        written, seconds = draw_figures(todo, cfg, ds, history, metrics, weights, request, out)
    written = drawn[0] | written  # the samples, drawn first, come first
    seconds = drawn[1] | seconds
    texts = [out / name for name, item in written.items() if isinstance(item, str)]
    if cfg.html:
        began = time.perf_counter()
        page = render_html(request["title"], request["settings"], request["final"], written)
        (out / "report.html").write_text(page)
        texts.append(out / "report.html")
        seconds["html"] = time.perf_counter() - began
    (out / REPORT_TIMINGS).write_text(json.dumps(seconds, indent=2) + "\n")
    return texts


def warm_up() -> None:
    """Import and exercise what the report draws with, while the trainer imports TensorFlow:
    matplotlib's first figure loads its fonts."""
    from matplotlib.figure import Figure

    import pipeline.stages.report  # noqa: F401  (matplotlib, scikit-learn's displays)

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().set_title("warm")
    fig.savefig(io.BytesIO(), format="png")


@contextlib.contextmanager
def np_load(path: str):
    import numpy as np

    with np.load(path, allow_pickle=False) as saved:
        yield {k: saved[k] for k in saved.files}


if __name__ == "__main__":  # started by client._Process with its end of a socket pair
    from multiprocessing.connection import Connection

    serve(Connection(int(sys.argv[1])))

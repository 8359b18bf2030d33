"""The Keras model, logged to MLflow from its saved .keras file, without importing Keras."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path
from typing import Any


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
        # The pyfunc flavour's loader comes with the model: MLflow's own prints Keras'
        # progress bar into every client's output.
        loader = Path(__file__).with_name("quiet_keras_pyfunc.py")
        Path(path, "code").mkdir(exist_ok=True)
        shutil.copyfile(loader, Path(path, "code", loader.name))
        pyfunc.add_to_model(
            model,
            loader_module=loader.stem,
            data="data",
            code="code",
            conda_env=_CONDA_ENV_FILE_NAME,
            python_env=_PYTHON_ENV_FILE_NAME,
        )
        model.save(os.path.join(path, MLMODEL_FILE_NAME))
        conda_env, requirements, _ = _process_pip_requirements(None, pip_requirements, None)
        with open(os.path.join(path, _CONDA_ENV_FILE_NAME), "w") as f:
            yaml.safe_dump(conda_env, stream=f, default_flow_style=False)
        write_to(os.path.join(path, _REQUIREMENTS_FILE_NAME), "\n".join(requirements))
        _PythonEnv.current().to_yaml(os.path.join(path, _PYTHON_ENV_FILE_NAME))


def log_keras_file(
    saved: Path, example_in, example_out, versions: dict, metadata: dict | None = None
) -> str:
    """Log a saved .keras model in MLflow's Keras flavour, with signature, input example and
    `metadata` (read back by `mlflow.models.get_model_info(uri).metadata`).

    Returns:
        The model's URI, loadable with `mlflow.keras.load_model`.
    """
    from mlflow.models import Model, infer_signature

    # Keras loads the file on any engine; TensorFlow is the one it takes unless told otherwise.
    engine = versions["backend"]
    requirements = [f"keras=={versions['keras']}", f"{engine}=={versions[engine]}"]
    if engine != "tensorflow" and _installed("tensorflow"):
        requirements.append(f"tensorflow=={_installed('tensorflow')}")
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
            metadata=metadata or None,
            # Checking the example would load the model with TensorFlow in this process; the
            # tests load the logged model and predict with it instead.
            validate_serving_input=False,
        )
    return info.model_uri


def _installed(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None

"""Experiment-tracked Keras pipeline for MNIST and Fashion-MNIST."""

import os

# TensorFlow's C++ start-up messages (CUDA probing on a machine without a GPU, oneDNN notes)
# say nothing a user can act on; set before TensorFlow is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def use_store(uri: str | None = None) -> str:
    """Point MLflow at the pipeline's store, from any working directory, and return its URI.

    `uri` if given, else $MLFLOW_TRACKING_URI, else the project's `sqlite:///<project>/mlflow.db`
    (MLflow's own default would be a new, empty `./mlflow.db` wherever Python runs):

        import mlflow, pipeline
        pipeline.use_store()
        model = mlflow.keras.load_model("models:/mnist-classifier@champion")
    """
    import mlflow

    from pipeline.tracking.store import connect_uri, resolve_uri

    uri = resolve_uri(uri)
    mlflow.set_tracking_uri(connect_uri(uri))
    return uri


def load_classifier(model: str):
    """A trained model from the pipeline's store, from any working directory: `model` is
    `models:/NAME@ALIAS`, `runs:/<run id>/model` or a run id. Returns a `Classifier`: its Keras
    model (`.model`), the class names it was trained with (`.class_names`), and
    `.probabilities(images)` for uint8 images of shape (n, 28, 28).

    Raises:
        pipeline.serving.classifier.ModelError: the model is not there, or does not take 28x28
            images.
    """
    from pipeline.serving.classifier import load_classifier as load

    return load(model)

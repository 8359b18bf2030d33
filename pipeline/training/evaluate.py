"""Stage `evaluate`: test-set loss and accuracy, per-class report and confusion matrix."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from pipeline.data.preprocess import Split
from pipeline.training.backend import keras
from pipeline.training.fit import EVAL_BATCH_SIZE
from pipeline.training.results import Metrics


def evaluate(
    model: keras.Model, test: Split, class_names: tuple[str, ...], batch_size: int = EVAL_BATCH_SIZE
) -> Metrics:
    """Predict the test set once and derive every metric but the loss from those probabilities.

    The loss is Keras' own, computed as `fit` computes `val_loss` (from the softmax layer's
    logits), so that test and validation losses compare even when training diverged.
    """
    probs = model.predict(test.x, batch_size=batch_size, verbose=0)
    loss = model.evaluate(test.x, test.y, batch_size=batch_size, verbose=0, return_dict=True)
    preds = probs.argmax(axis=1)
    labels = np.arange(len(class_names))
    return Metrics(
        loss=float(loss["loss"]),
        accuracy=float(accuracy_score(test.y, preds)),
        probabilities=probs,
        predictions=preds,
        labels=test.y,
        confusion=confusion_matrix(test.y, preds, labels=labels),
        report=classification_report(
            test.y,
            preds,
            labels=labels,
            target_names=list(class_names),
            output_dict=True,
            zero_division=0,
        ),
    )

"""Experiment-tracked Keras pipeline for MNIST and Fashion-MNIST."""

import os

# TensorFlow's C++ start-up messages (CUDA probing on a machine without a GPU, oneDNN notes)
# say nothing a user can act on; set before TensorFlow is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

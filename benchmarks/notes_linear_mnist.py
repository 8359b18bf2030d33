"""Experiment 1 of the course notes as the notes write it: linear softmax classifier on MNIST.

Plain Keras, float64 arrays from /255, `model.fit` with default settings. Figures are saved
instead of shown (no screen). Writes its timings and accuracies as JSON to $BENCH_RESULT.
"""

import json
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _notes_data import load_data
from tensorflow import keras

out = os.environ.get("BENCH_OUT", ".")
# The notes set no seed; the benchmark gives the same one as the pipeline's (42), so that the
# two accuracies differ by the code, not by the luck of the draw (about 1 point on the ANN).
if os.environ.get("BENCH_SEED"):
    keras.utils.set_random_seed(int(os.environ["BENCH_SEED"]))
# Smoke runs only (the benchmark's --smoke): fewer epochs and images.
EPOCHS = int(os.environ.get("BENCH_EPOCHS", "30"))
LIMIT = int(os.environ.get("BENCH_LIMIT", "60000"))
(x_train, y_train), (x_test, y_test) = load_data("mnist")
x_train, y_train, x_test, y_test = x_train[:LIMIT], y_train[:LIMIT], x_test[:LIMIT], y_test[:LIMIT]
plt.imshow(x_train[0], cmap="gray")
plt.savefig(f"{out}/image.png")
plt.close()

x_train = x_train.reshape(len(x_train), 784) / 255
x_test = x_test.reshape(len(x_test), 784) / 255

model = keras.Sequential([keras.layers.Dense(10, activation="softmax", input_shape=(784,))])
model.summary()
model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics=["acc"])
start = time.perf_counter()
history = model.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, validation_split=0.2)
fit_seconds = time.perf_counter() - start

plt.plot(history.history["acc"], label="train acc")
plt.plot(history.history["val_acc"], label="val acc")
plt.legend()
plt.savefig(f"{out}/acc.png")
plt.close()
test_loss, test_acc = model.evaluate(x_test, y_test)
W, b = model.get_weights()
print(W.shape, b.shape)
plt.plot(history.history["loss"], label="train loss")
plt.plot(history.history["val_loss"], label="val loss")
plt.legend()
plt.savefig(f"{out}/loss.png")
plt.close()

result = {
    "fit_seconds": fit_seconds,
    "val_accuracy": history.history["val_acc"][-1],
    "test_accuracy": float(test_acc),
}
with open(os.environ.get("BENCH_RESULT", "/dev/stdout"), "w") as fh:
    json.dump(result, fh)
sys.exit(0)

"""Experiment 1 of the course notes as the notes write it: linear softmax classifier on MNIST.

Plain Keras, float64 arrays from /255, `model.fit` with default settings. Figures are saved
instead of shown (no screen). Writes its timings and accuracies as JSON to $BENCH_RESULT.
"""

import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _notes_data import bench_result, bench_start
from tensorflow import keras

out, EPOCHS, ((x_train, y_train), (x_test, y_test)) = bench_start("mnist", epochs=30)
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
bench_result(result)
sys.exit(0)

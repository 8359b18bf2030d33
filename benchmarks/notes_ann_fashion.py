"""Experiment 2 of the course notes as the notes write it: ANN on Fashion-MNIST.

Plain Keras, float64 arrays from /255, `model.fit` with default settings. Figures are saved
instead of shown (no screen). Writes its timings and accuracies as JSON to $BENCH_RESULT.
"""

import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _notes_data import bench_result, bench_start
from sklearn.metrics import accuracy_score
from tensorflow import keras

out, EPOCHS, data = bench_start("fashion-mnist", epochs=20)
(train_images, train_labels), (test_images, test_labels) = data
class_names = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

plt.figure(figsize=(10, 10))
for i in range(20):
    plt.subplot(4, 5, i + 1)
    plt.imshow(train_images[i], cmap="gray")
    plt.title(class_names[train_labels[i]])
    plt.axis("off")
plt.savefig(f"{out}/samples.png")
plt.close()
plt.figure()
plt.imshow(train_images[0])
plt.colorbar()
plt.savefig(f"{out}/colorbar.png")
plt.close()

train_images = train_images / 255.0
test_images = test_images / 255.0
plt.figure(figsize=(10, 10))
for i in range(20):
    plt.subplot(4, 5, i + 1)
    plt.xticks([])
    plt.yticks([])
    plt.imshow(train_images[i], cmap=plt.cm.binary)
    plt.xlabel(class_names[train_labels[i]])
plt.savefig(f"{out}/scaled.png")
plt.close()

model = keras.Sequential(
    [
        keras.layers.Flatten(input_shape=(28, 28)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
model.summary()
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
start = time.perf_counter()
model.fit(train_images, train_labels, epochs=EPOCHS)
fit_seconds = time.perf_counter() - start

predictions = model.predict(test_images)


def plot_image(i, predictions_array, true_label, img):
    plt.xticks([])
    plt.yticks([])
    plt.imshow(img[i], cmap=plt.cm.binary)
    predicted_label = np.argmax(predictions_array)
    color = "blue" if predicted_label == true_label[i] else "red"
    plt.xlabel(
        f"{class_names[predicted_label]} {100 * np.max(predictions_array):2.0f}% "
        f"({class_names[true_label[i]]})",
        color=color,
    )


def plot_value_array(i, predictions_array, true_label):
    plt.xticks(range(10))
    plt.yticks([])
    bars = plt.bar(range(10), predictions_array, color="#777777")
    plt.ylim([0, 1])
    bars[np.argmax(predictions_array)].set_color("red")
    bars[true_label[i]].set_color("blue")


rows, cols = 5, 3
plt.figure(figsize=(2 * 2 * cols, 2 * rows))
for i in range(rows * cols):
    plt.subplot(rows, 2 * cols, 2 * i + 1)
    plot_image(i, predictions[i], test_labels, test_images)
    plt.subplot(rows, 2 * cols, 2 * i + 2)
    plot_value_array(i, predictions[i], test_labels)
plt.tight_layout()
plt.savefig(f"{out}/predictions.png")
plt.close()

test_acc = accuracy_score(test_labels, np.argmax(predictions, axis=1))
bench_result({"fit_seconds": fit_seconds, "val_accuracy": None, "test_accuracy": test_acc})

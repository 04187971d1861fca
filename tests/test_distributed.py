"""tf.distribute: two logical CPU replicas give the single-device update."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import numpy as np
import tensorflow as tf
physical = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    physical, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from snubridge import models
from snubridge.training import train_classifier

rng = np.random.default_rng(0)
x = (rng.random((32, 8, 20)) < 0.3).astype("float32")
y = rng.integers(0, 10, 32)

def one_step(strategy):
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = models.dense_snu(20, (12,), n_steps=8, decay=0.9)
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    return [w.numpy() for w in model.weights]

devices = [d.name for d in tf.config.list_logical_devices("CPU")]
mirrored = tf.distribute.MirroredStrategy(devices)
assert mirrored.num_replicas_in_sync == 2, mirrored.num_replicas_in_sync
single = one_step(tf.distribute.OneDeviceStrategy(devices[0]))
both = one_step(mirrored)
initial = None
for a, b in zip(single, both):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
keras.utils.set_random_seed(1)
start = models.dense_snu(20, (12,), n_steps=8, decay=0.9).weights[0].numpy()
assert np.abs(start - single[0]).max() > 1e-4, "the step changed no weight"

images = rng.random((64, 20)).astype("float32")
_, history = train_classifier(
    lambda: models.dense_snu(20, (12,), n_steps=8), (images, rng.integers(0, 10, 64)),
    n_steps=8, epochs=1, batch_size=32, strategy=mirrored, verbose=0)
assert len(history["loss"]) == 1
print("ok")
"""


def test_mirrored_strategy_matches_single_device():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")

"""Hardware-in-the-loop training of Keras SNU models on PCM pairs."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from snubridge import models  # noqa: E402
from snubridge.errors import DeviceError  # noqa: E402
from snubridge.pcm.hwloop import KerasHardwareLoop  # noqa: E402


def _frame_nll(targets, probabilities, mask):
    p = tf.clip_by_value(probabilities, 1e-7, 1 - 1e-7)
    frame = -tf.reduce_sum(
        targets * tf.math.log(p) + (1 - targets) * tf.math.log(1 - p), -1
    )
    return tf.reduce_sum(frame * mask) / tf.reduce_sum(mask)


def _toy_data(rng, pieces=8, steps=12, keys=6):
    rolls = (rng.random((pieces, steps + 1, keys)) < 0.3).astype(np.float32)
    # Key k repeats key k - 1 of the frame before, so there is something to learn.
    rolls[:, 1:, 1:] = np.maximum(rolls[:, 1:, 1:], rolls[:, :-1, :-1])
    return rolls[:, :-1], rolls[:, 1:], np.ones((pieces, steps), np.float32)


def test_keras_loop_routes_kernels_to_pcm():
    keras.utils.set_random_seed(0)
    model = models.jsb_ssnu(n_keys=6, hidden=5)
    loop = KerasHardwareLoop(model, _frame_nll, learning_rate=0.05, seed=1)
    names = sorted(variable.path.rsplit("/", 1)[-1] for variable, _ in loop.analog)
    assert names == ["kernel", "kernel"]
    assert loop.devices == 2 * (6 * 5 + 5 * 6)
    assert all("kernel" not in variable.path for variable in loop.digital)
    inputs, targets, mask = _toy_data(np.random.default_rng(2))
    digital_before = [np.array(variable.numpy()) for variable in loop.digital]
    variable, weight = loop.analog[0]
    reads = []
    original_read = weight.read

    def recording_read():
        reads.append(original_read())
        return reads[-1]

    weight.read = recording_read
    for _ in range(3):
        loss = loop.train_step(inputs, targets, mask)
    assert np.isfinite(loss)
    assert len(reads) == 3
    # The forward pass used the last noisy read: kernel gradients go to the
    # devices, not to the variable, so it still holds that read.
    np.testing.assert_array_equal(variable.numpy(), reads[-1].astype(np.float32))
    moved = [
        not np.allclose(before, variable.numpy())
        for before, variable in zip(digital_before, loop.digital, strict=True)
    ]
    assert any(moved)
    assert sum(weight.pair.pulses for _, weight in loop.analog) > 0


def test_weight_range_per_kernel():
    keras.utils.set_random_seed(0)
    model = models.jsb_ssnu(n_keys=6, hidden=5)
    ranges = {"ssnu_hidden/kernel": 2.0, "ssnu_output/kernel": 0.5}
    loop = KerasHardwareLoop(model, _frame_nll, seed=1, weight_range=ranges)
    weights = {variable.path: weight for variable, weight in loop.analog}
    hidden = weights["ssnu_hidden/kernel"]
    output = weights["ssnu_output/kernel"]
    # A weight of weight_range maps to 90 % of the refresh threshold.
    threshold = hidden.pair.refresh_threshold
    assert hidden.scale == pytest.approx(0.9 * threshold / 2.0)
    assert output.scale == pytest.approx(0.9 * threshold / 0.5)
    # The same device step is a four times larger weight step on the wider range.
    assert hidden.step == pytest.approx(4 * output.step)


def test_weight_range_names_unknown_kernel():
    keras.utils.set_random_seed(0)
    model = models.jsb_ssnu(n_keys=6, hidden=5)
    with pytest.raises(DeviceError, match="ssnu_hiden/kernel"):
        KerasHardwareLoop(model, _frame_nll, weight_range={"ssnu_hiden/kernel": 1.0})


@pytest.mark.slow
def test_jsb_network_trains_in_the_loop():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pcm.py"
    module_spec = importlib.util.spec_from_file_location("bench_pcm", path)
    bench = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bench)
    result = bench.bench_hwloop(quick=True)
    history = result["training_nll"]
    assert history["hardware"][-1] < history["hardware"][0]
    # Coarse, noisy SET pulses train slower than float weights: after two
    # epochs at learning rate 3e-3 the validation NLL was 13.1 against 10.7
    # nats per step.
    validation = result["validation_nll"]
    assert validation["hardware"] < 2 * validation["software"]
    assert result["devices"] == 2 * (88 * 150 + 150 * 88)


def test_cli_deploy_reads_keras_model(tmp_path, capsys):
    from snubridge import keras_io
    from snubridge.cli import main

    keras.utils.set_random_seed(3)
    model = models.dense_snu(n_inputs=12, hidden=(8,), n_outputs=3)
    path = keras_io.save_model(model, tmp_path / "model.keras")
    rng = np.random.default_rng(4)
    data = tmp_path / "data.npz"
    inputs = (rng.random((10, 5, 12)) < 0.4).astype(np.float32)
    np.savez(data, inputs=inputs, labels=rng.integers(0, 3, 10))
    status = main(
        [
            "deploy",
            str(path),
            "--data",
            str(data),
            "--times",
            "60",
            "--output",
            str(tmp_path / "report"),
        ]
    )
    assert status == 0
    assert "60 s" in capsys.readouterr().out

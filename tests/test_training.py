"""Training on real MNIST digits: learning, checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from snubridge import keras_io, load_params, models
from snubridge.train_stage import TrainConfig, run_train
from snubridge.training import rate_coded_dataset, read_checkpoint, train_classifier

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="module")
def digits():
    if not MNIST.is_dir():
        pytest.skip(f"shared MNIST test set not found at {MNIST}")
    from snubridge.data.mnist import load_mnist

    return load_mnist(MNIST)


def test_rate_coding_probability_matches_intensity():
    rng = np.random.default_rng(0)
    images = rng.random((40, 30)).astype("float32")
    dataset = rate_coded_dataset(
        images, np.arange(40), n_steps=400, batch_size=40, seed=1, shuffle=False
    )
    spikes, _ = next(iter(dataset))
    rates = spikes.numpy().mean(axis=1)
    # Binomial standard deviation of a mean of 400 draws is at most 0.025;
    # 5 sigma over 1200 neurons keeps the chance of a false failure negligible.
    assert np.max(np.abs(rates - images)) < 5 * 0.025


def test_training_learns_real_digits(digits, tmp_path):
    train, evaluation = digits.split(8000)
    small = (train.images[:1200] / 255.0, train.labels[:1200])
    held = (evaluation.images[:400] / 255.0, evaluation.labels[:400])
    model, history = train_classifier(
        lambda: models.dense_snu(hidden=(64,), n_steps=16),
        small,
        held,
        n_steps=16,
        epochs=2,
        batch_size=32,
        seed=0,
        verbose=0,
    )
    # Chance is 10 %; two short epochs on 1,200 digits reach far above it.
    assert history["val_accuracy"][-1] > 0.6
    assert history["loss"][-1] < history["loss"][0]


def test_resume_continues_from_last_epoch(digits, tmp_path):
    train, _ = digits.split(8000)
    data = (train.images[:256] / 255.0, train.labels[:256])

    def build():
        return models.dense_snu(hidden=(16,), n_steps=8)

    folder = tmp_path / "ckpt"
    train_classifier(
        build,
        data,
        n_steps=8,
        epochs=1,
        batch_size=64,
        seed=0,
        checkpoint_dir=folder,
        verbose=0,
    )
    state = json.loads((folder / "state.json").read_text())
    assert state["epoch"] == 0
    model, next_epoch, history = read_checkpoint(folder)
    assert next_epoch == 1
    assert len(history["loss"]) == 1
    _, history = train_classifier(
        build,
        data,
        n_steps=8,
        epochs=3,
        batch_size=64,
        seed=0,
        checkpoint_dir=folder,
        resume=True,
        verbose=0,
    )
    assert len(history["loss"]) == 3
    assert json.loads((folder / "state.json").read_text())["epoch"] == 2
    assert not list(folder.glob("*.tmp"))


def test_train_stage_writes_model_and_params(digits, tmp_path):
    config = TrainConfig(
        arch="dense",
        data=str(MNIST),
        out=str(tmp_path / "run"),
        n_train=300,
        n_steps=6,
        epochs=1,
        hidden=(12,),
        seed=2,
    )
    summary = run_train(config)
    spec = load_params(summary["params"])
    model = keras_io.load_model(summary["model"])
    assert [layer.kind for layer in spec.layers] == ["snu_dense", "readout"]
    np.testing.assert_array_equal(spec.layers[0].kernel, model.layers[1].kernel.numpy())
    assert summary["n_train"] == 300
    assert summary["n_evaluation"] == 9700


def test_changed_settings_do_not_resume(digits, tmp_path):
    train, _ = digits.split(8000)
    data = (train.images[:128] / 255.0, train.labels[:128])
    folder = tmp_path / "ckpt"
    train_classifier(
        lambda: models.dense_snu(hidden=(16,), n_steps=4),
        data,
        n_steps=4,
        epochs=1,
        checkpoint_dir=folder,
        checkpoint_settings={"hidden": [16]},
        verbose=0,
    )
    assert read_checkpoint(folder, {"hidden": [16]}) is not None
    assert read_checkpoint(folder, {"hidden": [8]}) is None
    model, history = train_classifier(
        lambda: models.dense_snu(hidden=(8,), n_steps=4),
        data,
        n_steps=4,
        epochs=1,
        checkpoint_dir=folder,
        resume=True,
        checkpoint_settings={"hidden": [8]},
        verbose=0,
    )
    assert model.layers[1].kernel.shape == (784, 8)
    assert len(history["loss"]) == 1

"""Training of SNU models with checkpoints, resume and atomic saving.

:func:`train_classifier` trains on images that are Bernoulli rate-coded anew
for every batch inside the ``tf.data`` pipeline (probability per step equal
to the pixel intensity in [0, 1] times ``max_probability``), from a stateless
generator keyed by ``(seed, epoch, batch)``, so runs are reproducible and no
spike tensor of the whole data set is ever held in memory.

:func:`train_sequences` trains per-step outputs (JSB Chorales next-frame
prediction) with a mask of valid steps.

After every epoch the model is written to ``checkpoint_dir/last.keras`` and
the epoch number and history to ``checkpoint_dir/state.json``, both through a
temporary file and a rename. ``resume=True`` continues from there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from snubridge.errors import DataError, SnubridgeError
from snubridge.keras_io import load_model, save_model
from snubridge.params_file import atomic_write

logger = logging.getLogger(__name__)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save the model and the training state after every epoch, atomically."""

    def __init__(
        self, folder: str | os.PathLike, settings: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.settings = _plain(settings or {})
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        save_model(self.model, self.folder / "last.keras")
        state = {
            "epoch": epoch,
            "history": self.history,
            "settings": self.settings,
            "time": time.time(),
        }
        atomic_write(
            self.folder / "state.json",
            lambda path: Path(path).write_text(json.dumps(state, indent=2)),
        )
        logger.debug("Checkpoint after epoch %d in %s", epoch + 1, self.folder)


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """Return ``settings`` as JSON would read them back (tuples become lists)."""
    return json.loads(json.dumps(settings))


def read_checkpoint(
    folder: str | os.PathLike, settings: dict[str, Any] | None = None
) -> tuple[keras.Model, int, dict] | None:
    """Return ``(model, next_epoch, history)`` from a checkpoint folder, or None.

    With ``settings`` given, a checkpoint saved under other settings is
    ignored (and logged), so a changed architecture or learning rate never
    resumes from a stale model.
    """
    folder = Path(folder)
    state_path, model_path = folder / "state.json", folder / "last.keras"
    if not (state_path.is_file() and model_path.is_file()):
        return None
    try:
        state = json.loads(state_path.read_text())
        epoch = int(state["epoch"])
        history = dict(state.get("history", {}))
        saved_settings = state.get("settings", {})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise SnubridgeError(
            f"Checkpoint state {str(state_path)!r} is invalid ({error}); delete the "
            "folder to start over."
        ) from None
    if settings is not None and saved_settings != _plain(settings):
        changed = sorted(
            key
            for key in set(saved_settings) | set(_plain(settings))
            if saved_settings.get(key) != _plain(settings).get(key)
        )
        logger.warning(
            "Ignoring the checkpoint in %s: it was saved with other settings (%s); "
            "training starts over",
            folder,
            ", ".join(changed),
        )
        return None
    return load_model(model_path), epoch + 1, history


def rate_coded_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    n_steps: int,
    batch_size: int,
    seed: int,
    epoch_counter: tf.Variable | None = None,
    shuffle: bool = True,
    max_probability: float = 1.0,
    frame_shape: tuple[int, ...] | None = None,
    dtype: str = "float32",
) -> tf.data.Dataset:
    """Return a dataset of ``(spikes, labels)`` batches, rate-coded per batch.

    ``images`` are intensities in [0, 1], ``(samples, *frame)``; spikes have
    shape ``(batch, n_steps, *frame_shape)`` (``frame_shape`` defaults to the
    flattened frame). Spikes are drawn with ``tf.random.stateless_uniform``
    keyed by ``(seed, epoch, batch index)``, where the epoch is read from
    ``epoch_counter`` (an int64 variable; a new one at 0 when None) each time a
    batch is drawn.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.size and (np.nanmin(images) < 0 or np.nanmax(images) > 1):
        raise DataError("Intensities must lie in [0, 1]; divide 8-bit images by 255.")
    if not np.all(np.isfinite(images)):
        raise DataError("Images contain NaN or infinite intensities.")
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels.")
    frame = frame_shape or (int(np.prod(images.shape[1:])),)
    count = len(images)
    data = tf.data.Dataset.from_tensor_slices((images.reshape(count, *frame), labels))
    if shuffle:
        data = data.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size).enumerate()
    counter = epoch_counter
    if counter is None:
        counter = tf.Variable(0, dtype=tf.int64, trainable=False)

    def encode(index, batch):
        frames, batch_labels = batch
        shape = tf.concat([[tf.shape(frames)[0], n_steps], tf.shape(frames)[1:]], 0)
        key = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + counter, index])
        draws = tf.random.stateless_uniform(shape, seed=key)
        probability = tf.expand_dims(frames, 1) * max_probability
        return tf.cast(draws < probability, dtype), batch_labels

    return data.map(encode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


class _EpochCounter(keras.callbacks.Callback):
    def __init__(self, counter: tf.Variable) -> None:
        super().__init__()
        self.counter = counter

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.counter.assign(epoch)


def train_classifier(
    build: Callable[[], keras.Model],
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    n_steps: int = 100,
    epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    frame_shape: tuple[int, ...] | None = None,
    verbose: int = 1,
    strategy: tf.distribute.Strategy | None = None,
    checkpoint_settings: dict[str, Any] | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train a rate-coded classifier; return the model and its history.

    Args:
        build: Function returning a fresh, uncompiled model (called inside
            ``strategy.scope()`` when a strategy is given).
        train: ``(images, labels)``, intensities in [0, 1].
        validation: Optional evaluation data in the same form.
        n_steps: Time steps per sample.
        epochs: Total number of epochs (a resumed run trains the remainder).
        batch_size: Samples per batch.
        learning_rate: Adam learning rate.
        seed: Seed of weights, shuffling and spike encoding.
        checkpoint_dir: Folder for per-epoch checkpoints.
        resume: Continue from ``checkpoint_dir`` when it contains a checkpoint.
        frame_shape: Per-step input shape, e.g. ``(28, 28, 1)`` for a CNN.
        verbose: Keras progress-bar verbosity (1 shows a bar per epoch).
        strategy: A ``tf.distribute`` strategy to train under.
        checkpoint_settings: Settings stored with each checkpoint; a resumed
            run whose settings differ starts over.
    """
    if epochs < 1 or batch_size < 1 or n_steps < 1:
        raise SnubridgeError(
            f"epochs, batch_size and n_steps must be positive, received {epochs}, "
            f"{batch_size} and {n_steps}."
        )
    keras.utils.set_random_seed(seed)
    initial_epoch, history = 0, {}
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        restored = (
            read_checkpoint(checkpoint_dir, checkpoint_settings)
            if (resume and checkpoint_dir)
            else None
        )
        if restored is not None:
            model, initial_epoch, history = restored
            logger.info(
                "Resuming from %s at epoch %d", checkpoint_dir, initial_epoch + 1
            )
        else:
            model = build()
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
    if initial_epoch >= epochs:
        logger.info(
            "Checkpoint already contains %d epochs; nothing to train", initial_epoch
        )
        return model, history
    counter = tf.Variable(initial_epoch, dtype=tf.int64, trainable=False)
    dataset = rate_coded_dataset(
        *train,
        n_steps=n_steps,
        batch_size=batch_size,
        seed=seed,
        frame_shape=frame_shape,
        epoch_counter=counter,
    )
    validation_data = None
    if validation is not None:
        validation_data = rate_coded_dataset(
            *validation,
            n_steps=n_steps,
            batch_size=batch_size,
            seed=seed + 1,
            shuffle=False,
            frame_shape=frame_shape,
        )
    callbacks: list[keras.callbacks.Callback] = [_EpochCounter(counter)]
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = AtomicCheckpoint(checkpoint_dir, checkpoint_settings)
        checkpoint.history = {key: list(values) for key, values in history.items()}
        callbacks.append(checkpoint)
    fit = model.fit(
        dataset,
        validation_data=validation_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )
    for key, values in fit.history.items():
        history.setdefault(key, []).extend(float(v) for v in values)
    return model, history


def masked_frame_nll(targets: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    """Keras loss: Bernoulli negative log-likelihood summed over keys, per step.

    ``-sum_k [y_k log p_k + (1 - y_k) log(1 - p_k)]`` with ``p`` clipped to
    ``[eps, 1 - eps]``; masking is applied through Keras sample weights.
    """
    eps = keras.backend.epsilon()
    p = tf.clip_by_value(probabilities, eps, 1.0 - eps)
    targets = tf.cast(targets, p.dtype)
    return -tf.reduce_sum(
        targets * tf.math.log(p) + (1 - targets) * tf.math.log(1 - p), -1
    )


def train_sequences(
    build: Callable[[], keras.Model],
    inputs: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    *,
    epochs: int = 10,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    verbose: int = 1,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    patience: int = 20,
    checkpoint_settings: dict[str, Any] | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train next-step prediction on padded sequences with a step mask.

    ``inputs`` and ``targets`` are ``(pieces, steps, keys)``; ``mask`` is
    ``(pieces, steps)`` with 1 on valid steps. With ``validation`` given as
    ``(inputs, targets, mask)``, training stops after ``patience`` epochs
    without a lower validation loss and keeps the best weights.
    ``checkpoint_settings`` works as in :func:`train_classifier`.
    """
    keras.utils.set_random_seed(seed)
    initial_epoch, history = 0, {}
    restored = (
        read_checkpoint(checkpoint_dir, checkpoint_settings)
        if (resume and checkpoint_dir)
        else None
    )
    if restored is not None:
        model, initial_epoch, history = restored
    else:
        model = build()
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate), loss=masked_frame_nll
        )
    callbacks = []
    if checkpoint_dir is not None:
        checkpoint = AtomicCheckpoint(checkpoint_dir, checkpoint_settings)
        checkpoint.history = {key: list(values) for key, values in history.items()}
        callbacks.append(checkpoint)
    validation_data = None
    if validation is not None:
        valid_inputs, valid_targets, valid_mask = validation
        validation_data = (
            valid_inputs.astype("float32"),
            valid_targets.astype("float32"),
            valid_mask.astype("float32"),
        )
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True
            )
        )
    if initial_epoch < epochs:
        fit = model.fit(
            inputs.astype("float32"),
            targets.astype("float32"),
            sample_weight=mask.astype("float32"),
            validation_data=validation_data,
            epochs=epochs,
            initial_epoch=initial_epoch,
            batch_size=batch_size,
            shuffle=True,
            callbacks=callbacks,
            verbose=verbose,
        )
        for key, values in fit.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
    return model, history

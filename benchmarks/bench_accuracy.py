"""Accuracy on the real MNIST test-set split: dense SNU, spiking CNN, Keras LSTM.

All three train the same way: the first 8,000 images of the MNIST test set
train and the last 2,000 evaluate (file order), Bernoulli rate coding redrawn
every epoch, Adam, the same epochs, batch size and time steps, and the same
mean-rate softmax readout. Wozniak et al. (2020) report 98.5 % (dense) and
99.5 % (CNN) after training on the full 60,000-image MNIST training set.

    python benchmarks/bench_accuracy.py --data ../shared/data/mnist [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    parser.add_argument("--steps", type=int, default=50, help="time steps per sample")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--models", default="dense,conv,lstm", help="models to train")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args()

    from snubridge import models
    from snubridge.data.mnist import load_mnist
    from snubridge.encoders import rate_encode
    from snubridge.training import train_classifier

    train, evaluation = load_mnist(args.data).split(8000)
    builders = {
        "dense": (lambda: models.dense_snu(n_steps=args.steps), None),
        "conv": (lambda: models.conv_snu(n_steps=args.steps), (28, 28, 1)),
        "lstm": (lambda: models.lstm_baseline(n_steps=args.steps), None),
    }
    test_spikes = rate_encode(evaluation.images, args.steps, seed=123).to_array(
        np.float32
    )
    results = {}
    for name in args.models.split(","):
        build, frame = builders[name]
        started = time.perf_counter()
        model, history = train_classifier(
            build,
            (train.images / 255.0, train.labels),
            n_steps=args.steps,
            epochs=args.epochs,
            batch_size=args.batch,
            seed=0,
            frame_shape=frame,
            verbose=2,
        )
        inputs = (
            test_spikes
            if frame is None
            else test_spikes.reshape(-1, args.steps, *frame)
        )
        predicted = np.argmax(model.predict(inputs, batch_size=128, verbose=0), axis=-1)
        accuracy = float(np.mean(predicted == evaluation.labels))
        results[name] = {
            "accuracy": accuracy,
            "train_seconds": time.perf_counter() - started,
            "final_loss": history["loss"][-1],
        }
        print(
            f"{name:6s} accuracy {accuracy:.4f} on 2,000 held-out digits, "
            f"{results[name]['train_seconds']:.0f} s training"
        )
    if "lstm" in results:
        for name in ("dense", "conv"):
            if name in results:
                gap = results[name]["accuracy"] - results["lstm"]["accuracy"]
                print(f"{name} - lstm: {gap * 100:+.2f} points")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"epochs": args.epochs, "steps": args.steps, "results": results},
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()

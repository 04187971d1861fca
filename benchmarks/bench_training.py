"""Training-step speed: fast SNU sequence layer vs per-step cells vs Keras LSTM.

Batch 64, 100 time steps, 784-256-256-10, rate-coded random inputs (the timing
does not depend on the digits). Every model is timed in the same run, after
warm-up steps, and the ratios are printed with the peak resident memory.

    python benchmarks/bench_training.py [--repeats 10] [--jit]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def time_train_steps(model, x, y, repeats: int) -> float:
    """Return the median wall time in seconds of one ``train_on_batch`` step."""
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per model")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--steps", type=int, default=100, help="time steps per sample")
    parser.add_argument("--jit", action="store_true", help="compile with XLA")
    args = parser.parse_args()

    import keras

    from snubridge import models

    rng = np.random.default_rng(0)
    x = (rng.random((args.batch, args.steps, 784)) < 0.1).astype("float32")
    y = rng.integers(0, 10, args.batch)
    results = {}
    builders = {
        "snu_fast": lambda: models.dense_snu(n_steps=args.steps),
        "snu_cells": lambda: models.dense_snu_cells(n_steps=args.steps),
        "lstm": lambda: models.lstm_baseline(n_steps=args.steps),
    }
    for name, build in builders.items():
        keras.utils.set_random_seed(0)
        model = build()
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            jit_compile=args.jit,
        )
        results[name] = time_train_steps(model, x, y, args.repeats)
        print(f"{name:10s} {results[name] * 1e3:9.1f} ms per training step")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"fast / cells speed-up: {results['snu_cells'] / results['snu_fast']:.2f}x "
        "(target >= 1.5x)"
    )
    print(
        f"fast / LSTM speed-up:  {results['lstm'] / results['snu_fast']:.2f}x "
        "(target >= 6x)"
    )
    print(f"peak resident memory of the process: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()

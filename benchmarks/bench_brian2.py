"""Benchmark: many samples in one Brian2 run versus one Brian2 run per sample.

Runs MNIST test digits, Bernoulli rate-coded (spike probability per step =
pixel / 255 times ``--max-rate``), through a random, seeded 784-256-256-10 SNU
network (dense SNU, dense SNU, readout) for ``--steps`` steps, in two ways:

- batched: :func:`snubridge.converters.brian2_export.run_brian2` with
  ``batch_size`` copies of the network in one ``Network``, run batch after
  batch through that network (``--batch-sizes``, 64 and 32 by default; 256
  runs all samples in one run but builds four times as many synapses);
- per sample: one runtime-mode build and run of a one-sample network for each
  sample. Only ``--per-sample`` samples are timed; the time for all samples
  is extrapolated linearly from them (printed as an estimate).

Both paths use the same runtime code-generation target (``--targets``:
numpy and cython by default). The script also checks that the batched rasters
equal the per-sample rasters and :func:`snubridge.reference.simulate`, and
prints the peak resident memory of the process (``resource.getrusage``, so a row
includes the peaks of the rows before it). Usage::

    python benchmarks/bench_brian2.py [--samples 256] [--steps 100]
"""

from __future__ import annotations

import argparse
import gzip
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

from snubridge.reference import simulate
from snubridge.spec import LayerSpec, NetworkSpec

# The shared data folder sits beside the checkout.
MNIST_IMAGES = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "mnist"
    / "t10k-images-idx3-ubyte.gz"
)


def load_images(path: Path, count: int) -> np.ndarray:
    """Return ``count`` images ``(count, 784)`` in [0, 1] from an IDX file."""
    try:
        from snubridge.data.mnist import load_idx
    except ImportError:
        load_idx = None
    if load_idx is not None:
        images = np.asarray(load_idx(path))
    else:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
        # IDX: magic (4 bytes), then 3 big-endian int32 sizes, then uint8 pixels.
        n, rows, cols = np.frombuffer(data, ">i4", count=3, offset=4)
        images = np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)
    return images[:count].reshape(count, -1).astype(np.float64) / 255.0


def random_network(seed: int) -> NetworkSpec:
    """Return a seeded 784-256-256-10 network with moderate firing on MNIST."""
    rng = np.random.default_rng(seed)
    hidden1 = LayerSpec(
        "hidden1",
        "snu_dense",
        kernel=rng.normal(0.0, 0.07, (784, 256)),
        bias=rng.normal(0.0, 0.05, 256),
        threshold=rng.uniform(0.8, 1.2, 256),
        decay=0.8,
        input_shape=(784,),
    )
    hidden2 = LayerSpec(
        "hidden2",
        "snu_dense",
        kernel=rng.normal(0.0, 0.12, (256, 256)),
        bias=rng.normal(0.0, 0.05, 256),
        threshold=rng.uniform(0.8, 1.2, 256),
        decay=0.8,
        input_shape=(256,),
    )
    readout = LayerSpec(
        "readout",
        "readout",
        kernel=rng.normal(0.0, 0.1, (256, 10)),
        bias=np.zeros(10),
        readout_mode="mean",
        readout_activation="softmax",
        input_shape=(256,),
    )
    return NetworkSpec(
        [hidden1, hidden2, readout], (784,), dt=1e-3, precision="float64"
    ).validate()


def peak_rss_mib() -> float:
    """Return the peak resident set size of this process in MiB (Linux: KiB units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_per_sample(spec, inputs, subset, target):
    """Time one build and run per sample for ``subset`` samples."""
    from snubridge.converters.brian2_export import to_brian2

    rasters = []
    start = time.perf_counter()
    for sample in range(subset):
        network = to_brian2(spec, 1, target=target)
        rasters.append(network.run(inputs[sample : sample + 1]).spikes)
        del network
    return time.perf_counter() - start, rasters


def time_batched(spec, inputs, target, batch_size):
    """Time :func:`run_brian2` over all samples with ``batch_size`` copies."""
    from snubridge.converters.brian2_export import run_brian2

    start = time.perf_counter()
    result = run_brian2(spec, inputs, target=target, batch_size=batch_size)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256, help="MNIST test digits")
    parser.add_argument("--steps", type=int, default=100, help="time steps")
    parser.add_argument(
        "--per-sample", type=int, default=8, help="samples timed one run each"
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[64, 32],
        help="network copies per run; the samples run batch after batch",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=1.0,
        help="spike probability per step of a white pixel",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        default=["numpy", "cython"],
        choices=("numpy", "cython"),
        help="runtime code-generation targets to measure",
    )
    parser.add_argument("--seed", type=int, default=0, help="weights and spikes seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("brian2").setLevel(logging.ERROR)

    from snubridge.converters.brian2_export import resolve_target, to_brian2

    images = load_images(MNIST_IMAGES, args.samples)
    rng = np.random.default_rng(args.seed + 1)
    probability = np.clip(images * args.max_rate, 0.0, 1.0)
    inputs = rng.random((args.samples, args.steps, 784)) < probability[:, None, :]
    inputs = inputs.astype(np.float64)
    spec = random_network(args.seed)
    reference = simulate(spec, inputs)
    rates = ", ".join(f"{name} {s.mean():.3f}" for name, s in reference.spikes.items())
    print(
        f"network 784-256-256-10, {args.samples} MNIST test digits, {args.steps} "
        f"steps; input spikes per input and step {inputs.mean():.4f}; "
        f"spikes per neuron and step: {rates}"
    )
    exact = True
    for requested in args.targets:
        target = resolve_target(requested)
        # Warm Brian2's code caches (and Cython's compiled modules) for both paths.
        to_brian2(spec, 1, target=target).run(inputs[:1, :2])
        subset = min(args.per_sample, args.samples)
        single_seconds, single_rasters = time_per_sample(spec, inputs, subset, target)
        single_total = single_seconds / subset * args.samples
        print(
            f"[{target}] one build and run per sample: {subset} samples in "
            f"{single_seconds:.2f} s ({single_seconds / subset:.3f} s each); "
            f"estimate for {args.samples} samples: {single_total:.1f} s; "
            f"peak RSS so far {peak_rss_mib():.0f} MiB"
        )
        for batch_size in args.batch_sizes:
            size = min(batch_size, args.samples)
            seconds, result = time_batched(spec, inputs, target, size)
            same_reference = all(
                np.array_equal(result.spikes[name], reference.spikes[name])
                for name in reference.spikes
            )
            same_single = all(
                np.array_equal(result.spikes[name][index], rasters[name][0])
                for index, rasters in enumerate(single_rasters)
                for name in rasters
            )
            exact = exact and same_reference and same_single
            print(
                f"[{target}] {size} copies per network, "
                f"{-(-args.samples // size)} run(s): {seconds:.2f} s; speed-up over "
                f"one run per sample (estimate): {single_total / seconds:.1f}x; "
                f"peak RSS so far {peak_rss_mib():.0f} MiB; rasters equal "
                f"reference.simulate: {same_reference}, per-sample runs: {same_single}"
            )
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())

"""Run one ``snu_dense_delayed`` network in Keras, the reference and Brian2.

Usage: ``python -m snubridge_delays.demo [--delay D] [--samples N] [--steps T]``.
It prints which package provides the kind and its converter. Then, per layer,
it prints the fraction of spikes that each back end shares with the numpy
reference (1.0 means identical rasters). The exit status is 0 only when every
raster is identical.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from snubridge import keras_io
from snubridge.converters import get_converter
from snubridge.converters.brian2_export import run_brian2
from snubridge.reference import simulate
from snubridge.spec import LayerSpec, NetworkSpec, get_layer_kind
from snubridge_delays.kind import KIND

logger = logging.getLogger(__name__)


def build_network(delay: int, seed: int = 0) -> NetworkSpec:
    """Return a 20-12-5 network: a delayed dense SNU layer, then a plain one."""
    rng = np.random.default_rng(seed)
    return NetworkSpec(
        layers=[
            LayerSpec(
                "delayed",
                KIND,
                kernel=rng.normal(0.15, 0.35, size=(20, 12)),
                threshold=rng.uniform(0.6, 1.2, size=12),
                bias=rng.normal(0.0, 0.05, size=12),
                decay=0.8,
                input_shape=(20,),
                params={"delay": delay},
            ),
            LayerSpec(
                "output",
                "snu_dense",
                kernel=rng.normal(0.3, 0.5, size=(12, 5)),
                threshold=rng.uniform(0.6, 1.2, size=5),
                decay=0.7,
                input_shape=(12,),
            ),
        ],
        input_shape=(20,),
        precision="float64",
        name="delayed_demo",
    ).validate()


def main(argv: list[str] | None = None) -> int:
    """Compare the three back ends on a random raster; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=int, default=2, help="synaptic delay, steps")
    parser.add_argument("--samples", type=int, default=16, help="input samples")
    parser.add_argument("--steps", type=int, default=50, help="time steps per sample")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    network = build_network(args.delay)
    rng = np.random.default_rng(1)
    inputs = (rng.random((args.samples, args.steps, 20)) < 0.3).astype(np.float64)
    layer_kind = get_layer_kind(KIND)
    converter = get_converter(KIND)
    print(f"kind {KIND!r}: simulate from {layer_kind.simulate.__module__}")
    print(f"converter: {type(converter).__module__}.{type(converter).__name__}")
    reference = simulate(network, inputs)
    model = keras_io.model_from_spec(network, dtype="float64")
    results = {
        "keras": keras_io.run_keras(model, inputs),
        "brian2": run_brian2(network, inputs),
    }
    identical = True
    for name in ("delayed", "output"):
        expected = reference.outputs[name]
        line = [f"{name:8s} spikes {int(expected.sum()):6d}"]
        for backend, result in results.items():
            fraction = float(np.mean(result.outputs[name] == expected))
            identical &= fraction == 1.0
            line.append(f"{backend} identical fraction {fraction:.4f}")
        print(", ".join(line))
    print(f"time {time.perf_counter() - start:.1f} s")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())

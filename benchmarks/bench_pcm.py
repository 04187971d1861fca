"""PCM crossbar emulator benchmarks, each measured side by side in one run.

Sections (default: ``speed``; ``all`` runs every one):

* ``speed``: the fast path in both variance modes, ``"exact"`` (the
  default) and ``"low_rank"``. Each is timed against a plain float32 matrix
  product of the same shape (batch 1024, 784 x 256, read noise on, target at
  most 2x its time) and against the per-read reference path (target at least
  100x faster). The measured error of the low-rank output spreads is printed
  with them, and so is the time of one product of twice the width, the least
  that the mean and variance products of the exact mode can cost.
  The reference path is timed on a subset of rows and extrapolated linearly
  to the full batch, because every row is an independent read.
* ``mnist``: a dense SNU (784-256-10) trained in Keras on the first 8,000
  digits of the MNIST test set (the only MNIST part stored here) and scored
  on the other 2,000, deployed on the statistical PCM model: accuracy at 1 s
  to 1 year after programming, with and without global drift compensation,
  and with 1 to 8 bit weights.
* ``hwloop``: the 88-150-88 sSNU on JSB Chorales trained hardware-in-the-loop
  on pulse-programmed PCM pairs, against the same network trained in
  software from the same initial weights.

Run: ``python benchmarks/bench_pcm.py [speed|mnist|hwloop|all] [--quick]
[--blas-threads N]``. Speed ratios depend on machine load, because the matrix
products of both sides share the BLAS threads with everything else running;
``--blas-threads 1`` runs both sides single-threaded, which is less sensitive
to other processes.
"""

from __future__ import annotations

import os
import sys

# The BLAS reads its thread count once, when numpy is first imported.
if "--blas-threads" in sys.argv[:-1]:
    _threads = sys.argv[sys.argv.index("--blas-threads") + 1]
    for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_variable] = _threads

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

logger = logging.getLogger(__name__)

# The shared data folder sits beside the checkout.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_FOLDER = SHARED_DATA / "mnist"
JSB_FILE = SHARED_DATA / "jsb_chorales.json.gz"


def _median_time(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _variance_errors(state, inputs: np.ndarray) -> dict:
    """Compare the low-rank output spreads of ``state`` with the exact ones."""
    codes, _ = state._dac_codes(np.asarray(inputs, dtype=np.float32))
    binary = bool(np.all((codes == 0) | (codes == 1)))
    errors, bounds, ranks = [], [], []
    for tile in state._blocks:
        _, approximate = tile.mean_and_variance(codes, binary)
        _, exact = tile.mean_and_variance(codes, binary, exact=True)
        errors.append(np.sqrt(approximate / exact) - 1.0)
        bounds.append(tile.predicted_error if tile.low_rank else 0.0)
        ranks.append(tile.rank)
    error = np.concatenate(errors, axis=1)
    return {
        "rms": float(np.sqrt(np.mean(error**2))),
        "worst_column_rms": float(np.sqrt(np.mean(error**2, axis=0)).max()),
        "max": float(np.abs(error).max()),
        "bound": max(bounds),
        "ranks": ranks,
    }


def _mnist_weights(n_out: int) -> tuple[np.ndarray, np.ndarray]:
    # Weights learned from real data are the leading principal directions of
    # the MNIST test images, scaled down column by column. The inputs are the
    # binarised digits.
    from snubridge.data.mnist import load_mnist

    images = load_mnist(MNIST_FOLDER, "test").images.reshape(-1, 784)
    images = images.astype(np.float64) / max(float(images.max()), 1.0)
    centred = images - images.mean(axis=0)
    _, vectors = np.linalg.eigh(centred[:5000].T @ centred[:5000])
    weights = vectors[:, ::-1][:, :n_out] * np.linspace(1.0, 0.2, n_out)
    spikes = (images[5000:6024] > 0.5).astype(np.float32)
    return weights, spikes


def bench_speed(quick: bool) -> dict:
    """Time both variance modes of the fast path, a float32 product, the reference.

    ``CrossbarConfig.variance`` is ``"exact"`` by default and runs the full
    variance product. ``"low_rank"`` takes ranks up to 4 and a bound of 5 % on
    the predicted root-mean-square error of every column's output spread. Both
    are timed interleaved with the float32 product and printed on one line,
    together with the measured error of the low-rank spreads against the exact
    ones.
    """
    from snubridge.pcm.crossbar import AnalogMatrix, CrossbarConfig
    from snubridge.pcm.devices import joshi_2020
    from snubridge.pcm.reference_path import reference_matmul

    rng = np.random.default_rng(0)
    batch, n_in, n_out = 1024, 784, 256
    weights = rng.normal(0.0, 0.05, (n_in, n_out))
    results = {}

    def states(matrix_weights, device, **settings):
        built = {}
        for mode in ("exact", "low_rank"):
            config = CrossbarConfig(adc_range=(-10.0, 10.0), variance=mode, **settings)
            matrix = AnalogMatrix(matrix_weights, device, config, rng)
            built[mode] = matrix.state(86400.0, rng)
        return built

    per_read = states(weights, joshi_2020())
    assert per_read["exact"].has_read_noise
    # 1/f noise drawn once per inference time (aihwkit's convention) and output
    # noise per read: no variance product is needed.
    per_state = states(
        weights, joshi_2020(read_noise_mode="per_state"), output_noise=0.04
    )
    spikes = (rng.random((batch, n_in)) < 0.2).astype(np.float32)
    cases = {
        "spike inputs, per-read device noise": (spikes, weights, per_read),
        "real inputs, per-read device noise": (
            rng.uniform(0.0, 1.0, (batch, n_in)).astype(np.float32),
            weights,
            per_read,
        ),
        "spike inputs, per-state 1/f noise + output noise": (
            spikes,
            weights,
            per_state,
        ),
    }
    try:
        mnist_weights, mnist_spikes = _mnist_weights(n_out)
    except OSError as error:
        print(f"MNIST case skipped: {error}")
    else:
        cases["binarised MNIST digits, MNIST principal directions"] = (
            mnist_spikes,
            mnist_weights,
            states(mnist_weights, joshi_2020()),
        )
    repeats = 20 if quick else 60
    reference_rows = 4 if quick else 16
    for name, (inputs, matrix_weights, modes) in cases.items():
        weights32 = matrix_weights.astype(np.float32)
        # The exact mode needs a mean and a variance product per read; one
        # product of twice the width is the least it can cost.
        doubled = np.concatenate([weights32, np.square(weights32)], axis=1)
        # Interleave the timings so machine load affects every side alike.
        times = {"float32": [], "two_products": [], "exact": [], "low_rank": []}
        inputs @ weights32
        inputs @ doubled
        for state in modes.values():
            state.matmul(inputs, rng)
        for _ in range(repeats):
            start = time.perf_counter()
            inputs @ weights32
            times["float32"].append(time.perf_counter() - start)
            start = time.perf_counter()
            inputs @ doubled
            times["two_products"].append(time.perf_counter() - start)
            for mode, state in modes.items():
                start = time.perf_counter()
                state.matmul(inputs, rng)
                times[mode].append(time.perf_counter() - start)
        median = {key: statistics.median(values) for key, values in times.items()}
        subset = inputs[:reference_rows]
        reference = _median_time(
            lambda rows=subset, st=modes["exact"]: reference_matmul(st, rows, rng), 3
        )
        reference_full = reference * batch / reference_rows
        plain = median["float32"]
        entry = {
            "float32_matmul_s": plain,
            "reference_path_s_extrapolated": reference_full,
            "reference_rows_timed": reference_rows,
            "two_products_over_float32": median["two_products"] / plain,
        }
        parts = []
        for mode in ("exact", "low_rank"):
            fast = median[mode]
            entry[mode] = {
                "fast_path_s": fast,
                "fast_over_float32": fast / plain,
                "reference_over_fast": reference_full / fast,
            }
            parts.append(
                f"{mode} {fast * 1e3:.2f} ms ({fast / plain:.2f}x float32, "
                f"{reference_full / fast:.0f}x faster than reference)"
            )
        if modes["low_rank"].has_read_noise:
            errors = _variance_errors(modes["low_rank"], inputs)
            entry["low_rank"]["spread_error"] = errors
            accuracy = (
                f"; low-rank spread error vs exact: rms {100 * errors['rms']:.2f} %, "
                f"worst column rms {100 * errors['worst_column_rms']:.2f} % "
                f"(bound {100 * errors['bound']:.1f} %), max "
                f"{100 * errors['max']:.1f} %, ranks {errors['ranks']}"
            )
        else:
            accuracy = ""
        results[name] = entry
        print(
            f"[{name}] batch {batch}, {n_in} x {n_out}, read noise on: float32 "
            f"{plain * 1e3:.2f} ms; mean and variance products alone "
            f"{median['two_products'] / plain:.2f}x; "
            + "; ".join(parts)
            + f"; reference "
            f"{reference_full:.2f} s from {reference_rows} rows (targets: <= 2x "
            f"float32, >= 100x faster than reference){accuracy}"
        )
    return results


def _mnist_arrays(samples: int, steps: int, seed: int):
    from snubridge.data.mnist import load_mnist
    from snubridge.encoders import rate_encode

    digits = load_mnist(MNIST_FOLDER, "test")
    images, labels = digits.images[:samples], digits.labels[:samples]
    spikes = rate_encode(images, steps, seed=seed)
    return np.asarray(spikes.spikes, dtype=np.float32), labels


def bench_mnist(quick: bool, output: Path) -> dict:
    """Train a dense SNU on MNIST, deploy it on PCM and sweep weight precision."""
    import keras

    from snubridge import keras_io, models
    from snubridge.pcm.deploy import deploy
    from snubridge.pcm.quantize import precision_sweep

    steps = 20
    n_train, n_test = (3000, 500) if quick else (8000, 2000)
    inputs, labels = _mnist_arrays(n_train + n_test, steps, seed=1)
    keras.utils.set_random_seed(2)
    model = models.dense_snu(hidden=(256,), n_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(
        inputs[:n_train],
        labels[:n_train],
        batch_size=64,
        epochs=3 if quick else 8,
        verbose=0,
    )
    print(
        f"trained {model.name} on {n_train} digits in "
        f"{time.perf_counter() - start:.0f} s"
    )
    spec = keras_io.spec_from_model(model)
    test_inputs, test_labels = inputs[n_train:], labels[n_train:]
    report = deploy(
        spec,
        test_inputs,
        test_labels,
        device="statistical",
        seed=3,
        repeats=1 if quick else 3,
    )
    print(report.table())
    paths = report.save(output, stem="pcm_mnist")
    day = "1 day"
    drop = 100 * (report.software - report.compensated[day])
    drop_off = 100 * (report.software - report.uncompensated[day])
    print(
        f"1 day after programming: {100 * report.compensated[day]:.2f} % with drift "
        f"compensation ({drop:.2f} points below software, target <= 1), "
        f"{100 * report.uncompensated[day]:.2f} % without ({drop_off:.2f} points "
        f"below); software {100 * report.software:.2f} %"
    )
    sweep = precision_sweep(spec, test_inputs, test_labels)
    print(
        "weight bits: "
        + ", ".join(
            f"{bits}: {100 * value:.2f} %" for bits, value in sweep["bits"].items()
        )
    )
    return {
        "deployment": report.to_dict(),
        "precision": sweep,
        "files": {k: str(v) for k, v in paths.items()},
    }


def _jsb_batches(pairs, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(len(pairs.inputs))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        index = order[start : start + batch_size]
        yield pairs.inputs[index], pairs.targets[index], pairs.mask[index]


def bench_hwloop(quick: bool) -> dict:
    """Train the 88-150-88 JSB sSNU in software and hardware-in-the-loop."""
    import keras

    from snubridge import models
    from snubridge.data.jsb import frame_nll, load_jsb, next_step_pairs
    from snubridge.pcm.hwloop import KerasHardwareLoop, masked_frame_nll

    chorales = load_jsb(JSB_FILE)
    train = next_step_pairs(chorales.piano_rolls("train"))
    valid = next_step_pairs(chorales.piano_rolls("valid"))
    epochs = 2 if quick else 10
    # The software baseline's settings: Adam at 3e-3 on batches of 8 pieces.
    learning_rate = 3e-3
    keras.utils.set_random_seed(4)
    software = models.jsb_ssnu()
    hardware = models.jsb_ssnu()
    hardware.set_weights(software.get_weights())
    optimizer = keras.optimizers.Adam(learning_rate)
    loop = KerasHardwareLoop(
        hardware, masked_frame_nll, learning_rate=learning_rate, seed=5
    )
    print(f"hardware-in-the-loop: {loop.devices} PCM devices hold the kernels")
    import tensorflow as tf

    history = {"software": [], "hardware": []}
    rng = np.random.default_rng(6)
    start = time.perf_counter()
    for epoch in range(epochs):
        losses = {"software": [], "hardware": []}
        for inputs, targets, mask in _jsb_batches(train, 8, rng):
            with tf.GradientTape() as tape:
                loss = masked_frame_nll(targets, software(inputs, training=True), mask)
            grads = tape.gradient(loss, software.trainable_variables)
            optimizer.apply_gradients(
                zip(grads, software.trainable_variables, strict=True)
            )
            losses["software"].append(float(loss))
            losses["hardware"].append(loop.train_step(inputs, targets, mask))
        for key in history:
            history[key].append(float(np.mean(losses[key])))
        print(
            f"epoch {epoch + 1}: training frame NLL software "
            f"{history['software'][-1]:.3f}, "
            f"hardware-in-the-loop {history['hardware'][-1]:.3f} nats/step "
            f"({time.perf_counter() - start:.0f} s)"
        )
    loop.load_noise_free()
    valid_software = frame_nll(
        np.asarray(software(valid.inputs)), valid.targets, valid.mask
    )
    valid_hardware = frame_nll(
        np.asarray(hardware(valid.inputs)), valid.targets, valid.mask
    )
    pulses = loop.pulses
    refreshes = loop.refreshes
    print(
        f"validation frame NLL: software {valid_software:.3f}, hardware-in-the-loop "
        f"{valid_hardware:.3f} nats/step (noise-free read of the devices); "
        f"{pulses} SET pulses, {refreshes} pair refreshes"
    )
    return {
        "epochs": epochs,
        "training_nll": history,
        "validation_nll": {"software": valid_software, "hardware": valid_hardware},
        "devices": loop.devices,
        "pulses": pulses,
        "refreshes": refreshes,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections and write ``pcm_benchmark_SECTION.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "section",
        nargs="?",
        default="speed",
        choices=("speed", "mnist", "hwloop", "all"),
    )
    parser.add_argument(
        "--quick", action="store_true", help="shorter training, fewer repeats"
    )
    parser.add_argument("--output", default="benchmark_results", help="output folder")
    parser.add_argument(
        "--blas-threads", type=int, help="BLAS threads for both sides (default: all)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    output = Path(args.output)
    results = {"blas_threads": args.blas_threads or "default"}
    if args.section in ("speed", "all"):
        results["speed"] = bench_speed(args.quick)
    if args.section in ("mnist", "all"):
        results["mnist"] = bench_mnist(args.quick, output)
    if args.section in ("hwloop", "all"):
        results["hwloop"] = bench_hwloop(args.quick)
    from snubridge.params_file import atomic_write

    text = json.dumps(results, indent=2, default=str)
    path = output / f"pcm_benchmark_{args.section}.json"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the 88-150-88 JSB sSNU with PCM devices in the loop, against software.

Two copies of :func:`snubridge.models.jsb_ssnu` start from the same initial
weights and see the same batches in the same order. The software copy takes
Keras Adam steps on float32 weights. The hardware copy keeps its two kernels on
pulse-programmed differential PCM pairs (:class:`snubridge.pcm.hwloop.
KerasHardwareLoop`, device model of Nandakumar et al. 2018): every forward
pass reads the devices with read noise, and the Adam updates collect in a
digital accumulator ``chi`` per weight that fires SET pulses of the mean
device step ``epsilon``. After every epoch both networks are scored on the
validation split (the hardware one with a noise-free read of its devices), and
at the end on the test split, and both validation curves are drawn into
``pcm_in_the_loop.png`` (``--plot``). The frame NLL is in nats per time step.

Run::

    python examples/pcm_in_the_loop.py --data /path/to/jsb_chorales.json.gz

Expected result with the default seeds and ``--weight-range 1.0`` (the
default), measured on a 2-core machine: after 60 epochs (about 2.5 minutes)
the test NLL is 9.11 in software and 9.39 in the loop, after 52,874 SET pulses
and 738 pair refreshes on the 52,800 devices. The loop starts slowly, 22.9
against 9.6 after 10 epochs and 9.65 against 9.24 after 30 (validation), because
one pulse moves a weight by about 0.08 on this range and the Adam updates
need many steps to add up to one pulse. The weight range trades clipping
against that step: the hidden kernel of the software network grows to about
1.5, so ``--weight-range 0`` (twice the largest initial weight, 0.32) clips it
and ends at 9.76, while 1.5 and 2.0 end at 11.35 and 16.66 with steps too
coarse for the output kernel. The software network trained with early
stopping reaches about 8.7 after some 240 epochs.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time

import numpy as np

logger = logging.getLogger(__name__)


def _batches(count: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(count)
    for start in range(0, count - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def main(argv: list[str] | None = None) -> int:
    """Train both networks, print their NLL per epoch and the device counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", required=True, help="path of jsb_chorales.json.gz (or .json)"
    )
    parser.add_argument("--epochs", type=int, default=60, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=8, help="pieces per batch")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=3e-3,
        help="Adam learning rate of both networks",
    )
    parser.add_argument(
        "--weight-range",
        type=float,
        default=1.0,
        help="weight magnitude mapped to the usable conductance range, both "
        "kernels (default 1.0; 0 takes KerasHardwareLoop's choice per kernel, "
        "twice the largest initial weight)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, order")
    parser.add_argument(
        "--plot",
        default="pcm_in_the_loop.png",
        help="PNG file for the validation NLL of both networks per epoch "
        "(default pcm_in_the_loop.png; an empty string draws nothing)",
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be at least 1")
    if not (math.isfinite(args.weight_range) and args.weight_range >= 0):
        parser.error(
            f"--weight-range must be a positive number, or 0 for the library's "
            f"default per kernel; received {args.weight_range}"
        )
    logging.basicConfig(level=logging.WARNING)

    import keras
    import tensorflow as tf

    from snubridge import models
    from snubridge.data.jsb import frame_nll, load_chorales, next_step_pairs
    from snubridge.pcm.hwloop import KerasHardwareLoop, masked_frame_nll

    chorales = load_chorales(args.data)
    splits = {
        name: next_step_pairs(chorales.piano_rolls(name))
        for name in ("train", "valid", "test")
    }
    train = splits["train"]

    keras.utils.set_random_seed(args.seed)
    software = models.jsb_ssnu()
    hardware = models.jsb_ssnu()
    hardware.set_weights(software.get_weights())
    optimizer = keras.optimizers.Adam(args.learning_rate)
    loop = KerasHardwareLoop(
        hardware,
        masked_frame_nll,
        learning_rate=args.learning_rate,
        seed=args.seed + 1,
        weight_range=args.weight_range or None,
    )
    print(f"{loop.devices} PCM devices hold the two kernels")

    @tf.function(reduce_retracing=True)
    def software_step(inputs, targets, mask):
        with tf.GradientTape() as tape:
            loss = masked_frame_nll(targets, software(inputs, training=True), mask)
        grads = tape.gradient(loss, software.trainable_variables)
        optimizer.apply_gradients(zip(grads, software.trainable_variables, strict=True))
        return loss

    def score(model, split: str) -> float:
        data = splits[split]
        return frame_nll(np.asarray(model(data.inputs)), data.targets, data.mask)

    rng = np.random.default_rng(args.seed + 2)
    curves: dict[str, list[float]] = {"software": [], "in the loop": []}
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        for index in _batches(len(train.inputs), args.batch_size, rng):
            batch = (train.inputs[index], train.targets[index], train.mask[index])
            software_step(*batch)
            loop.train_step(*batch)
        valid_software = score(software, "valid")
        loop.load_noise_free()
        valid_hardware = score(hardware, "valid")
        curves["software"].append(valid_software)
        curves["in the loop"].append(valid_hardware)
        print(
            f"epoch {epoch}: validation NLL software {valid_software:.3f}, "
            f"in the loop {valid_hardware:.3f} nats/step; "
            f"{loop.pulses} SET pulses, {loop.refreshes} refreshes so far "
            f"({time.perf_counter() - start:.0f} s)"
        )
    loop.load_noise_free()
    print(
        f"test NLL after {args.epochs} epochs: software {score(software, 'test'):.3f}, "
        f"in the loop {score(hardware, 'test'):.3f} nats/step "
        f"(noise-free read of the devices)"
    )
    print(
        f"devices: {loop.devices}, SET pulses: {loop.pulses}, "
        f"pair refreshes: {loop.refreshes}, "
        f"run time {time.perf_counter() - start:.0f} s"
    )
    if args.plot:
        print(f"validation curves in {plot_curves(curves, args.plot)}")
    return 0


def plot_curves(curves: dict[str, list[float]], path: str) -> str:
    """Draw the validation NLL per epoch of each network into a PNG file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from snubridge.params_file import atomic_write

    figure = Figure(figsize=(6, 3.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, values in curves.items():
        axes.plot(range(1, len(values) + 1), values, label=label)
    # The first epochs in the loop can sit far above the rest; keep the end
    # of both curves readable.
    lowest = min(min(values) for values in curves.values())
    axes.set_ylim(lowest - 0.2, lowest + 4.0)
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation frame NLL (nats per step)")
    axes.set_title("JSB 88-150-88 sSNU: software against PCM in the loop")
    axes.grid(alpha=0.3)
    axes.legend()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png"))
    return path


if __name__ == "__main__":
    sys.exit(main())

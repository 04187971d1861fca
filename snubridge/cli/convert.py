"""``snubridge convert MODEL --to brian2|nir --out PATH``: export a trained model.

``MODEL`` is a snubridge parameter file (``.h5``) or a Keras model
(``.keras``). ``--to brian2`` writes a self-contained Brian2 script and its
parameter file into the folder ``--out`` (see
:func:`snubridge.converters.brian2_script.export_script`); ``--to nir`` writes
a NIR graph through ``snubridge.converters.nir_io.write_nir``, to ``--out``
when it ends in ``.nir`` and to ``<out>/<network name>.nir`` otherwise.
Exit status 0 on success, 2 on invalid input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

from snubridge.errors import ConversionError

logger = logging.getLogger(__name__)

FORMATS = ("brian2", "nir")
TARGETS = ("numpy", "cython", "cpp_standalone", "cuda_standalone", "genn")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``convert`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "convert",
        help="export a trained SNU model to Brian2 or NIR",
        description=(
            "Read a snubridge parameter file (.h5) or a Keras model (.keras) and "
            "export it: as a Brian2 script with its parameter file that runs "
            "without snubridge (--to brian2), or as a NIR graph (--to nir)."
        ),
    )
    parser.add_argument(
        "model", type=Path, help="parameter file (.h5) or Keras model (.keras)"
    )
    parser.add_argument(
        "--to",
        dest="format",
        choices=FORMATS,
        default="brian2",
        help="export format (default: brian2)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (brian2), or a .nir file or folder (nir)",
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="numpy",
        help="default Brian2 code-generation target of the script (default: numpy)",
    )
    parser.set_defaults(handler=run)
    return parser


def _write_nir(spec, out: Path) -> Path:
    try:
        nir_io = importlib.import_module("snubridge.converters.nir_io")
    except ImportError as error:
        raise ConversionError(
            f"NIR export needs snubridge.converters.nir_io and the 'nir' package, "
            f"which cannot be imported ({error}); install nir (pip install nir)."
        ) from None
    target = out if out.suffix == ".nir" else out / f"{spec.name}.nir"
    return nir_io.write_nir(spec, target)


def run(args: argparse.Namespace) -> int:
    """Convert ``args.model`` into ``args.format``; return the exit status."""
    from snubridge.converters.brian2_export import resolve_spec

    spec = resolve_spec(args.model)
    if args.format == "nir":
        path = _write_nir(spec, args.out)
        print(f"Wrote NIR graph {path}")
        return 0
    from snubridge.converters.brian2_script import PARAMS_NAME, export_script

    script = export_script(spec, args.out, target=args.target)
    print(f"Wrote Brian2 script {script} and parameters {script.parent / PARAMS_NAME}")
    print(f"Run it with: python {script} --inputs INPUTS.npz --out results.npz")
    return 0

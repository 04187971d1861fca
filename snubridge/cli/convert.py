"""``snubridge convert MODEL --to brian2|nir --out PATH``: export a trained model.

``MODEL`` is a snubridge parameter file (``.h5``), a Keras model (``.keras``)
or a NIR graph (``.nir``, read with ``--dt`` and ``--discretisation``).
``--to brian2`` writes a self-contained Brian2 script and its parameter file
into the folder ``--out`` (see
:func:`snubridge.converters.brian2_script.export_script`); ``--to nir`` writes
a NIR graph through ``snubridge.converters.nir_io.write_nir``, to ``--out``
when it ends in ``.nir`` and to ``<out>/<network name>.nir`` otherwise;
``--to h5`` and ``--to keras`` write a parameter file or a Keras model, which
imports a NIR graph into snubridge. Exit status 0 on success, 2 on invalid
input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

from snubridge.errors import ConversionError

logger = logging.getLogger(__name__)

FORMATS = ("brian2", "nir", "h5", "keras")
TARGETS = ("numpy", "cython", "cpp_standalone", "cuda_standalone", "genn")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``convert`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "convert",
        help="export a trained SNU model to Brian2 or NIR",
        description=(
            "Read a snubridge parameter file (.h5), a Keras model (.keras) or a "
            "NIR graph (.nir) and export it: as a Brian2 script with its "
            "parameter file that runs without snubridge (--to brian2), as a NIR "
            "graph (--to nir), or as a snubridge parameter file or Keras model "
            "(--to h5, --to keras)."
        ),
    )
    parser.add_argument(
        "model",
        type=Path,
        help="parameter file (.h5), Keras model (.keras) or NIR graph (.nir)",
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
        help="output folder (brian2), a .nir file or folder (nir), or the "
        ".h5 or .keras file to write (h5, keras)",
    )
    parser.add_argument(
        "--dt",
        type=float,
        default=None,
        help="time step in seconds: required to read a .nir graph, whose neurons "
        "are continuous-time; for --to nir it overrides the model's dt",
    )
    parser.add_argument(
        "--discretisation",
        choices=("exact", "euler"),
        default="exact",
        help="how NIR's continuous LIF maps to the discrete decay: exact "
        "l = exp(-dt/tau) or euler l = 1 - dt/tau (default: exact; snnTorch "
        "exports assume euler)",
    )
    parser.add_argument(
        "--relu",
        choices=("reject", "drop"),
        default="reject",
        help="NIR has no ReLU clip of the membrane: reject such layers "
        "(default), or drop the clip with a warning, which changes the dynamics "
        "wherever the membrane would go below 0",
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="numpy",
        help="default Brian2 code-generation target of the script (default: numpy)",
    )
    parser.set_defaults(handler=run)
    return parser


def _nir_io():
    try:
        return importlib.import_module("snubridge.converters.nir_io")
    except ImportError as error:
        raise ConversionError(
            f"NIR support needs snubridge.converters.nir_io and the 'nir' package, "
            f"which cannot be imported ({error}); install nir (pip install nir)."
        ) from None


def _read_model(args: argparse.Namespace):
    if args.model.suffix == ".nir":
        if args.dt is None:
            raise ConversionError(
                f"Reading the NIR graph {str(args.model)!r} needs --dt, the time "
                "step in seconds (for example --dt 0.001)."
            )
        return _nir_io().read_nir(
            args.model, dt=args.dt, discretisation=args.discretisation
        )
    from snubridge.converters.brian2_export import resolve_spec

    return resolve_spec(args.model)


def _write_nir(spec, out: Path, args: argparse.Namespace | None = None) -> Path:
    target = out if out.suffix == ".nir" else out / f"{spec.name}.nir"
    options = {}
    if args is not None:
        options = dict(dt=args.dt, discretisation=args.discretisation, relu=args.relu)
    return _nir_io().write_nir(spec, target, **options)


def run(args: argparse.Namespace) -> int:
    """Convert ``args.model`` into ``args.format``; return the exit status."""
    spec = _read_model(args)
    if args.format == "nir":
        path = _write_nir(spec, args.out, args)
        print(f"Wrote NIR graph {path}")
        return 0
    if args.format == "h5":
        from snubridge.params_file import save_params

        print(f"Wrote parameter file {save_params(spec, args.out)}")
        return 0
    if args.format == "keras":
        from snubridge import keras_io

        model = keras_io.model_from_spec(spec)
        print(f"Wrote Keras model {keras_io.save_model(model, args.out)}")
        return 0
    from snubridge.converters.brian2_script import PARAMS_NAME, export_script

    script = export_script(spec, args.out, target=args.target)
    print(f"Wrote Brian2 script {script} and parameters {script.parent / PARAMS_NAME}")
    print(f"Run it with: python {script} --inputs INPUTS.npz --out results.npz")
    return 0

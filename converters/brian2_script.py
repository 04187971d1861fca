"""Export an SNU network as a self-contained Brian2 script and parameter file.

:func:`export_script` writes two files into a folder:

- ``brian2_network.py``: the network builder of
  :mod:`snubridge.converters.brian2_core` (copied verbatim, so the exported
  network runs on the same schedule as :func:`~snubridge.converters.to_brian2`)
  and a command line that loads the parameters, runs inputs and saves the
  spikes. It needs Python, numpy and Brian2, not snubridge.
- ``brian2_params.npz``: every weight, threshold, bias and decay, plus a JSON
  document of the structure. It contains no pickled objects, so the script loads
  it with ``allow_pickle=False``.

The script text is fixed: layer names and other strings of the spec go into
the parameter file only, never into code.
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
from pathlib import Path

import numpy as np

from snubridge.converters import brian2_core
from snubridge.converters.brian2_export import TARGETS, resolve_spec
from snubridge.converters.brian2_layers import readout_plan, snu_plan
from snubridge.errors import ConversionError
from snubridge.params_file import atomic_write
from snubridge.spec import NetworkSpec

logger = logging.getLogger(__name__)

SCRIPT_NAME = "brian2_network.py"
PARAMS_NAME = "brian2_params.npz"

_SCRIPT_HEADER = '''"""Brian2 simulation of an SNU network exported by snubridge.

Run it with Python, numpy and Brian2 2.9 (snubridge is not needed)::

    python brian2_network.py --inputs inputs.npz --out results.npz

``inputs.npz`` holds an array ``inputs`` of 0 and 1 with shape
``(samples, steps, *input_shape)``. Without ``--inputs`` the script draws
Bernoulli spikes (``--samples``, ``--steps``, ``--rate``, ``--seed``).
``results.npz`` receives ``spikes_<index>`` ``(samples, steps, units)`` for
every spiking layer and ``readout_<index>`` for the readout, as well as
``layer_names``. The parameters are read from ``brian2_params.npz`` next to
this file unless ``--params`` names another.

'''

_SCRIPT_MAIN = r'''

# Command line ------------------------------------------------------------------

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402


def build_network(plans, header, n_samples, record_states=False):
    """Build the network of ``plans``; return ``(network, input_group, layers)``."""
    clock = make_clock(header["dt"])
    order = OrderCounter()
    n_inputs = int(np.prod(header["input_shape"]))
    input_group = build_input(n_samples, n_inputs, clock, order)
    source, n_source = input_group, n_inputs
    layers = []
    for index, plan in enumerate(plans):
        if plan["kind"] == "flatten":
            layers.append(None)
            continue
        if plan["kind"] == "snu":
            built = build_snu_layer(
                index, plan, source, n_source, n_samples, clock, order, record_states
            )
            source, n_source = built["group"], int(plan["units"])
        elif plan["kind"] == "readout":
            built = build_readout_layer(
                index, plan, source, n_source, n_samples, clock, order
            )
        else:
            raise ValueError(f"layer {index}: unknown kind {plan['kind']!r}")
        layers.append(built)
    objects = [input_group]
    for built in layers:
        if built is not None:
            objects.extend(built["objects"])
    return b2.Network(*objects, name="snu_network"), input_group, layers


def run(plans, header, raster, target="numpy"):
    """Simulate a 0/1 raster; return ``{name: array}`` of spikes and readouts."""
    raster = np.asarray(raster, dtype=np.float64)
    expected = tuple(header["input_shape"])
    if raster.ndim != 2 + len(expected) or tuple(raster.shape[2:]) != expected:
        raise SystemExit(
            f"inputs must have shape (samples, steps, {expected}), got {raster.shape}"
        )
    if not np.all((raster == 0) | (raster == 1)):
        raise SystemExit("inputs must contain only 0 and 1 (spikes)")
    samples, steps = raster.shape[:2]
    directory = None
    if target == "cpp_standalone":
        directory = tempfile.mkdtemp(prefix="brian2_network_")
        b2.set_device("cpp_standalone", directory=directory, build_on_run=False)
    else:
        b2.prefs.codegen.target = target
    b2.prefs.core.default_float_dtype = np.float64
    try:
        network, input_group, layers = build_network(plans, header, samples)
        indices, times = input_spikes(raster, header["dt"])
        input_group.set_spikes(indices, times * b2.second)
        network.run(steps * header["dt"] * b2.second)
        if directory is not None:
            b2.device.build(directory=directory, compile=True, run=True)
        results = {}
        for index, (plan, built) in enumerate(zip(plans, layers)):
            if built is None:
                continue
            units = int(plan["units"])
            if plan["kind"] == "snu":
                results[f"spikes_{index}"] = spike_raster(
                    built["spikes"], samples, units, steps, header["dt"]
                )
            else:
                trace = state_trace(built["states"], "u", samples, units, steps)
                value = readout_value(trace, plan["mode"])
                activation = plan["activation"]
                results[f"readout_{index}"] = readout_activation(value, activation)
        return results
    finally:
        if directory is not None:
            b2.device.reinit()
            shutil.rmtree(directory, ignore_errors=True)


def main(argv=None):
    """Parse the command line, run the network and save the results."""
    script_folder = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params",
                        default=os.path.join(script_folder, "brian2_params.npz"),
                        help="parameter file written with this script")
    parser.add_argument("--inputs", help=".npz file with an array 'inputs' of 0 and 1")
    parser.add_argument("--out", default="results.npz", help="output .npz file")
    parser.add_argument("--target", default=None,
                        choices=("numpy", "cython", "cpp_standalone"),
                        help="Brian2 code-generation target (default: the one "
                        "chosen at export)")
    parser.add_argument("--samples", type=int, default=1,
                        help="random inputs: number of samples")
    parser.add_argument("--steps", type=int, default=100,
                        help="random inputs: time steps")
    parser.add_argument("--rate", type=float, default=0.1,
                        help="random inputs: spike probability per step")
    parser.add_argument("--seed", type=int, default=0, help="random inputs: seed")
    args = parser.parse_args(argv)

    with np.load(args.params, allow_pickle=False) as arrays:
        plans, header = plans_from_arrays(arrays)
    if args.inputs:
        with np.load(args.inputs, allow_pickle=False) as data:
            raster = data["inputs"]
    else:
        rng = np.random.default_rng(args.seed)
        shape = (args.samples, args.steps, *header["input_shape"])
        raster = (rng.random(shape) < args.rate).astype(np.float64)

    target = args.target or header.get("target", "numpy")
    results = run(plans, header, raster, target)
    names = np.array([plan.get("name", "") for plan in plans])
    np.savez(args.out, layer_names=names, **results)
    for key, value in results.items():
        print(f"{key}: shape {value.shape}, sum {value.sum():.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def _core_source() -> tuple[str, str]:
    """Return the docstring of ``brian2_core`` and its code after the imports."""
    source = inspect.getsource(brian2_core)
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree) or ""
    body_start = 0
    for node in tree.body:
        is_docstring = isinstance(node, ast.Expr) and isinstance(
            node.value, ast.Constant
        )
        is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if is_docstring or is_future:
            body_start = node.end_lineno
            continue
        break
    lines = source.splitlines(keepends=True)
    return docstring, "".join(lines[body_start:])


def script_text() -> str:
    """Return the text of the exported script (the same for every network)."""
    docstring, code = _core_source()
    header = _SCRIPT_HEADER + docstring.replace('"""', "'''") + '\n"""\n'
    return header + "\nfrom __future__ import annotations\n" + code + _SCRIPT_MAIN


def network_plans(spec: NetworkSpec) -> list[dict]:
    """Return the Brian2 parameters of every layer of ``spec``.

    Raises:
        ConversionError: a layer kind the script cannot build, an sSNU layer,
            or lateral inhibition.
    """
    plans = []
    for layer in spec.layers:
        if layer.kind in ("snu_dense", "snu_recurrent", "snu_conv2d"):
            plans.append(snu_plan(layer))
        elif layer.kind == "readout":
            plans.append(readout_plan(layer))
        elif layer.kind == "flatten":
            shape = [int(np.prod(layer.input_shape))]
            plans.append({"kind": "flatten", "name": layer.name, "shape": shape})
        else:
            raise ConversionError(
                f"Layer {layer.name!r} of kind {layer.kind!r} cannot be exported as a "
                "script: the script builds snu_dense, snu_recurrent, snu_conv2d, "
                "readout and flatten layers only."
            )
    return plans


def export_script(
    spec: NetworkSpec | str | os.PathLike,
    folder: str | os.PathLike,
    *,
    target: str = "numpy",
) -> Path:
    """Write ``brian2_network.py`` and ``brian2_params.npz`` into ``folder``.

    Args:
        spec: A spec, a parameter file or a Keras model file.
        folder: Destination folder, created if missing; existing files of the
            same names are replaced atomically.
        target: Default code-generation target of the script (``numpy``,
            ``cython`` or ``cpp_standalone``); its ``--target`` overrides it.

    Returns:
        Path of the script.
    """
    from snubridge import __version__

    if target not in TARGETS:
        raise ConversionError(
            f"Unknown Brian2 target {target!r}; expected one of "
            f"{', '.join(map(repr, TARGETS))}."
        )
    spec = resolve_spec(spec)
    plans = network_plans(spec)
    header = {
        "name": spec.name,
        "dt": float(spec.dt),
        "input_shape": [int(n) for n in spec.input_shape],
        "precision": spec.precision,
        "snubridge_version": __version__,
        "target": target,
    }
    arrays = brian2_core.plans_to_arrays(plans, header)
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise ConversionError(
            f"{str(target)!r} is a file, but the Brian2 export writes a script and "
            "its parameters into a folder; give a folder path (new or existing)."
        )

    def write_params(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    def write_script(temporary: str) -> None:
        Path(temporary).write_text(script_text(), encoding="utf-8")

    atomic_write(target / PARAMS_NAME, write_params)
    script = atomic_write(target / SCRIPT_NAME, write_script)
    logger.info("Wrote Brian2 script %s and %s", script, target / PARAMS_NAME)
    return script

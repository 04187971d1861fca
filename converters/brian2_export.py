"""Exact export of an SNU network to Brian2.

:func:`to_brian2` builds a Brian2 ``Network`` whose spike raster equals the
SNU output of :func:`snubridge.reference.simulate`, neuron for neuron and step
for step, and :func:`run_brian2` runs it and returns a
:class:`~snubridge.reference.SimulationResult` of the same shapes.

Schedule (stated in full in :mod:`snubridge.converters.brian2_core`): all
objects run in Brian2's ``groups`` slot, ordered by ``order``. Within one time
step the input spikes are emitted first. Then, layer by layer, the incoming
synapses add to ``I``, the membrane decays, ``v = g(I + b + I_rec + decayed
v)``, the threshold ``v - theta > 0`` fires, the monitors record, and the reset
sets ``v = 0``. Last, the recurrent synapses deliver this step's spikes into
``I_rec`` for the next step. A spike therefore reaches the
next layer in the step it was emitted, as in the SNU, and there is no
alignment shift: the Brian2 raster of step ``t`` is the SNU output ``y_t``.

Layer kinds map as described in :mod:`snubridge.converters.brian2_layers`:
SNU layers become leaky integrate-and-fire groups, readouts non-spiking
integrators, flatten a relabelling; sSNU layers and lateral inhibition raise
:class:`~snubridge.errors.ConversionError`.

Many samples are simulated in one run: every group holds ``n_samples``
independent copies of its layer (neuron ``sample * units + unit``) and the
synapses are block diagonal. :func:`run_brian2` with ``batch_size`` builds
one network of ``batch_size`` copies and runs the samples through it batch
after batch.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from snubridge.converters import brian2_core as core
from snubridge.converters.brian2_layers import (
    BuildContext,
    ConvertedLayer,
    FlattenConverter,
    Port,
    ReadoutConverter,
    SNUConverter,
    readout_plan,
    snu_plan,
)
from snubridge.converters.registry import LayerConverter, get_converter
from snubridge.errors import ConversionError, SnubridgeError
from snubridge.reference import SimulationResult
from snubridge.spec import LayerSpec, NetworkSpec

__all__ = [
    "TARGETS",
    "Brian2Network",
    "BuildContext",
    "ConvertedLayer",
    "FlattenConverter",
    "Port",
    "ReadoutConverter",
    "SNUConverter",
    "check_inputs",
    "float32_differences",
    "readout_plan",
    "resolve_spec",
    "resolve_target",
    "run_brian2",
    "snu_plan",
    "to_brian2",
]

logger = logging.getLogger(__name__)

TARGETS = ("numpy", "cython", "cpp_standalone", "cuda_standalone", "genn")
# Targets that generate, build and run a whole project: Brian2's own C++
# device and the GPU devices of the brian2cuda and brian2genn packages.
STANDALONE_TARGETS = {
    "cpp_standalone": None,
    "cuda_standalone": "brian2cuda",
    "genn": "brian2genn",
}
_warned_targets: set[str] = set()

#: ``layer_hook(layer, index, converter)`` may return another converter for
#: that layer, or ``None`` to keep the one found in the mapping or registry.
LayerHook = Callable[[LayerSpec, int, LayerConverter], "LayerConverter | None"]


# Targets -------------------------------------------------------------------


def _warn_once(target: str, reason: str) -> None:
    if target not in _warned_targets:
        _warned_targets.add(target)
        logger.warning(
            "Brian2 target %r is unavailable (%s); using 'numpy'.", target, reason
        )


def _cython_available() -> tuple[bool, str]:
    try:
        from brian2.codegen.runtime.cython_rt import CythonCodeObject
    except ImportError as error:  # Cython not installed
        return False, f"Cython cannot be imported: {error}"
    try:
        if CythonCodeObject.is_available():
            return True, ""
    except Exception as error:  # Brian2 compiles a test extension here
        return False, f"the Cython test build failed: {error}"
    return False, "Brian2 reports that Cython code cannot be compiled"


def _compiler_available() -> tuple[bool, str]:
    # NOTE: only checks that a compiler is on PATH; a failing standalone build
    # raises Brian2's error instead of falling back to numpy.
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) or shutil.which("c++"):
        return True, ""
    return False, f"no C++ compiler ({compiler!r} or 'c++') on PATH"


def resolve_target(target: str) -> str:
    """Return ``target`` if usable here, else ``"numpy"`` after one logged warning.

    Raises:
        ConversionError: ``target`` is not one of :data:`TARGETS`.
    """
    if target not in TARGETS:
        raise ConversionError(
            f"Unknown Brian2 target {target!r}; expected one of "
            f"{', '.join(map(repr, TARGETS))}."
        )
    if target == "numpy":
        return target
    if STANDALONE_TARGETS.get(target):
        available, reason = _device_package_available(STANDALONE_TARGETS[target])
        if not available:
            _warn_once(target, reason)
            return "numpy"
    available, reason = (
        _cython_available() if target == "cython" else _compiler_available()
    )
    if available:
        return target
    _warn_once(target, reason)
    return "numpy"


def _device_package_available(package: str) -> tuple[bool, str]:
    try:
        importlib.import_module(package)
    except ImportError as error:
        return False, f"the {package} package is not installed ({error})"
    return True, ""


@contextlib.contextmanager
def _codegen_target(target: str) -> Iterator[None]:
    """Set Brian2's runtime code-generation target and float64 for one run."""
    from brian2 import prefs

    saved = (prefs.codegen.target, prefs.core.default_float_dtype)
    prefs.codegen.target = "numpy" if target in STANDALONE_TARGETS else target
    prefs.core.default_float_dtype = np.float64
    try:
        yield
    finally:
        prefs.codegen.target, prefs.core.default_float_dtype = saved


# Spec resolution ------------------------------------------------------------


def resolve_spec(source: NetworkSpec | str | os.PathLike) -> NetworkSpec:
    """Return a validated spec from a spec, a parameter file or a Keras model file.

    ``.h5`` and ``.hdf5`` files must be snubridge parameter files (see
    :mod:`snubridge.params_file`); ``.keras`` files are Keras models, read with
    ``safe_mode=True`` and described by
    :func:`snubridge.keras_io.spec_from_model`.
    """
    if isinstance(source, NetworkSpec):
        return source.validate()
    if not isinstance(source, str | os.PathLike):
        raise ConversionError(
            f"Expected a NetworkSpec or a path to a .h5 or .keras file, received "
            f"{type(source).__name__}."
        )
    path = Path(source)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ConversionError(f"Model file {str(path)!r} does not exist.")
    if suffix in (".h5", ".hdf5"):
        from snubridge.params_file import load_params

        return load_params(path)
    if suffix == ".keras":
        return _spec_from_keras_file(path)
    raise ConversionError(
        f"Cannot read {str(path)!r}: expected a snubridge parameter file (.h5) or a "
        "Keras model (.keras)."
    )


def _spec_from_keras_file(path: Path) -> NetworkSpec:
    try:
        from snubridge import keras_io
    except ImportError as error:
        raise ConversionError(
            f"Reading the Keras model {str(path)!r} needs snubridge.keras_io, which "
            f"cannot be imported ({error}); save the parameters with "
            "snubridge.save_params and convert that file."
        ) from None
    model = keras_io.load_model(path)
    return keras_io.spec_from_model(model).validate()


# Network object ---------------------------------------------------------------


def check_inputs(
    spec: NetworkSpec, inputs: Any, n_samples: int | None = None
) -> np.ndarray:
    """Return ``inputs`` as a float64 0/1 raster ``(samples, steps, *input_shape)``.

    Raises:
        ConversionError: wrong shape, sample count or values other than 0 and 1
            (a ``SpikeGeneratorGroup`` emits spikes, not analog values).
    """
    values = np.asarray(inputs, dtype=np.float64)
    expected = tuple(spec.input_shape)
    if values.ndim != 2 + len(expected) or tuple(values.shape[2:]) != expected:
        raise ConversionError(
            f"Inputs must have shape (samples, steps, "
            f"{', '.join(map(str, expected))}), "
            f"received {values.shape}."
        )
    if n_samples is not None and values.shape[0] != n_samples:
        raise ConversionError(
            f"The network was built for {n_samples} samples but the inputs hold "
            f"{values.shape[0]}; build it with to_brian2(spec, {values.shape[0]})."
        )
    if values.shape[1] < 1:
        raise ConversionError("Inputs need at least one time step.")
    binary = (values == 0) | (values == 1)
    if not binary.all():
        where = tuple(int(i) for i in np.argwhere(~binary)[0])
        raise ConversionError(
            f"Inputs must be spike rasters of 0 and 1, found {values[where]!r} at "
            f"index {where}; rate-code analog inputs (for example Bernoulli "
            "sampling) before running Brian2."
        )
    return values


class Brian2Network:
    """A converted network: Brian2 objects, monitors and a spike-raster getter.

    Attributes:
        spec: The network description it was built from.
        n_samples: Independent copies simulated per run.
        target: Code-generation target in use after any fallback.
        precision: Precision the original model computed in; Brian2 computes
            in float64 regardless.
        network: The Brian2 ``Network``; ``None`` for ``cpp_standalone``
            before the first :meth:`run`, since a standalone build needs the
            inputs.
        input_group: The input ``SpikeGeneratorGroup``.
        layers: One :class:`ConvertedLayer` per converted layer.
        result: :class:`~snubridge.reference.SimulationResult` of the last run.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        n_samples: int,
        target: str,
        converters: list[LayerConverter],
        record_states: bool,
        threads: int | None = None,
    ) -> None:
        self.spec = spec
        self.threads = threads
        self.n_samples = int(n_samples)
        self.target = target
        self.precision = spec.precision
        self.record_states = bool(record_states)
        self._converters = converters
        self.network = None
        self.input_group = None
        self.layers: list[ConvertedLayer] = []
        self.result: SimulationResult | None = None
        self._steps_done = 0
        if target not in STANDALONE_TARGETS:
            with _codegen_target(target):
                self._build()

    @property
    def monitors(self) -> dict[str, dict[str, Any]]:
        """Layer name to its ``{"spikes": SpikeMonitor, "states": StateMonitor}``."""
        return {
            layer.name: {"spikes": layer.spike_monitor, "states": layer.state_monitor}
            for layer in self.layers
            if layer.spike_monitor is not None or layer.state_monitor is not None
        }

    def _build(self, raster: np.ndarray | None = None) -> None:
        import brian2 as b2

        clock = core.make_clock(self.spec.dt)
        order = core.OrderCounter()
        n_inputs = int(np.prod(self.spec.input_shape))
        self.input_group = core.build_input(self.n_samples, n_inputs, clock, order)
        if raster is not None:
            indices, times = core.input_spikes(raster, self.spec.dt)
            self.input_group.set_spikes(indices, times * b2.second)
        source = Port(self.input_group, tuple(self.spec.input_shape))
        self.layers = []
        for index, converter in enumerate(self._converters):
            layer = self.spec.layers[index]
            context = BuildContext(
                self.n_samples, self.spec.dt, clock, order, source, self.record_states
            )
            converted = converter.convert(layer, index, context)
            if not isinstance(converted, ConvertedLayer):
                raise ConversionError(
                    f"Converter {type(converter).__name__} for layer {layer.name!r} "
                    f"returned {type(converted).__name__}, expected a ConvertedLayer."
                )
            self.layers.append(converted)
            source = converted.output
        objects = [self.input_group]
        for converted in self.layers:
            objects.extend(converted.objects)
        self.network = b2.Network(*objects, name="snu_network")

    def run(self, inputs: Any) -> SimulationResult:
        """Simulate a raster ``(n_samples, steps, *input_shape)`` of 0 and 1.

        Runtime targets continue the same network: membranes and inputs are
        cleared, the input spikes are placed after the steps already run, and
        only the new steps are read back. ``cpp_standalone`` builds, compiles
        and runs a fresh project in a temporary folder and then restores the
        runtime device.

        Returns:
            Outputs and states per layer, shaped as by
            :func:`snubridge.reference.simulate`.
        """
        raster = check_inputs(self.spec, inputs, self.n_samples)
        steps = raster.shape[1]
        if self.target in STANDALONE_TARGETS:
            self.result = self._run_standalone(raster)
            return self.result
        import brian2 as b2

        start = self._steps_done
        with _codegen_target(self.target):
            if start:
                self._clear_state()
            indices, times = core.input_spikes(raster, self.spec.dt, start)
            self.input_group.set_spikes(indices, times * b2.second)
            self.network.run(steps * self.spec.dt * b2.second)
        self._steps_done += steps
        self.result = self._collect(raster, start, steps)
        return self.result

    def _clear_state(self) -> None:
        """Zero the membranes and pending inputs of every neuron group."""
        import brian2 as b2

        for converted in self.layers:
            for obj in converted.objects:
                if not isinstance(obj, b2.NeuronGroup):
                    continue
                for variable in ("v", "u", "I", "I_rec"):
                    if variable in obj.variables:
                        setattr(obj, variable, 0)

    def _run_standalone(self, raster: np.ndarray) -> SimulationResult:
        import brian2 as b2
        from brian2.devices.device import reset_device

        package = STANDALONE_TARGETS[self.target]
        if package:
            # NOTE: the GPU devices follow brian2cuda's and brian2genn's
            # documented set_device use; neither package is installed on the
            # machines this was tested on, so this path has not been run.
            importlib.import_module(package)
        directory = tempfile.mkdtemp(prefix="snubridge_cpp_")
        b2.set_device(self.target, directory=directory, build_on_run=False)
        saved_threads = b2.prefs.devices.cpp_standalone.openmp_threads
        if self.threads is not None:
            b2.prefs.devices.cpp_standalone.openmp_threads = int(self.threads)
        try:
            with _codegen_target(self.target):
                self._build(raster)
                steps = raster.shape[1]
                self.network.run(steps * self.spec.dt * b2.second)
                b2.device.build(directory=directory, compile=True, run=True)
                return self._collect(raster, 0, steps)
        finally:
            b2.prefs.devices.cpp_standalone.openmp_threads = saved_threads
            b2.device.reinit()
            reset_device()
            shutil.rmtree(directory, ignore_errors=True)
            self.network = None

    def _collect(self, raster: np.ndarray, start: int, steps: int) -> SimulationResult:
        outputs: dict[str, np.ndarray] = {}
        states: dict[str, np.ndarray] = {}
        samples = self.n_samples
        dt = self.spec.dt
        values = raster
        for converted in self.layers:
            units = converted.output.units
            if converted.kind == "flatten":
                values = values.reshape(samples, steps, -1)
                outputs[converted.name] = values
                continue
            if converted.is_spiking:
                spikes = core.spike_raster(
                    converted.spike_monitor, samples, units, steps, dt, start
                )
                values = spikes.reshape(samples, steps, *converted.output.shape)
                outputs[converted.name] = values
                if converted.state_monitor is not None:
                    states[converted.name] = core.state_trace(
                        converted.state_monitor, "v", samples, units, steps
                    )
                continue
            if converted.state_monitor is not None and converted.state_variable == "u":
                trace = core.state_trace(
                    converted.state_monitor, "u", samples, units, steps
                )
                value = core.readout_value(trace, converted.plan["mode"])
                states[converted.name] = value
                outputs[converted.name] = core.readout_activation(
                    value, converted.plan["activation"]
                )
        spiking = tuple(c.name for c in self.layers if c.is_spiking)
        return SimulationResult(outputs=outputs, states=states, _spiking=spiking)

    def spike_raster(
        self, name: str | None = None
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Return the last run's spikes ``(samples, steps, units)`` of layer ``name``.

        Without ``name``, return all spiking layers as a dict.
        """
        if self.result is None:
            raise ConversionError("No spikes yet: call run(inputs) first.")
        spikes = self.result.spikes
        if name is None:
            return spikes
        if name not in spikes:
            raise ConversionError(
                f"No spiking layer named {name!r}; spiking layers are "
                f"{', '.join(spikes) or 'none'}."
            )
        return spikes[name]


def _select_converters(
    spec: NetworkSpec,
    mapping: Mapping[str, Any] | None,
    layer_hook: LayerHook | None,
    exclude: Iterable[str],
) -> list[LayerConverter]:
    excluded = set(exclude)
    unknown = excluded - {layer.name for layer in spec.layers}
    if unknown:
        raise ConversionError(
            f"exclude names layers that do not exist: {', '.join(sorted(unknown))}; "
            f"layers are {', '.join(layer.name for layer in spec.layers)}."
        )
    converters = []
    for index, layer in enumerate(spec.layers):
        if layer.name in excluded:
            rest = [
                later.name
                for later in spec.layers[index:]
                if later.name not in excluded
            ]
            if rest:
                raise ConversionError(
                    f"Layer {layer.name!r} is excluded but layers after it are not "
                    f"({', '.join(rest)}); only a tail of the network can be left out, "
                    "since every Brian2 layer needs the spikes of the one before."
                )
            break
        converter = get_converter(layer.kind, mapping)
        if layer_hook is not None:
            chosen = layer_hook(layer, index, converter)
            if chosen is not None:
                if not isinstance(chosen, LayerConverter):
                    raise ConversionError(
                        f"layer_hook returned {chosen!r} for layer {layer.name!r}; "
                        "return a LayerConverter or None."
                    )
                converter = chosen
        converters.append(converter)
    return converters


def to_brian2(
    spec: NetworkSpec | str | os.PathLike,
    n_samples: int,
    *,
    target: str = "numpy",
    mapping: Mapping[str, Any] | None = None,
    layer_hook: LayerHook | None = None,
    exclude: Iterable[str] = (),
    record_states: bool = False,
    threads: int | None = None,
) -> Brian2Network:
    """Convert ``spec`` into a Brian2 network of ``n_samples`` independent copies.

    Args:
        spec: A :class:`~snubridge.spec.NetworkSpec`, a parameter file or a
            Keras model file (see :func:`resolve_spec`).
        n_samples: Input samples simulated together in one run.
        target: ``"numpy"``, ``"cython"`` or ``"cpp_standalone"``; an
            unavailable one falls back to numpy with one logged warning.
        mapping: Layer kind to converter, consulted before the registry.
        layer_hook: ``layer_hook(layer, index, converter)`` returning a
            replacement converter or ``None``.
        exclude: Names of layers at the end of the network to leave out.
        record_states: Record the membrane of every spiking layer.
        threads: OpenMP threads of a standalone device (Brian2's
            ``devices.cpp_standalone.openmp_threads``); None keeps Brian2's
            default of no OpenMP.

    Returns:
        A :class:`Brian2Network`; call its ``run(inputs)``.

    Raises:
        ConversionError: a layer cannot be converted, or bad arguments.
    """
    spec = resolve_spec(spec)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer):
        raise ConversionError(f"n_samples must be an integer, received {n_samples!r}.")
    if n_samples < 1:
        raise ConversionError(f"n_samples must be at least 1, received {n_samples}.")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ConversionError(
            f"threads must be a positive integer or None, received {threads!r}."
        )
    resolved = resolve_target(target)
    converters = _select_converters(spec, mapping, layer_hook, exclude)
    try:
        return Brian2Network(
            spec, int(n_samples), resolved, converters, record_states, threads
        )
    except SnubridgeError:
        raise
    except (ValueError, KeyError) as error:
        raise ConversionError(f"Building the Brian2 network failed: {error}") from error


def run_brian2(
    spec: NetworkSpec | str | os.PathLike,
    inputs: Any,
    *,
    target: str = "numpy",
    record_states: bool = False,
    batch_size: int | None = None,
    threads: int | None = None,
) -> SimulationResult:
    """Run ``spec`` in Brian2 on a 0/1 raster ``(samples, steps, *input_shape)``.

    Outputs and states have the shapes of :func:`snubridge.reference.simulate`,
    with no alignment shift. ``states`` contains the readout always and the
    spiking layers only when ``record_states`` is true.

    Args:
        spec: A spec, a parameter file or a Keras model file.
        inputs: Spike raster of 0 and 1.
        target: ``"numpy"``, ``"cython"`` or ``"cpp_standalone"``.
        record_states: Record the membrane of spiking layers.
        batch_size: Copies per network. ``None`` simulates all samples in
            one network and one run. A smaller value builds one network of
            ``batch_size`` copies and runs the batches through it one after
            the other, the last one padded with silent samples. That needs
            less memory, and for large networks it is faster because Brian2's
            synapse creation dominates (see ``benchmarks/bench_brian2.py``).
            ``cpp_standalone`` ignores it and builds one project for all
            samples.
        threads: OpenMP threads of a standalone device, see :func:`to_brian2`.
    """
    spec = resolve_spec(spec)
    raster = check_inputs(spec, inputs)
    samples = raster.shape[0]
    if batch_size is None or batch_size >= samples or target in STANDALONE_TARGETS:
        network = to_brian2(
            spec,
            samples,
            target=target,
            record_states=record_states,
            threads=threads,
        )
        return network.run(raster)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ConversionError(
            f"batch_size must be a positive integer or None, received {batch_size!r}."
        )
    network = to_brian2(spec, batch_size, target=target, record_states=record_states)
    parts = []
    for first in range(0, samples, batch_size):
        batch = raster[first : first + batch_size]
        count = batch.shape[0]
        if count < batch_size:
            padding = np.zeros((batch_size - count, *batch.shape[1:]))
            batch = np.concatenate([batch, padding])
        result = network.run(batch)
        parts.append((count, result))
    return _concatenate(parts)


def _concatenate(parts: list[tuple[int, SimulationResult]]) -> SimulationResult:
    first = parts[0][1]
    outputs = {
        name: np.concatenate([result.outputs[name][:count] for count, result in parts])
        for name in first.outputs
    }
    states = {
        name: np.concatenate([result.states[name][:count] for count, result in parts])
        for name in first.states
    }
    return SimulationResult(outputs=outputs, states=states, _spiking=first._spiking)


def float32_differences(
    spec: NetworkSpec | str | os.PathLike, inputs: Any
) -> dict[str, dict[str, Any]]:
    """Compare float32 and float64 SNU rasters and report the margins to threshold.

    Brian2 computes in float64, while a Keras model usually computes in
    float32, so a state within float32 rounding of the threshold may fire in
    one and not in the other. This runs :func:`snubridge.reference.simulate`
    in both precisions on the same inputs.

    Returns:
        Spiking layer name to ``count`` (number of differing spikes),
        ``positions`` (``(sample, step, unit)`` index array) and ``margins``
        (float64 ``s - theta`` at those positions). After the first flip the
        layers downstream see different inputs, so later differences can have
        large margins.
    """
    from snubridge.reference import simulate

    spec = resolve_spec(spec)
    raster = check_inputs(spec, inputs)
    exact = simulate(spec, raster, dtype=np.float64)
    rounded = simulate(spec, raster, dtype=np.float32)
    report = {}
    for layer in spec.layers:
        if not layer.is_spiking:
            continue
        differs = exact.spikes[layer.name] != rounded.spikes[layer.name]
        positions = np.argwhere(differs)
        threshold = np.asarray(layer.threshold, dtype=np.float64)
        if layer.kind == "snu_conv2d":
            threshold = np.tile(threshold, layer.units // threshold.size)
        margins = exact.states[layer.name][differs] - threshold[positions[:, 2]]
        report[layer.name] = {
            "count": int(differs.sum()),
            "positions": positions,
            "margins": margins,
        }
    return report

"""Move between Keras SNU models and :class:`~snubridge.spec.NetworkSpec`.

* :func:`spec_from_model` reads the layers of a trained model into a spec,
* :func:`model_from_spec` builds a Keras model that computes the same network,
* :func:`run_keras` runs a model and records every layer's output and state,
* :func:`load_model` opens a ``.keras`` file with ``safe_mode`` on.

Extension layer kinds map their own Keras layer class through the
``keras_layer``, ``to_spec`` and ``from_spec`` fields of their
:class:`~snubridge.spec.LayerKind` (see :func:`snubridge.spec.register_layer_kind`).
Those classes are matched before the built-in ones, so an extension layer that
subclasses :class:`~snubridge.layers.SNUDense` is never read as a plain dense
layer.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from snubridge import spec as spec_module
from snubridge.errors import ParameterFileError, SpecError
from snubridge.layers import (
    SNUCell,
    SNUConv2D,
    SNUDense,
    SNUReadout,
    SNURecurrent,
    SpikeFlatten,
)
from snubridge.params_file import atomic_write
from snubridge.reference import SimulationResult
from snubridge.spec import LAYER_KINDS, LayerKind, LayerSpec, NetworkSpec

logger = logging.getLogger(__name__)

SUPPORTED_LAYERS = (
    "SNUDense",
    "SNURecurrent",
    "SNUConv2D",
    "SSNUDense",
    "SSNURecurrent",
    "SSNUConv2D",
    "SNUReadout",
    "SpikeFlatten",
    "RNN(SNUCell)",
)


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a ``.keras`` file with ``safe_mode=True`` (no code from the file runs)."""
    source = Path(path)
    if not source.is_file():
        raise ParameterFileError(f"Model file {str(source)!r} does not exist.")
    if source.suffix != ".keras":
        raise ParameterFileError(
            f"{str(source)!r} is not a .keras file; HDF5 parameter files open with "
            "snubridge.load_params."
        )
    # A .keras file names its layers by registered class name, so the Keras
    # classes of extension kinds are imported (and so registered) first.
    _keras_extensions()
    if not zipfile.is_zipfile(source):
        raise ParameterFileError(
            f"{str(source)!r} is not a readable .keras archive; it may be truncated. "
            "Save the model again."
        )
    try:
        return keras.saving.load_model(source, safe_mode=True)
    except (ValueError, OSError, KeyError, TypeError) as error:
        if "safe_mode" in str(error):
            raise ParameterFileError(
                f"{str(source)!r} contains code (a Lambda layer or a custom function), "
                "which snubridge does not load: files are data, and safe_mode stays "
                "on. Rebuild the model from snubridge layers."
            ) from None
        raise ParameterFileError(
            f"Could not load the Keras model {str(source)!r}: {error}"
        ) from None


def _keras_extensions() -> list[tuple[LayerKind, type]]:
    """Return ``(layer_kind, keras_class)`` of each extension kind with Keras.

    A kind whose Keras class fails to import is logged and left out, so one
    broken plug-in does not block models that do not use it.
    """
    found = []
    for layer_kind in spec_module.LAYER_KIND_REGISTRY.layer_kinds():
        if layer_kind.keras_layer is None:
            continue
        try:
            found.append((layer_kind, layer_kind.keras_hooks()[0]))
        except SpecError as error:
            logger.warning("Keras layer of kind %r skipped: %s", layer_kind.kind, error)
    return found


def _extension_for_layer(
    layer: Any, extensions: list[tuple[LayerKind, type]]
) -> LayerKind | None:
    """Return the extension kind of a Keras ``layer``: exact class, else subclass."""
    for layer_kind, layer_class in extensions:
        if type(layer) is layer_class:
            return layer_kind
    for layer_kind, layer_class in extensions:
        if isinstance(layer, layer_class):
            return layer_kind
    return None


def _extension_entry(
    layer: Any, layer_kind: LayerKind, input_shape: tuple[int, ...]
) -> LayerSpec:
    _, to_spec, _ = layer_kind.keras_hooks()
    entry = to_spec(layer, input_shape)
    if not isinstance(entry, LayerSpec) or entry.kind != layer_kind.kind:
        raise SpecError(
            f"to_spec of kind {layer_kind.kind!r} returned {entry!r} for layer "
            f"{layer.name!r}; expected a LayerSpec of kind {layer_kind.kind!r}."
        )
    return entry


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Save ``model`` as ``.keras`` through a temporary file and a rename."""
    target = Path(path)
    if target.suffix != ".keras":
        raise ParameterFileError(
            f"Keras models are saved as .keras, received {str(target)!r}."
        )

    def write(temporary: str) -> None:
        staged = temporary + ".keras"
        try:
            model.save(staged)
            os.replace(staged, temporary)
        finally:
            if os.path.exists(staged):
                os.unlink(staged)

    return atomic_write(target, write)


def _value(variable: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)


def _snu_entry(layer: Any, kind: str, input_shape: tuple[int, ...]) -> LayerSpec:
    settings = layer.settings
    return LayerSpec(
        name=layer.name,
        kind=kind,
        kernel=_value(layer.kernel),
        threshold=_value(layer.threshold),
        bias=None if layer.bias is None else _value(layer.bias),
        recurrent_kernel=(
            None
            if getattr(layer, "recurrent_kernel", None) is None
            else _value(layer.recurrent_kernel)
        ),
        decay=settings.decay,
        decay_mode=settings.decay_mode,
        tau=settings.tau,
        activation=settings.activation,
        output=settings.output,
        lateral_inhibition=settings.lateral_inhibition,
        strides=tuple(getattr(layer, "strides", (1, 1))),
        padding=getattr(layer, "padding", "valid"),
        input_shape=input_shape,
    )


def snu_layer_spec(layer: Any, kind: str, input_shape: tuple[int, ...]) -> LayerSpec:
    """Return the :class:`LayerSpec` fields of an SNU Keras layer as ``kind``.

    Reads the weights (``kernel``, ``threshold``, ``bias``, ``recurrent_kernel``
    where present), the neuron settings and the convolution settings. An
    extension's ``to_spec`` calls it for a layer that subclasses an SNU layer
    and then adds its ``params``.
    """
    return _snu_entry(layer, kind, input_shape)


def snu_layer_arguments(entry: LayerSpec, dtype: str, dt: float) -> dict[str, Any]:
    """Return the neuron keyword arguments of an SNU Keras layer built from ``entry``.

    ``decay`` for ``decay_mode="direct"``, else ``tau``, ``dt`` (seconds) and
    ``decay_mode``; plus ``activation``, ``output``, ``lateral_inhibition``,
    ``use_bias``, ``name`` and ``dtype``. An extension's ``from_spec`` passes
    them to its layer class.
    """
    neuron = dict(
        activation=entry.activation,
        output=entry.output,
        lateral_inhibition=entry.lateral_inhibition,
        use_bias=entry.bias is not None,
        name=entry.name,
        dtype=dtype,
    )
    if entry.decay_mode == "direct":
        neuron["decay"] = entry.decay
    else:
        neuron.update(tau=entry.tau, dt=dt, decay_mode=entry.decay_mode)
    return neuron


def _layer_dt(layer: Any) -> float | None:
    settings = getattr(layer, "settings", None)
    return None if settings is None else settings.dt


def spec_from_model(model: keras.Model, dt: float | None = None) -> NetworkSpec:
    """Describe a Keras model of SNU layers as a validated :class:`NetworkSpec`.

    The model must be a chain (``Sequential`` or a functional chain) of the
    layers in ``SUPPORTED_LAYERS`` or of the Keras layers of registered
    extension kinds. ``dt`` (seconds) defaults to the ``dt`` the layers were
    built with, else 1 ms.
    """
    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    input_shape = tuple(int(n) for n in model.input_shape[2:])
    shape = input_shape
    entries: list[LayerSpec] = []
    layer_dts = {value for value in map(_layer_dt, layers) if value is not None}
    if len(layer_dts) > 1:
        raise SpecError(
            f"Layers were built with different time steps {sorted(layer_dts)} s; one "
            "network needs one dt."
        )
    extensions = _keras_extensions()
    for layer in layers:
        extension = _extension_for_layer(layer, extensions)
        if extension is not None:
            entry = _extension_entry(layer, extension, shape)
        elif isinstance(layer, SNUConv2D):
            entry = _snu_entry(layer, "snu_conv2d", shape)
        elif isinstance(layer, SNUDense):
            kind = "snu_recurrent" if isinstance(layer, SNURecurrent) else "snu_dense"
            entry = _snu_entry(layer, kind, shape)
        elif isinstance(layer, keras.layers.RNN) and isinstance(layer.cell, SNUCell):
            if not layer.return_sequences:
                raise SpecError(
                    f"RNN layer {layer.name!r} must use return_sequences=True to "
                    "describe an SNU layer."
                )
            cell = layer.cell
            kind = "snu_recurrent" if cell.recurrent else "snu_dense"
            entry = _snu_entry(cell, kind, shape)
            entry.name = layer.name
        elif isinstance(layer, SNUReadout):
            entry = LayerSpec(
                name=layer.name,
                kind="readout",
                kernel=_value(layer.kernel),
                bias=None if layer.bias is None else _value(layer.bias),
                decay=layer.decay,
                readout_mode=layer.mode,
                readout_activation=layer.activation,
                input_shape=shape,
            )
        elif isinstance(layer, SpikeFlatten):
            entry = LayerSpec(name=layer.name, kind="flatten", input_shape=shape)
        else:
            extension_names = [layer_class.__name__ for _, layer_class in extensions]
            raise SpecError(
                f"Layer {layer.name!r} of type {type(layer).__name__} has no SNU "
                f"equivalent; supported layers are "
                f"{', '.join([*SUPPORTED_LAYERS, *extension_names])}. Replace it, or "
                "map it with snubridge.spec.register_layer_kind(kind, ..., "
                "keras_layer=..., to_spec=..., from_spec=...)."
            )
        entries.append(entry)
        shape = entry.output_shape
    dtypes = {layer.compute_dtype for layer in layers}
    precision = "float64" if dtypes == {"float64"} else "float32"
    if dt is None:
        dt = layer_dts.pop() if layer_dts else 1e-3
    name = model.name if model.name else "snu_network"
    return NetworkSpec(
        layers=entries, input_shape=input_shape, dt=dt, precision=precision, name=name
    ).validate()


def model_from_spec(
    spec: NetworkSpec, dtype: str | None = None, n_steps: int | None = None
) -> keras.Model:
    """Build a Keras model computing ``spec``, with its weights set.

    Args:
        spec: The network.
        dtype: ``"float32"`` or ``"float64"``; defaults to ``spec.precision``.
        n_steps: Static number of time steps (None keeps it dynamic).
    """
    spec.validate()
    dtype = dtype or spec.precision
    inputs = keras.Input(shape=(n_steps, *spec.input_shape), dtype=dtype)
    values = inputs
    built = []
    for entry in spec.layers:
        layer = _layer_from_entry(entry, dtype, spec.dt)
        values = layer(values)
        built.append((layer, entry))
    model = keras.Model(inputs, values, name=spec.name)
    for layer, entry in built:
        if entry.kind not in LAYER_KINDS:
            _assign_extension_weights(layer, entry)
            continue
        if entry.kind == "flatten":
            continue
        layer.kernel.assign(entry.kernel)
        if entry.bias is not None:
            layer.bias.assign(entry.bias)
        if entry.kind == "readout":
            continue
        layer.threshold.assign(entry.threshold)
        if entry.recurrent_kernel is not None:
            layer.recurrent_kernel.assign(entry.recurrent_kernel)
    return model


_WEIGHT_FIELDS = ("kernel", "bias", "threshold", "recurrent_kernel")


def _assign_extension_weights(layer: keras.layers.Layer, entry: LayerSpec) -> None:
    """Copy the spec's weights into the built extension ``layer``, by field name."""
    for field in _WEIGHT_FIELDS:
        value = getattr(entry, field)
        if value is None:
            continue
        target = getattr(layer, field, None)
        if target is None:
            raise SpecError(
                f"Layer {entry.name!r} of kind {entry.kind!r}: the spec has {field} "
                f"but the Keras layer {type(layer).__name__} has no {field} weight; "
                "its from_spec must build a layer with that weight."
            )
        target.assign(value)


def _layer_from_entry(entry: LayerSpec, dtype: str, dt: float) -> keras.layers.Layer:
    if entry.kind not in LAYER_KINDS:
        where = f"Layer {entry.name!r}"
        layer_kind = spec_module.get_layer_kind(entry.kind, where=where)
        _, _, from_spec = layer_kind.keras_hooks()
        layer = from_spec(entry, dtype, dt)
        if not isinstance(layer, keras.layers.Layer):
            raise SpecError(
                f"from_spec of kind {entry.kind!r} returned {type(layer).__name__} "
                f"for layer {entry.name!r}; expected a keras.layers.Layer."
            )
        return layer
    if entry.kind == "flatten":
        return SpikeFlatten(name=entry.name, dtype=dtype)
    if entry.kind == "readout":
        return SNUReadout(
            entry.units,
            mode=entry.readout_mode,
            activation=entry.readout_activation,
            decay=entry.decay,
            use_bias=entry.bias is not None,
            name=entry.name,
            dtype=dtype,
        )
    neuron = snu_layer_arguments(entry, dtype, dt)
    if entry.kind == "snu_conv2d":
        return SNUConv2D(
            int(entry.kernel.shape[3]),
            tuple(int(n) for n in entry.kernel.shape[:2]),
            strides=entry.strides,
            padding=entry.padding,
            **neuron,
        )
    layer_class = SNURecurrent if entry.kind == "snu_recurrent" else SNUDense
    return layer_class(int(entry.kernel.shape[1]), **neuron)


def run_keras(
    model: keras.Model, inputs: np.ndarray, *, batch_size: int = 256
) -> SimulationResult:
    """Run ``model`` layer by layer and record every output and membrane state.

    Returns a :class:`~snubridge.reference.SimulationResult` with the same keys
    and shapes as :func:`snubridge.reference.simulate`, in float64 arrays
    (values computed in the model's own dtype).
    """
    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    dtype = model.dtype_policy.compute_dtype
    outputs: dict[str, list[np.ndarray]] = {}
    states: dict[str, list[np.ndarray]] = {}
    values = np.asarray(inputs)
    for start in range(0, values.shape[0], batch_size):
        batch = tf.convert_to_tensor(values[start : start + batch_size], dtype=dtype)
        for layer in layers:
            if isinstance(layer, keras.layers.RNN):
                batch, state = _run_cell(layer, batch)
            else:
                batch, state = layer(batch, return_states=True)
            outputs.setdefault(layer.name, []).append(batch.numpy().astype(np.float64))
            if state is not None:
                state = state.numpy().astype(np.float64)
                if state.ndim > 3:
                    state = state.reshape(state.shape[0], state.shape[1], -1)
                states.setdefault(layer.name, []).append(state)
    spiking = tuple(
        layer.name
        for layer in layers
        if getattr(getattr(layer, "settings", None), "output", None) == "step"
        or (
            isinstance(layer, keras.layers.RNN)
            and getattr(layer.cell, "settings", None) is not None
            and layer.cell.settings.output == "step"
        )
    )
    return SimulationResult(
        outputs={name: np.concatenate(parts) for name, parts in outputs.items()},
        states={name: np.concatenate(parts) for name, parts in states.items()},
        _spiking=spiking,
    )


def _run_cell(layer: keras.layers.RNN, batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    cell = layer.cell
    zeros = tf.zeros((tf.shape(batch)[0], cell.units), batch.dtype)
    states = [zeros, zeros]
    outputs, membrane = [], []
    for frame in tf.unstack(batch, axis=1):
        output, states = cell(frame, states)
        outputs.append(output)
        membrane.append(states[0])
    return tf.stack(outputs, axis=1), tf.stack(membrane, axis=1)

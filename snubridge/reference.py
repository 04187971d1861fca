"""Plain numpy simulator of a :class:`~snubridge.spec.NetworkSpec`.

It is the second implementation of the SNU dynamics that the Keras layers and
the Brian2 export are tested against, and the engine of the PCM crossbar
deployment, which swaps the matrix products for emulated ones through the
``matmul`` hook. It computes in float64 unless ``dtype`` says otherwise.

The dynamics are those stated in :mod:`snubridge.spec`. Input projections of
all time steps are one matrix product per layer; only the state recursion
loops over steps. Layers of an extension kind (see
:func:`snubridge.spec.register_layer_kind`) run through the ``simulate``
function their kind registered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from snubridge.errors import SpecError
from snubridge.spec import LAYER_KINDS, LayerSpec, NetworkSpec, get_layer_kind

# matmul(key, inputs (rows, in), weights (in, out)) -> (rows, out). The key is
# the layer name, with "/recurrent" appended for the recurrent kernel.
MatmulHook = Callable[[str, np.ndarray, np.ndarray], np.ndarray]


def _plain_matmul(key: str, inputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return inputs @ weights


@dataclasses.dataclass
class SimulationResult:
    """Outputs and membrane states of every layer.

    Attributes:
        outputs: Layer name to output, ``(samples, steps, *shape)``; readouts in
            ``"mean"`` and ``"leaky_last"`` mode give ``(samples, units)``.
        states: Layer name to membrane state ``s_t`` (after ``g``, before the
            reset of the next step), ``(samples, steps, units)``. For readouts
            the value before the readout activation.
    """

    outputs: dict[str, np.ndarray]
    states: dict[str, np.ndarray]

    @property
    def spikes(self) -> dict[str, np.ndarray]:
        """Outputs of spiking layers, flattened to ``(samples, steps, units)``."""
        return {
            name: out.reshape(out.shape[0], out.shape[1], -1)
            for name, out in self.outputs.items()
            if name in self._spiking
        }

    # Names of the step-output layers, passed by the simulator that made the
    # result; ``spikes`` selects them.
    _spiking: tuple[str, ...] = ()


def conv_patches(
    inputs: np.ndarray,
    kernel_hw: tuple[int, int],
    strides: tuple[int, int],
    padding: str,
) -> np.ndarray:
    """Return image patches ``(samples, out_h, out_w, kh * kw * c)`` (im2col).

    Patch entries are ordered ``(kh, kw, c)`` to match
    ``kernel.reshape(kh * kw * c, c_out)`` of a Keras ``(kh, kw, c, c_out)``
    kernel, and ``"same"`` padding splits the padding as Keras and TensorFlow
    do (the extra row or column goes to the bottom or right).
    """
    samples, height, width, channels = inputs.shape
    kh, kw = kernel_hw
    sh, sw = strides
    if padding == "same":
        out_h, out_w = -(-height // sh), -(-width // sw)
        pad_h = max((out_h - 1) * sh + kh - height, 0)
        pad_w = max((out_w - 1) * sw + kw - width, 0)
        inputs = np.pad(
            inputs,
            (
                (0, 0),
                (pad_h // 2, pad_h - pad_h // 2),
                (pad_w // 2, pad_w - pad_w // 2),
                (0, 0),
            ),
        )
    windows = np.lib.stride_tricks.sliding_window_view(inputs, (kh, kw), axis=(1, 2))
    windows = windows[:, ::sh, ::sw]
    # windows: (samples, out_h, out_w, c, kh, kw) -> (..., kh, kw, c)
    windows = np.moveaxis(windows, 3, -1)
    return windows.reshape(windows.shape[0], windows.shape[1], windows.shape[2], -1)


def input_projection(
    layer: LayerSpec, inputs: np.ndarray, matmul: MatmulHook = _plain_matmul
) -> np.ndarray:
    """Return ``W x_t + b`` for all samples and steps, ``(samples, steps, units)``.

    ``inputs`` has shape ``(samples, steps, *layer.input_shape)``.
    """
    samples, steps = inputs.shape[:2]
    if layer.kind == "snu_conv2d":
        frames = inputs.reshape(samples * steps, *layer.input_shape)
        kh, kw = layer.kernel.shape[:2]
        patches = conv_patches(frames, (kh, kw), layer.strides, layer.padding)
        flat = patches.reshape(-1, patches.shape[-1])
        weights = layer.kernel.reshape(-1, layer.kernel.shape[-1])
        current = matmul(layer.name, flat, weights)
        if layer.bias is not None:
            current = current + layer.bias
        # (samples*steps*out_h*out_w, c_out) flattened in Keras order (h, w, c)
        return current.reshape(samples, steps, -1)
    flat = inputs.reshape(samples * steps, -1)
    current = matmul(layer.name, flat, layer.kernel)
    if layer.bias is not None:
        current = current + layer.bias
    return current.reshape(samples, steps, -1)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * values))


def _threshold_per_unit(layer: LayerSpec) -> np.ndarray:
    if layer.kind == "snu_conv2d":
        out_h, out_w, _ = layer.output_shape
        return np.tile(layer.threshold, out_h * out_w)
    return layer.threshold


def run_snu_layer(
    layer: LayerSpec,
    current: np.ndarray,
    matmul: MatmulHook = _plain_matmul,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the SNU recursion on input currents ``(samples, steps, units)``.

    Returns ``(outputs, states)``, both ``(samples, steps, units)``.
    """
    samples, steps, units = current.shape
    dtype = current.dtype
    threshold = _threshold_per_unit(layer).astype(dtype)
    decay = dtype.type(layer.decay)
    state = np.zeros((samples, units), dtype)
    output = np.zeros((samples, units), dtype)
    reset = np.zeros((samples, units), dtype)
    outputs = np.empty_like(current)
    states = np.empty_like(current)
    for step in range(steps):
        total = current[:, step]
        if layer.kind == "snu_recurrent":
            total = total + matmul(
                f"{layer.name}/recurrent", output, layer.recurrent_kernel
            )
        state = total + decay * state * (1 - reset)
        if layer.activation == "relu":
            state = np.maximum(state, 0)
        margin = state - threshold
        if layer.output == "sigmoid":
            output = _sigmoid(margin)
            reset = output
        else:
            output = (margin > 0).astype(dtype)
            if layer.lateral_inhibition:
                best = np.max(
                    np.where(output > 0, margin, -np.inf), axis=1, keepdims=True
                )
                output = output * (margin == best)
                reset = np.broadcast_to(
                    np.max(output, axis=1, keepdims=True), output.shape
                )
            else:
                reset = output
        outputs[:, step] = output
        states[:, step] = state
    return outputs, states


def run_readout(layer: LayerSpec, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply a readout to currents ``(samples, steps, units)``.

    Returns ``(output, value)``: after and before the readout activation.
    """
    if layer.readout_mode in ("leaky", "leaky_last"):
        value = np.empty_like(current)
        accumulator = np.zeros_like(current[:, 0])
        for step in range(current.shape[1]):
            accumulator = (
                current.dtype.type(layer.decay) * accumulator + current[:, step]
            )
            value[:, step] = accumulator
        if layer.readout_mode == "leaky_last":
            value = value[:, -1]
    elif layer.readout_mode == "mean":
        value = current.mean(axis=1)
    else:
        value = current
    if layer.readout_activation == "softmax":
        shifted = np.exp(value - value.max(axis=-1, keepdims=True))
        output = shifted / shifted.sum(axis=-1, keepdims=True)
    elif layer.readout_activation == "sigmoid":
        output = _sigmoid(value)
    else:
        output = value
    return output, value


def run_extension_layer(
    layer: LayerSpec,
    inputs: np.ndarray,
    matmul: MatmulHook = _plain_matmul,
    dtype: type = np.float64,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run a layer of an extension kind through its registered ``simulate``.

    ``inputs`` has shape ``(samples, steps, *layer.input_shape)``. The kind's
    function receives ``matmul`` too when it takes that keyword.

    Returns:
        ``(outputs, states)``: outputs ``(samples, steps, *layer.output_shape)``
        and states ``(samples, steps, units)`` or ``None``, both in ``dtype``.

    Raises:
        SpecError: the kind is not registered, registered no ``simulate``, or
            its ``simulate`` returned arrays of the wrong shape.
    """
    where = f"Layer {layer.name!r}"
    extension = get_layer_kind(layer.kind, where=where)
    if extension.simulate is None:
        raise SpecError(
            f"{where}: the extension kind {layer.kind!r} has no reference simulation; "
            "register the kind with simulate=f, where f(layer, inputs) returns "
            "(outputs, states)."
        )
    if extension.simulate_accepts_matmul:
        result = extension.simulate(layer, inputs, matmul=matmul)
    else:
        result = extension.simulate(layer, inputs)
    if not isinstance(result, tuple) or len(result) != 2:
        raise SpecError(
            f"{where}: simulate of kind {layer.kind!r} returned "
            f"{type(result).__name__}, expected a tuple (outputs, states)."
        )
    samples, steps = inputs.shape[:2]
    expected = (samples, steps, *layer.output_shape)
    outputs = np.asarray(result[0], dtype=dtype)
    if outputs.shape != expected:
        raise SpecError(
            f"{where}: simulate of kind {layer.kind!r} returned outputs of shape "
            f"{outputs.shape}, expected {expected}."
        )
    states = result[1]
    if states is not None:
        states = np.asarray(states, dtype=dtype)
        if states.shape[:2] != (samples, steps) or states.size != outputs.size:
            raise SpecError(
                f"{where}: simulate of kind {layer.kind!r} returned states of shape "
                f"{states.shape}, expected {(samples, steps, layer.units)}."
            )
        states = states.reshape(samples, steps, -1)
    return outputs, states


def simulate(
    spec: NetworkSpec,
    inputs: np.ndarray,
    *,
    matmul: MatmulHook | None = None,
    dtype: type = np.float64,
) -> SimulationResult:
    """Run ``spec`` on ``inputs`` of shape ``(samples, steps, *spec.input_shape)``."""
    matmul = matmul or _plain_matmul
    values = np.asarray(inputs, dtype=dtype)
    expected = tuple(spec.input_shape)
    if values.ndim != 2 + len(expected) or tuple(values.shape[2:]) != expected:
        raise SpecError(
            "Inputs must have shape (samples, steps, "
            f"{', '.join(map(str, expected))}), "
            f"received {values.shape}."
        )
    outputs: dict[str, np.ndarray] = {}
    states: dict[str, np.ndarray] = {}
    samples, steps = values.shape[:2]
    for layer in spec.layers:
        if layer.kind not in LAYER_KINDS:
            output, state = run_extension_layer(layer, values, matmul, dtype)
            outputs[layer.name] = output
            if state is not None:
                states[layer.name] = state
            values = output
            continue
        if layer.kind == "flatten":
            values = values.reshape(samples, steps, -1)
            outputs[layer.name] = values
            continue
        current = input_projection(layer, values, matmul).astype(dtype, copy=False)
        if layer.kind == "readout":
            output, value = run_readout(layer, current)
            outputs[layer.name] = output
            states[layer.name] = value
            values = output
            continue
        output, state = run_snu_layer(layer, current, matmul)
        shape = (samples, steps, *layer.output_shape)
        outputs[layer.name] = output.reshape(shape)
        states[layer.name] = state
        values = output.reshape(shape)
    spiking = tuple(layer.name for layer in spec.layers if layer.is_spiking)
    return SimulationResult(outputs=outputs, states=states, _spiking=spiking)

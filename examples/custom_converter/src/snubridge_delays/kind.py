"""The ``snu_dense_delayed`` layer kind: shape, validation and numpy reference.

This module imports only numpy and :mod:`snubridge.spec`/:mod:`snubridge.reference`,
because snubridge loads it whenever a spec names the kind.
"""

from __future__ import annotations

import logging

import numpy as np

from snubridge.errors import SpecError
from snubridge.reference import MatmulHook, run_snu_layer
from snubridge.spec import LayerKind, LayerSpec

logger = logging.getLogger(__name__)

KIND = "snu_dense_delayed"


def delay_steps(layer: LayerSpec) -> int:
    """Return the synaptic delay ``d`` of ``layer`` in time steps."""
    return int(layer.params["delay"])


def validate(layer: LayerSpec) -> None:
    """Check ``params`` (only ``delay``, an int >= 0) and the dense layer fields.

    Raises:
        SpecError: missing, extra or invalid parameters, or any field a
            ``snu_dense`` layer would reject.
    """
    where = f"Layer {layer.name!r} of kind {KIND!r}"
    if set(layer.params) != {"delay"}:
        raise SpecError(
            f"{where} takes exactly one parameter, params={{'delay': d}} with d an "
            f"integer number of time steps >= 0; received params={layer.params!r}."
        )
    delay = layer.params["delay"]
    if not isinstance(delay, int) or delay < 0:
        raise SpecError(
            f"{where}: delay must be an integer number of time steps >= 0, received "
            f"{delay!r}; round a delay in seconds to steps of dt."
        )
    layer.validate_as("snu_dense")


def output_shape(layer: LayerSpec) -> tuple[int, ...]:
    """Return ``(units,)``, the number of columns of the ``(in, out)`` kernel."""
    return (int(np.asarray(layer.kernel).shape[1]),)


def is_spiking(layer: LayerSpec) -> bool:
    """Return True for a step output (spikes), False for an sSNU sigmoid output."""
    return layer.output == "step"


def delayed_current(
    layer: LayerSpec, inputs: np.ndarray, matmul: MatmulHook | None = None
) -> np.ndarray:
    """Return ``a_t = W x_{t-d} + b`` for every step, ``(samples, steps, units)``.

    Steps ``t < d`` receive no input spikes, only the bias.
    """
    samples, steps = inputs.shape[:2]
    flat = inputs.reshape(samples * steps, -1)
    if matmul is None:
        projected = flat @ layer.kernel
    else:
        projected = matmul(layer.name, flat, layer.kernel)
    projected = np.asarray(projected, dtype=inputs.dtype).reshape(samples, steps, -1)
    delay = delay_steps(layer)
    current = np.zeros_like(projected)
    if delay < steps:
        current[:, delay:] = projected[:, : steps - delay]
    if layer.bias is not None:
        current = current + layer.bias.astype(inputs.dtype)
    return current


def simulate(
    layer: LayerSpec, inputs: np.ndarray, matmul: MatmulHook | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run the layer on ``inputs`` ``(samples, steps, in)``; return (outputs, states).

    The delayed current goes through :func:`snubridge.reference.run_snu_layer`,
    the same recursion as a ``snu_dense`` layer.
    """
    current = delayed_current(layer, inputs, matmul)
    if matmul is None:
        return run_snu_layer(layer, current)
    return run_snu_layer(layer, current, matmul)


#: The kind that the entry point ``snubridge.layer_kinds: snu_dense_delayed`` names.
LAYER_KIND = LayerKind(
    KIND,
    output_shape=output_shape,
    simulate=simulate,
    spiking=is_spiking,
    validate=validate,
    keras_layer="snubridge_delays.keras_layer:SNUDenseDelayed",
    to_spec="snubridge_delays.keras_layer:layer_to_spec",
    from_spec="snubridge_delays.keras_layer:layer_from_spec",
)

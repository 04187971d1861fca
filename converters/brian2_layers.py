"""Built-in Brian2 converters of the SNU layer kinds.

Each converter turns one :class:`~snubridge.spec.LayerSpec` into a plan of
plain parameters (weights as ``(pre, post, weight)`` synapse lists within one
sample, thresholds and biases per neuron, decay) and builds it with
:mod:`snubridge.converters.brian2_core`, which also fixes the schedule.

- ``snu_dense``, ``snu_recurrent``, ``snu_conv2d`` with ``output="step"``:
  leaky integrate-and-fire groups with reset to zero; convolutions become
  explicit synapses (Keras cross-correlation, ``"same"`` padding as in
  TensorFlow).
- ``readout``: a non-spiking group that records ``I + b`` or the leaky
  integral every step.
- ``flatten``: relabelling only, since neurons are already numbered in C order
  of ``(height, width, channel)``.
- sSNU layers (``output="sigmoid"``) and lateral inhibition raise
  :class:`~snubridge.errors.ConversionError`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from snubridge.converters import brian2_core as core
from snubridge.converters.registry import REGISTRY, ConverterRegistry, LayerConverter
from snubridge.errors import ConversionError
from snubridge.spec import LayerSpec, conv_output_hw

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Port:
    """Output of a converted layer, as the next layer reads it.

    Attributes:
        group: Brian2 group whose spikes drive the next layer (the input
            ``SpikeGeneratorGroup`` or a spiking ``NeuronGroup``), or ``None``
            after a readout.
        shape: Per-sample output shape.
    """

    group: Any
    shape: tuple[int, ...]

    @property
    def units(self) -> int:
        """Neurons per sample."""
        return int(np.prod(self.shape))


@dataclasses.dataclass
class BuildContext:
    """Inputs a converter uses to add its layer to the network.

    Attributes:
        n_samples: Independent copies of the network in one run.
        dt: Time step in seconds.
        clock: Brian2 clock shared by all objects.
        order: Counter of ``order`` values in the slot ``groups``; take values
            in the order the objects must run within a step.
        source: Output of the previous layer.
        record_states: Whether spiking layers record their membrane.
    """

    n_samples: int
    dt: float
    clock: Any
    order: core.OrderCounter
    source: Port
    record_states: bool


@dataclasses.dataclass
class ConvertedLayer:
    """Brian2 objects of one layer.

    Attributes:
        name: Layer name from the spec (never used inside Brian2).
        kind: Layer kind.
        index: Position in the spec; Brian2 objects are named ``layer_<index>``.
        output: Port the next layer reads.
        objects: Brian2 objects to add to the ``Network``.
        plan: Plain parameters the layer was built from (exported by
            :func:`~snubridge.converters.brian2_script.export_script`).
        spike_monitor: ``SpikeMonitor`` of a spiking layer.
        state_monitor: ``StateMonitor`` of ``v`` (spiking) or ``u`` (readout).
        state_variable: Name of the recorded variable.
    """

    name: str
    kind: str
    index: int
    output: Port
    objects: list[Any]
    plan: dict[str, Any]
    spike_monitor: Any = None
    state_monitor: Any = None
    state_variable: str | None = None

    @property
    def is_spiking(self) -> bool:
        """True when the layer emits spikes."""
        return self.spike_monitor is not None


def _check_float_decay(layer: LayerSpec) -> float | None:
    if layer.decay_mode == "direct":
        return None
    tau = float(layer.tau)
    if not math.isfinite(tau) or tau <= 0:
        raise ConversionError(
            f"Layer {layer.name!r}: tau={tau!r} s cannot be given to Brian2's "
            f"{layer.decay_mode} integrator; store decay_mode='direct' with the decay."
        )
    return tau


def snu_plan(layer: LayerSpec) -> dict[str, Any]:
    """Return the plain Brian2 parameters of a spiking SNU layer.

    Raises:
        ConversionError: sSNU output or lateral inhibition, which have no
            exact leaky integrate-and-fire equivalent here.
    """
    if layer.output != "step":
        raise ConversionError(
            f"Layer {layer.name!r} is an sSNU (output='sigmoid'): its output is the "
            "analog value sigmoid(s - theta) and its reset scales the state by "
            "1 - y, which no integrate-and-fire neuron with a spike threshold "
            "reproduces. Retrain the layer with output='step' to export it to "
            "Brian2, or simulate it with snubridge.reference.simulate."
        )
    if layer.lateral_inhibition:
        raise ConversionError(
            f"Layer {layer.name!r} uses lateral inhibition (only the neurons with "
            "the largest margin of a sample fire, and all of that sample's neurons "
            "reset), which needs a maximum over the layer within the step; the "
            "Brian2 export does not build it. Retrain without lateral_inhibition, "
            "or simulate with snubridge.reference.simulate."
        )
    units = layer.units
    if layer.kind == "snu_conv2d":
        feedforward = core.conv_connectivity(
            layer.kernel, layer.input_shape, layer.strides, layer.padding
        )
        out_h, out_w = conv_output_hw(
            layer.input_shape[0],
            layer.input_shape[1],
            layer.kernel.shape[:2],
            layer.strides,
            layer.padding,
        )
        per_unit = out_h * out_w
    else:
        feedforward = core.dense_connectivity(layer.kernel)
        per_unit = 1
    bias = np.zeros(layer.kernel.shape[-1]) if layer.bias is None else layer.bias
    recurrent = None
    if layer.kind == "snu_recurrent":
        recurrent = core.dense_connectivity(layer.recurrent_kernel)
    return {
        "kind": "snu",
        "name": layer.name,
        "units": units,
        "decay_mode": layer.decay_mode,
        "decay": float(layer.decay),
        "tau": _check_float_decay(layer),
        "relu": layer.activation == "relu",
        "threshold": np.tile(np.asarray(layer.threshold, np.float64), per_unit),
        "bias": np.tile(np.asarray(bias, np.float64), per_unit),
        "ff": feedforward,
        "rec": recurrent,
        "shape": list(layer.output_shape),
    }


def readout_plan(layer: LayerSpec) -> dict[str, Any]:
    """Return the plain Brian2 parameters of a readout layer."""
    bias = np.zeros(layer.units) if layer.bias is None else layer.bias
    leaky = layer.readout_mode in ("leaky", "leaky_last")
    return {
        "kind": "readout",
        "name": layer.name,
        "units": layer.units,
        "mode": layer.readout_mode,
        "activation": layer.readout_activation,
        "decay_mode": layer.decay_mode,
        "decay": float(layer.decay),
        "tau": _check_float_decay(layer) if leaky else None,
        "bias": np.asarray(bias, np.float64),
        "ff": core.dense_connectivity(layer.kernel),
        "rec": None,
        "shape": list(layer.output_shape),
    }


def _require_spiking_source(layer: LayerSpec, context: BuildContext) -> None:
    if context.source.group is None:
        raise ConversionError(
            f"Layer {layer.name!r} follows a non-spiking layer; only the last layer "
            "may be a readout."
        )
    if context.source.units != int(np.prod(layer.input_shape)):
        raise ConversionError(
            f"Layer {layer.name!r} expects {int(np.prod(layer.input_shape))} inputs "
            f"per sample but the layer before it has {context.source.units}."
        )


class SNUConverter(LayerConverter):
    """Spiking SNU layer (dense, recurrent or convolutional) to a LIF group."""

    def convert(
        self, layer: LayerSpec, index: int, context: BuildContext
    ) -> ConvertedLayer:
        """Build the group, its synapses and monitors; see :func:`snu_plan`."""
        _require_spiking_source(layer, context)
        plan = snu_plan(layer)
        built = core.build_snu_layer(
            index,
            plan,
            context.source.group,
            context.source.units,
            context.n_samples,
            context.clock,
            context.order,
            context.record_states,
        )
        return ConvertedLayer(
            name=layer.name,
            kind=layer.kind,
            index=index,
            output=Port(built["group"], tuple(layer.output_shape)),
            objects=built["objects"],
            plan=plan,
            spike_monitor=built["spikes"],
            state_monitor=built["states"],
            state_variable="v",
        )


class ReadoutConverter(LayerConverter):
    """Readout layer to a non-spiking integrator group."""

    def convert(
        self, layer: LayerSpec, index: int, context: BuildContext
    ) -> ConvertedLayer:
        """Build the readout group, its synapses and its ``StateMonitor``."""
        _require_spiking_source(layer, context)
        plan = readout_plan(layer)
        built = core.build_readout_layer(
            index,
            plan,
            context.source.group,
            context.source.units,
            context.n_samples,
            context.clock,
            context.order,
        )
        return ConvertedLayer(
            name=layer.name,
            kind=layer.kind,
            index=index,
            output=Port(None, tuple(layer.output_shape)),
            objects=built["objects"],
            plan=plan,
            state_monitor=built["states"],
            state_variable="u",
        )


class FlattenConverter(LayerConverter):
    """Flatten: the same neurons under a flat shape, no Brian2 object."""

    def convert(
        self, layer: LayerSpec, index: int, context: BuildContext
    ) -> ConvertedLayer:
        """Return the source port relabelled to the flat shape."""
        shape = (int(np.prod(layer.input_shape)),)
        return ConvertedLayer(
            name=layer.name,
            kind=layer.kind,
            index=index,
            output=Port(context.source.group, shape),
            objects=[],
            plan={"kind": "flatten", "name": layer.name, "shape": list(shape)},
        )


def register_builtins(registry: ConverterRegistry) -> None:
    """Register the converters of this module for every kind of ``LAYER_KINDS``."""
    for kind in ("snu_dense", "snu_recurrent", "snu_conv2d"):
        registry.register_builtin(kind, SNUConverter)
    registry.register_builtin("readout", ReadoutConverter)
    registry.register_builtin("flatten", FlattenConverter)


register_builtins(REGISTRY)

"""Brian2 converter of ``snu_dense_delayed``: an SNU group with synaptic delays.

The layer is built exactly like a ``snu_dense`` layer by
:func:`snubridge.converters.brian2_core.build_snu_layer`, and then every
feed-forward synapse gets the delay ``d * dt``.

Why the raster matches the reference exactly: in the schedule of
:mod:`snubridge.converters.brian2_core` every object runs in the slot
``groups``, and the feed-forward pathway of a layer runs after the threshold of
the layer before it and before its own integration. A Brian2
``SynapticPathway`` first pushes the spikes of the current step into its spike
queue, then delivers the entries that are due and advances the queue by one
step. Brian2 2.9 rounds a delay to ``round(delay / dt)`` steps, so with delay
``d * dt`` a spike of step ``t`` is pushed at step ``t`` and delivered at step
``t + d``, into ``I`` before the integration ``v = g(I + b + l * v)`` of that
step: ``a_{t+d}`` receives ``W x_t``, which is ``a_t = W x_{t-d}``. With
``d = 0`` the pathway delivers in the same step, as for ``snu_dense``.

A spike queue keeps its pending spikes from one ``Network.run`` to the next.
:class:`snubridge.converters.brian2_export.Brian2Network` reruns one network
on new samples and clears only the neuron variables. Without more, the spikes
of the last ``d`` steps of one batch would arrive in the next, so a
:class:`_QueueReset` object empties the queue before each run.
"""

from __future__ import annotations

import logging
from typing import Any

import brian2 as b2
import numpy as np

from snubridge.converters import brian2_core as core
from snubridge.converters.brian2_layers import (
    BuildContext,
    ConvertedLayer,
    Port,
    snu_plan,
)
from snubridge.converters.registry import LayerConverter
from snubridge.errors import ConversionError
from snubridge.spec import LayerSpec
from snubridge_delays.kind import delay_steps

logger = logging.getLogger(__name__)


class _QueueReset(b2.BrianObject):
    """Empty the spike queue of one synaptic pathway before every run.

    It sits in the slot ``start``, so Brian2 calls its ``before_run`` before
    that of the pathway, which prepares the queue for the run. It runs no code
    during the time steps.
    """

    add_to_magic_network = False

    def __init__(self, pathway: Any, name: str) -> None:
        super().__init__(when="start", name=name)
        self.pathway = pathway

    def before_run(self, run_namespace: Any) -> None:
        queue = getattr(self.pathway, "queue", None)
        # NOTE: _restore_from_full_state(None) is private API of Brian2 2.9.
        # Network.restore empties queues through it (Python and Cython queues).
        if queue is not None:
            queue._restore_from_full_state(None)
        super().before_run(run_namespace)


class DelayedSNUConverter(LayerConverter):
    """``snu_dense_delayed`` layer to a LIF group whose input synapses are delayed."""

    def convert(
        self, layer: LayerSpec, index: int, context: BuildContext
    ) -> ConvertedLayer:
        """Build the group, its delayed synapses and monitors.

        Raises:
            ConversionError: the layer follows a non-spiking layer, its input
                size differs from the source, or it is an sSNU or uses lateral
                inhibition (see :func:`snubridge.converters.brian2_layers.snu_plan`).
        """
        if context.source.group is None:
            raise ConversionError(
                f"Layer {layer.name!r} follows a non-spiking layer; only the last "
                "layer may be a readout."
            )
        n_inputs = int(np.prod(layer.input_shape))
        if context.source.units != n_inputs:
            raise ConversionError(
                f"Layer {layer.name!r} expects {n_inputs} inputs per sample but the "
                f"layer before it has {context.source.units}."
            )
        delay = delay_steps(layer)
        plan = snu_plan(layer)
        # A plan kind of its own, so no plan reader mistakes it for an
        # undelayed "snu" layer.
        plan.update(kind="snu_delayed", delay_steps=delay)
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
        objects = list(built["objects"])
        if delay:
            feedforward = built["feedforward"]
            feedforward.delay = delay * float(context.dt) * b2.second
            objects.append(
                _QueueReset(feedforward.pre, name=f"layer_{int(index)}_queue_reset")
            )
        logger.debug("Layer %r: feed-forward delay %d steps", layer.name, delay)
        return ConvertedLayer(
            name=layer.name,
            kind=layer.kind,
            index=index,
            output=Port(built["group"], tuple(layer.output_shape)),
            objects=objects,
            plan=plan,
            spike_monitor=built["spikes"],
            state_monitor=built["states"],
            state_variable="v",
        )

"""A dense SNU layer with delayed input synapses, added to snubridge from outside.

The layer kind ``snu_dense_delayed`` computes, per sample and time step ``t``::

    a_t = W x_{t-d} + b                  (x_{t-d} = 0 for t < d)
    s_t = g(a_t + l * s_{t-1} * (1 - y_{t-1}))
    y_t = h(s_t - theta)

with ``d`` the integer ``delay`` in time steps, stored as
``LayerSpec.params["delay"]``; everything else is the ``snu_dense`` layer of
:mod:`snubridge.spec`. The package provides every piece one layer kind needs:

- :mod:`snubridge_delays.kind`: the :class:`snubridge.spec.LayerKind` (shape,
  validation, numpy reference simulation), found through the entry-point group
  ``snubridge.layer_kinds``;
- :mod:`snubridge_delays.keras_layer`: the Keras layer
  :class:`~snubridge_delays.keras_layer.SNUDenseDelayed`;
- :mod:`snubridge_delays.brian2_converter`: the Brian2 converter, found
  through the entry-point group ``snubridge.converters``.

Importing this package imports neither TensorFlow nor Brian2.
"""

from snubridge_delays.kind import KIND, LAYER_KIND, delay_steps

__all__ = ["KIND", "LAYER_KIND", "delay_steps"]
__version__ = "0.1.0"

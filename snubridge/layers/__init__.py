"""Keras layers of spiking neural units, registered for ``.keras`` saving.

Importing this package registers every layer with Keras under the package name
``snubridge``, so ``keras.saving.load_model`` needs no custom objects.
"""

from snubridge.layers.pseudo import PSEUDO_DERIVATIVES, spike
from snubridge.layers.readout import SNUReadout, SpikeFlatten
from snubridge.layers.snu import (
    SNUCell,
    SNUConv2D,
    SNUDense,
    SNURecurrent,
    SSNUConv2D,
    SSNUDense,
    SSNURecurrent,
)

__all__ = [
    "PSEUDO_DERIVATIVES",
    "SNUCell",
    "SNUConv2D",
    "SNUDense",
    "SNURecurrent",
    "SNUReadout",
    "SSNUConv2D",
    "SSNUDense",
    "SSNURecurrent",
    "SpikeFlatten",
    "spike",
]

"""snubridge: spiking neural units from Keras to Brian2 and PCM crossbars.

Heavy back ends (TensorFlow, Brian2) are imported only by the modules that use
them, so ``import snubridge`` stays fast.
"""

from __future__ import annotations

from snubridge.errors import (
    ConversionError,
    DataError,
    DeviceError,
    EquivalenceError,
    ParameterFileError,
    SnubridgeError,
    SpecError,
)
from snubridge.params_file import load_params, save_params
from snubridge.spec import LayerSpec, NetworkSpec

__version__ = "0.1.0"

__all__ = [
    "ConversionError",
    "DataError",
    "DeviceError",
    "EquivalenceError",
    "LayerSpec",
    "NetworkSpec",
    "ParameterFileError",
    "SnubridgeError",
    "SpecError",
    "__version__",
    "load_params",
    "save_params",
]

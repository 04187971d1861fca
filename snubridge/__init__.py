"""snubridge: spiking neural units from Keras to Brian2 and PCM crossbars.

Heavy back ends (TensorFlow, Brian2) are imported only by the modules that use
them, so ``import snubridge`` stays fast.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path


def _add_checkout_finder() -> None:
    """Map ``snubridge.converters`` and ``snubridge.validation`` in a checkout.

    Installed, the two packages sit inside ``snubridge/`` (setup.cfg maps the
    top-level ``converters/`` and ``validation/`` folders there). In a source
    checkout they sit beside it, and Python imports this checkout's
    ``snubridge`` whenever the checkout is the current folder, so a finder at
    the end of ``sys.meta_path`` resolves the two names to those folders.
    """
    here = Path(__file__).resolve().parent
    if (here / "converters").is_dir():
        return
    folders = {
        f"{__name__}.{name}": here.parent / name
        for name in ("converters", "validation")
        if (here.parent / name / "__init__.py").is_file()
    }
    if not folders:
        return

    class CheckoutFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            folder = folders.get(fullname)
            if folder is None:
                return None
            return importlib.util.spec_from_file_location(
                fullname,
                folder / "__init__.py",
                submodule_search_locations=[str(folder)],
            )

    sys.meta_path.append(CheckoutFinder())


_add_checkout_finder()

from snubridge.errors import (  # noqa: E402
    ConversionError,
    DataError,
    DeviceError,
    EquivalenceError,
    ParameterFileError,
    SnubridgeError,
    SpecError,
)
from snubridge.params_file import load_params, save_params  # noqa: E402
from snubridge.spec import LayerSpec, NetworkSpec  # noqa: E402

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

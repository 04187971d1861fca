"""Converters from a :class:`~snubridge.spec.NetworkSpec` to simulators.

- :mod:`snubridge.converters.registry`: layer kind to converter, with
  third-party converters from the entry-point group ``snubridge.converters``.
- :mod:`snubridge.converters.brian2_export`: :func:`to_brian2` and
  :func:`run_brian2`, a step-exact Brian2 network.
- :mod:`snubridge.converters.brian2_script`: :func:`export_script`, a
  self-contained Brian2 script and its parameter file.

The Brian2 modules are imported on first use, so importing this package does
not import Brian2.
"""

from __future__ import annotations

import importlib
from typing import Any

from snubridge.converters.registry import (
    LayerConverter,
    get_converter,
    register,
    registered_kinds,
)

_LAZY = {
    "to_brian2": "snubridge.converters.brian2_export",
    "run_brian2": "snubridge.converters.brian2_export",
    "export_script": "snubridge.converters.brian2_script",
}

__all__ = [
    "LayerConverter",
    "export_script",
    "get_converter",
    "register",
    "registered_kinds",
    "run_brian2",
    "to_brian2",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

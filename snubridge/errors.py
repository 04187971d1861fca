"""Exception hierarchy: one base class and one subclass per area.

Callers catch :class:`SnubridgeError` for anything the toolkit raises on bad
input, or the subclass for the area they handle. Every subclass also derives
from :class:`ValueError` so code written against plain Python conventions still
catches bad values.
"""

from __future__ import annotations


class SnubridgeError(ValueError):
    """Base class of every error that snubridge raises on invalid input."""


class SpecError(SnubridgeError):
    """Invalid network description: shapes, parameters, layer types."""


class ParameterFileError(SnubridgeError):
    """Invalid, truncated, foreign or future-versioned parameter file."""


class DataError(SnubridgeError):
    """Invalid data set file or spike data."""


class ConversionError(SnubridgeError):
    """A layer or network that a converter cannot translate."""


class EquivalenceError(SnubridgeError):
    """Invalid validation suite, or a failed equivalence assertion."""


class DeviceError(SnubridgeError):
    """Invalid device, crossbar or deployment configuration."""

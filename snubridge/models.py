"""Ready-made networks: the architectures of the benchmarks and examples.

* :func:`dense_snu`: rate-coded MNIST, 784-256-256-10 by default (Wozniak et
  al. 2020 report 98.5 % on full MNIST for a dense SNU network).
* :func:`conv_snu`: a spiking CNN for MNIST (99.5 % in the same paper, with a
  larger network than this CPU-sized default).
* :func:`dense_snu_cells`: the dense network built from per-step cells in
  ``keras.layers.RNN``, for comparing the two implementations.
* :func:`lstm_baseline`: Keras LSTM layers of the same widths and the same
  readout, trained the same way.
* :func:`jsb_ssnu`: the 88-150-88 soft-SNU network of the paper's PCM hardware
  experiment on JSB Chorales.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from snubridge.errors import SpecError
from snubridge.layers import (
    SNUCell,
    SNUConv2D,
    SNUDense,
    SNUReadout,
    SpikeFlatten,
    SSNUDense,
)


def _widths(hidden: Sequence[int]) -> list[int]:
    widths = [int(n) for n in hidden]
    if not widths or min(widths) < 1:
        raise SpecError(
            f"hidden widths must be positive integers, received {hidden!r}."
        )
    return widths


def dense_snu(
    n_inputs: int = 784,
    hidden: Sequence[int] = (256, 256),
    n_outputs: int = 10,
    *,
    n_steps: int | None = None,
    decay: float = 0.9,
    dtype: str = "float32",
    name: str = "dense_snu",
    **neuron: Any,
) -> keras.Model:
    """Build dense step-SNU layers with a mean-rate softmax readout.

    The defaults (decay 0.9, rectangle pseudo-derivative) gave the best
    held-out accuracy among the settings tried on MNIST (see BENCHMARKS.md).
    """
    neuron.setdefault("pseudo_derivative", "rectangle")
    inputs = keras.Input((n_steps, n_inputs), dtype=dtype)
    values = inputs
    for index, width in enumerate(_widths(hidden)):
        values = SNUDense(
            width, decay=decay, name=f"snu_{index}", dtype=dtype, **neuron
        )(values)
    outputs = SNUReadout(
        n_outputs, mode="mean", activation="softmax", name="readout", dtype=dtype
    )(values)
    return keras.Model(inputs, outputs, name=name)


def dense_snu_cells(
    n_inputs: int = 784,
    hidden: Sequence[int] = (256, 256),
    n_outputs: int = 10,
    *,
    n_steps: int | None = None,
    decay: float = 0.8,
    dtype: str = "float32",
    name: str = "dense_snu_cells",
    **neuron: Any,
) -> keras.Model:
    """Build :func:`dense_snu` from :class:`SNUCell` inside ``keras.layers.RNN``."""
    inputs = keras.Input((n_steps, n_inputs), dtype=dtype)
    values = inputs
    for index, width in enumerate(_widths(hidden)):
        cell = SNUCell(width, decay=decay, dtype=dtype, **neuron)
        values = keras.layers.RNN(
            cell, return_sequences=True, name=f"snu_{index}", dtype=dtype
        )(values)
    outputs = SNUReadout(
        n_outputs, mode="mean", activation="softmax", name="readout", dtype=dtype
    )(values)
    return keras.Model(inputs, outputs, name=name)


def lstm_baseline(
    n_inputs: int = 784,
    hidden: Sequence[int] = (256, 256),
    n_outputs: int = 10,
    *,
    n_steps: int | None = None,
    dtype: str = "float32",
    name: str = "lstm",
) -> keras.Model:
    """Build Keras LSTM layers of the given widths with the same mean-rate readout."""
    inputs = keras.Input((n_steps, n_inputs), dtype=dtype)
    values = inputs
    for index, width in enumerate(_widths(hidden)):
        values = keras.layers.LSTM(width, return_sequences=True, name=f"lstm_{index}")(
            values
        )
    outputs = SNUReadout(
        n_outputs, mode="mean", activation="softmax", name="readout", dtype=dtype
    )(values)
    return keras.Model(inputs, outputs, name=name)


def conv_snu(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    filters: Sequence[int] = (16, 32),
    dense_units: int = 128,
    n_outputs: int = 10,
    *,
    n_steps: int | None = None,
    decay: float = 0.8,
    dtype: str = "float32",
    name: str = "conv_snu",
    **neuron: Any,
) -> keras.Model:
    """Build a spiking CNN: 5x5 SNU convolutions with stride 2, dense SNU, readout."""
    inputs = keras.Input((n_steps, *input_shape), dtype=dtype)
    values = inputs
    for index, count in enumerate(_widths(filters)):
        values = SNUConv2D(
            count,
            5,
            strides=2,
            padding="same",
            decay=decay,
            name=f"conv_{index}",
            dtype=dtype,
            **neuron,
        )(values)
    values = SpikeFlatten(name="flatten", dtype=dtype)(values)
    values = SNUDense(
        dense_units, decay=decay, name="snu_dense", dtype=dtype, **neuron
    )(values)
    outputs = SNUReadout(
        n_outputs, mode="mean", activation="softmax", name="readout", dtype=dtype
    )(values)
    return keras.Model(inputs, outputs, name=name)


def jsb_ssnu(
    n_keys: int = 88,
    hidden: int = 150,
    *,
    n_steps: int | None = None,
    decay: float = 0.8,
    dtype: str = "float32",
    name: str = "jsb_ssnu",
) -> keras.Model:
    """Build the 88-150-88 sSNU network; its 88 sigmoid outputs are note probabilities.

    Both layers are soft SNUs with a trainable bias; the output at step ``t``
    predicts the piano roll at step ``t + 1``. The output layer uses the
    identity input activation: under ReLU its membrane could not go below 0,
    so no note probability could fall below ``sigmoid(-theta)``.
    """
    inputs = keras.Input((n_steps, n_keys), dtype=dtype)
    values = SSNUDense(
        hidden, decay=decay, use_bias=True, name="ssnu_hidden", dtype=dtype
    )(inputs)
    outputs = SSNUDense(
        n_keys,
        decay=decay,
        use_bias=True,
        activation="identity",
        name="ssnu_output",
        dtype=dtype,
    )(values)
    return keras.Model(inputs, outputs, name=name)

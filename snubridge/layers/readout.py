"""Non-spiking readout and shape layers for SNU networks."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from snubridge.errors import SpecError
from snubridge.spec import READOUT_ACTIVATIONS, READOUT_MODES, check_decay

PACKAGE = "snubridge"


@keras.saving.register_keras_serializable(package=PACKAGE)
class SNUReadout(keras.layers.Layer):
    """Non-spiking readout ``z_t = W x_t + b`` over a spike sequence.

    Modes (input ``(batch, steps, features)``):

    ``"mean"``
        ``z = (1/T) sum_t (W x_t + b)``, output ``(batch, units)``; this is ``W``
        applied to the mean spike rate, the summed current of the inputs.
    ``"per_step"``
        ``z_t`` at every step, output ``(batch, steps, units)``.
    ``"leaky"``
        Leaky integrator ``u_t = l u_{t-1} + W x_t + b`` at every step.
    ``"leaky_last"``
        Its final value ``u_T``, output ``(batch, units)``.

    The activation (``"linear"``, ``"softmax"`` or ``"sigmoid"``) is applied to
    ``z`` or ``u``.

    Args:
        units: Number of outputs.
        mode: One of the modes above.
        activation: Output activation.
        decay: Leak ``l`` in (0, 1] of the leaky modes (1 integrates without leak).
        use_bias: Add the bias ``b``.
        kernel_initializer: Initializer of ``W``.
    """

    def __init__(
        self,
        units: int,
        mode: str = "mean",
        activation: str = "softmax",
        decay: float = 1.0,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(units, int) or units < 1:
            raise SpecError(f"units must be a positive integer, received {units!r}.")
        if mode not in READOUT_MODES:
            raise SpecError(f"mode={mode!r}; expected one of {READOUT_MODES}.")
        if activation not in READOUT_ACTIVATIONS:
            raise SpecError(
                f"activation={activation!r}; expected one of {READOUT_ACTIVATIONS}."
            )
        check_decay(decay, f"SNUReadout {self.name!r}")
        self.units = units
        self.mode = mode
        self.activation = activation
        self.decay = float(decay)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise SpecError(
                f"SNUReadout {self.name!r} expects input (batch, steps, features), "
                f"received shape {tuple(input_shape)}."
            )
        self.kernel = self.add_weight(
            shape=(int(input_shape[-1]), self.units),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.bias = (
            self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
            if self.use_bias
            else None
        )

    def call(self, inputs: tf.Tensor, return_states: bool = False):
        inputs = tf.cast(inputs, self.compute_dtype)
        current = tf.tensordot(inputs, self.kernel, axes=[[2], [0]])
        if self.bias is not None:
            current = current + self.bias
        if self.mode == "mean":
            value = tf.reduce_mean(current, axis=1)
        elif self.mode in ("leaky", "leaky_last"):
            value = _leaky_integrate(current, self.decay)
            if self.mode == "leaky_last":
                value = value[:, -1]
        else:
            value = current
        if self.activation == "softmax":
            output = tf.nn.softmax(value, axis=-1)
        elif self.activation == "sigmoid":
            output = tf.sigmoid(value)
        else:
            output = value
        return (output, value) if return_states else output

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        if self.mode in ("mean", "leaky_last"):
            return (input_shape[0], self.units)
        return (input_shape[0], input_shape[1], self.units)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            units=self.units,
            mode=self.mode,
            activation=self.activation,
            decay=self.decay,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


def _leaky_integrate(current: tf.Tensor, decay: float) -> tf.Tensor:
    leak = tf.constant(decay, dtype=current.dtype)
    steps = current.shape[1]
    if steps is not None:
        value = tf.zeros_like(current[:, 0])
        values = []
        for frame in tf.unstack(current, axis=1):
            value = leak * value + frame
            values.append(value)
        return tf.stack(values, axis=1)
    time_major = tf.transpose(current, [1, 0, 2])
    values = tf.scan(lambda u, c: leak * u + c, time_major)
    return tf.transpose(values, [1, 0, 2])


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpikeFlatten(keras.layers.Layer):
    """Flatten each step: ``(batch, steps, h, w, c)`` to ``(batch, steps, h*w*c)``.

    The order is Keras's row-major ``(h, w, c)``.
    """

    def call(self, inputs: tf.Tensor, return_states: bool = False):
        shape = tf.shape(inputs)
        size = 1
        for dim in inputs.shape[2:]:
            size *= int(dim)
        output = tf.reshape(inputs, tf.stack([shape[0], shape[1], size]))
        return (output, None) if return_states else output

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        size = 1
        for dim in input_shape[2:]:
            size *= int(dim)
        return (input_shape[0], input_shape[1], size)

"""Keras layers of spiking neural units (SNU) and soft SNUs (sSNU).

Two implementations of the same dynamics (stated in :mod:`snubridge.spec`):

* Sequence layers (:class:`SNUDense`, :class:`SNURecurrent`,
  :class:`SNUConv2D`) take ``(batch, steps, ...)`` inputs, compute the input
  projection ``W x_t`` of all steps in one matrix product (or one convolution)
  and run only the state recursion step by step. This is the fast path for
  training.
* Per-step cells (:class:`SNUCell`) for ``keras.layers.RNN``, for streaming and
  stateful use.

Both call :func:`snubridge.layers.dynamics.snu_step`. The sSNU variants
(:class:`SSNUDense`, :class:`SSNURecurrent`, :class:`SSNUConv2D`) only change
the default output to the sigmoid.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from snubridge.errors import SpecError
from snubridge.layers.dynamics import (
    SNUSettings,
    resolve_settings,
    settings_config,
    snu_step,
)

PACKAGE = "snubridge"
# Above this many steps the recursion runs in a tf.while_loop instead of being
# unrolled into the graph.
MAX_UNROLLED_STEPS = 1000


class _SNUSettingsMixin:
    """Stores the neuron settings and the weights every SNU layer shares."""

    def _init_settings(
        self,
        decay: float | None,
        tau: float | None,
        dt: float | None,
        decay_mode: str | None,
        activation: str,
        output: str,
        pseudo_derivative: str,
        pseudo_derivative_slope: float,
        lateral_inhibition: bool,
        use_bias: bool,
        kernel_initializer: Any,
        threshold_initializer: Any,
        trainable_threshold: bool,
    ) -> None:
        self.settings: SNUSettings = resolve_settings(
            decay=decay,
            tau=tau,
            dt=dt,
            decay_mode=decay_mode,
            activation=activation,
            output=output,
            pseudo_derivative=pseudo_derivative,
            pseudo_derivative_slope=pseudo_derivative_slope,
            lateral_inhibition=lateral_inhibition,
        )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.threshold_initializer = keras.initializers.get(threshold_initializer)
        self.trainable_threshold = bool(trainable_threshold)

    def _settings_config(self) -> dict[str, Any]:
        config = settings_config(self.settings)
        config.update(
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            threshold_initializer=keras.initializers.serialize(
                self.threshold_initializer
            ),
            trainable_threshold=self.trainable_threshold,
        )
        return config

    def _add_threshold_and_bias(self, size: int) -> None:
        self.threshold = self.add_weight(
            shape=(size,),
            initializer=self.threshold_initializer,
            trainable=self.trainable_threshold,
            name="threshold",
        )
        self.bias = (
            self.add_weight(shape=(size,), initializer="zeros", name="bias")
            if self.use_bias
            else None
        )


def _check_units(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"{field} must be a positive integer, received {value!r}.")
    return value


def _time_step_count(values: tf.Tensor) -> int | None:
    steps = values.shape[1]
    return int(steps) if steps is not None else None


def run_recursion(
    currents: tf.Tensor,
    threshold: tf.Tensor,
    settings: SNUSettings,
    recurrent_kernel: tf.Variable | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Run the SNU recursion over axis 1 of ``currents``; return (outputs, states).

    ``currents`` holds ``W x_t (+ b)`` for all steps, ``(batch, steps, ...)``.
    With a ``recurrent_kernel`` ``H`` (``(units, units)``) the term
    ``H y_{t-1}`` is added inside the loop.
    """
    zeros = tf.zeros_like(currents[:, 0])
    steps = _time_step_count(currents)

    def advance(current, state, output):
        if recurrent_kernel is not None:
            current = current + tf.matmul(output, recurrent_kernel)
        return snu_step(current, state, output, threshold, settings)

    if steps is not None and steps <= MAX_UNROLLED_STEPS:
        state, output = zeros, zeros
        outputs, states = [], []
        for current in tf.unstack(currents, axis=1):
            state, output = advance(current, state, output)
            outputs.append(output)
            states.append(state)
        return tf.stack(outputs, axis=1), tf.stack(states, axis=1)

    time_major = tf.transpose(currents, [1, 0] + list(range(2, currents.shape.rank)))

    def scan_step(carry, current):
        state, output = advance(current, carry[0], carry[1])
        return state, output

    states, outputs = tf.scan(scan_step, time_major, initializer=(zeros, zeros))
    order = [1, 0] + list(range(2, currents.shape.rank))
    return tf.transpose(outputs, order), tf.transpose(states, order)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SNUDense(_SNUSettingsMixin, keras.layers.Layer):
    """Fully connected SNU layer over a sequence (fast sequence implementation).

    Input ``(batch, steps, features)``, output ``(batch, steps, units)``: spikes
    (0 or 1) for ``output="step"``, sigmoid values for ``output="sigmoid"``.

    Args:
        units: Number of neurons.
        decay: Membrane decay per step ``l`` in (0, 1]. Give this, or ``tau``.
        tau: Membrane time constant in seconds; needs ``dt`` and ``decay_mode``.
        dt: Time step in seconds.
        decay_mode: ``"exact"`` (``l = exp(-dt/tau)``) or ``"euler"``
            (``l = 1 - dt/tau``) when ``tau`` is given.
        activation: Input activation ``g``: ``"relu"`` (default) or ``"identity"``.
        output: ``"step"`` (spiking SNU, default) or ``"sigmoid"`` (sSNU).
        pseudo_derivative: Backward pass of the step: ``"tanh"`` (default),
            ``"sigmoid"``, ``"rectangle"`` or ``"straight_through"``.
        pseudo_derivative_slope: Slope ``k`` of the pseudo-derivative.
        lateral_inhibition: Only the neuron with the largest margin above
            threshold fires, per sample, and a spike resets the whole layer of
            that sample.
        use_bias: Add a trainable bias ``b`` to the input current.
        kernel_initializer: Initializer of ``W``.
        threshold_initializer: Initializer of ``theta`` (default 1).
        trainable_threshold: Train ``theta`` (default True).
    """

    recurrent = False

    def __init__(
        self,
        units: int,
        decay: float | None = None,
        tau: float | None = None,
        dt: float | None = None,
        decay_mode: str | None = None,
        activation: str = "relu",
        output: str = "step",
        pseudo_derivative: str = "tanh",
        pseudo_derivative_slope: float = 1.0,
        lateral_inhibition: bool = False,
        use_bias: bool = False,
        kernel_initializer: Any = "glorot_uniform",
        threshold_initializer: Any = "ones",
        trainable_threshold: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.units = _check_units(units, "units")
        if decay is None and tau is None:
            decay = 0.8
        self._init_settings(
            decay,
            tau,
            dt,
            decay_mode,
            activation,
            output,
            pseudo_derivative,
            pseudo_derivative_slope,
            lateral_inhibition,
            use_bias,
            kernel_initializer,
            threshold_initializer,
            trainable_threshold,
        )

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise SpecError(
                f"{type(self).__name__} {self.name!r} expects input (batch, steps, "
                f"features), received shape {tuple(input_shape)}."
            )
        self.kernel = self.add_weight(
            shape=(int(input_shape[-1]), self.units),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.recurrent_kernel = (
            self.add_weight(
                shape=(self.units, self.units),
                initializer="orthogonal",
                name="recurrent_kernel",
            )
            if self.recurrent
            else None
        )
        self._add_threshold_and_bias(self.units)

    def input_current(self, inputs: tf.Tensor) -> tf.Tensor:
        """Return ``W x_t + b`` for every step: one product over all steps."""
        current = tf.tensordot(inputs, self.kernel, axes=[[2], [0]])
        if self.bias is not None:
            current = current + self.bias
        return current

    def call(self, inputs: tf.Tensor, return_states: bool = False):
        inputs = tf.cast(inputs, self.compute_dtype)
        outputs, states = run_recursion(
            self.input_current(inputs),
            self.threshold,
            self.settings,
            self.recurrent_kernel,
        )
        return (outputs, states) if return_states else outputs

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[1], self.units)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(units=self.units, **self._settings_config())
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SNURecurrent(SNUDense):
    """SNU layer with recurrent synapses ``H``: ``a_t = W x_t + H y_{t-1}``.

    ``recurrent_kernel`` has shape ``(units, units)``, rows indexed by the
    presynaptic neuron (Keras order). Arguments as for :class:`SNUDense`.
    """

    recurrent = True


@keras.saving.register_keras_serializable(package=PACKAGE)
class SNUConv2D(_SNUSettingsMixin, keras.layers.Layer):
    """Convolutional SNU layer: Conv2D synapses with SNU dynamics.

    Input ``(batch, steps, height, width, channels)``, output
    ``(batch, steps, out_height, out_width, filters)``. The convolution of all
    steps runs as one batched ``conv2d``; thresholds are per output channel.
    Other arguments as for :class:`SNUDense`.

    Args:
        filters: Number of output channels.
        kernel_size: ``(kh, kw)`` or an int.
        strides: ``(sh, sw)`` or an int.
        padding: ``"valid"`` or ``"same"`` (Keras rules).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = 1,
        padding: str = "valid",
        decay: float | None = None,
        tau: float | None = None,
        dt: float | None = None,
        decay_mode: str | None = None,
        activation: str = "relu",
        output: str = "step",
        pseudo_derivative: str = "tanh",
        pseudo_derivative_slope: float = 1.0,
        lateral_inhibition: bool = False,
        use_bias: bool = False,
        kernel_initializer: Any = "glorot_uniform",
        threshold_initializer: Any = "ones",
        trainable_threshold: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = _check_units(filters, "filters")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        if padding not in ("valid", "same"):
            raise SpecError(f"padding must be 'valid' or 'same', received {padding!r}.")
        self.padding = padding
        if decay is None and tau is None:
            decay = 0.8
        self._init_settings(
            decay,
            tau,
            dt,
            decay_mode,
            activation,
            output,
            pseudo_derivative,
            pseudo_derivative_slope,
            lateral_inhibition,
            use_bias,
            kernel_initializer,
            threshold_initializer,
            trainable_threshold,
        )

    def build(self, input_shape: tuple) -> None:
        if len(input_shape) != 5 or input_shape[-1] is None:
            raise SpecError(
                f"SNUConv2D {self.name!r} expects input (batch, steps, height, width, "
                f"channels), received shape {tuple(input_shape)}."
            )
        self.kernel = self.add_weight(
            shape=(*self.kernel_size, int(input_shape[-1]), self.filters),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self._add_threshold_and_bias(self.filters)

    def input_current(self, inputs: tf.Tensor) -> tf.Tensor:
        """Return the convolution of every step, ``(batch, steps, oh, ow, filters)``."""
        shape = tf.shape(inputs)
        frames = tf.reshape(inputs, tf.concat([[-1], shape[2:]], axis=0))
        current = tf.nn.conv2d(
            frames, self.kernel, strides=self.strides, padding=self.padding.upper()
        )
        if self.bias is not None:
            current = current + self.bias
        out_shape = tf.shape(current)
        return tf.reshape(current, tf.concat([shape[:2], out_shape[1:]], axis=0))

    def call(self, inputs: tf.Tensor, return_states: bool = False):
        inputs = tf.cast(inputs, self.compute_dtype)
        current = self.input_current(inputs)
        static = self.compute_output_shape(inputs.shape)
        current = tf.ensure_shape(current, (None, inputs.shape[1], *static[2:]))
        outputs, states = run_recursion(current, self.threshold, self.settings)
        return (outputs, states) if return_states else outputs

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        from snubridge.spec import conv_output_hw

        out_h, out_w = conv_output_hw(
            int(input_shape[2]),
            int(input_shape[3]),
            self.kernel_size,
            self.strides,
            self.padding,
        )
        return (input_shape[0], input_shape[1], out_h, out_w, self.filters)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=list(self.kernel_size),
            strides=list(self.strides),
            padding=self.padding,
            **self._settings_config(),
        )
        return config


def _pair(value: int | tuple[int, int] | list[int], field: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise SpecError(
            f"{field} must be a positive int or a pair, received {value!r}."
        )
    return pair


@keras.saving.register_keras_serializable(package=PACKAGE)
class SSNUDense(SNUDense):
    """Soft SNU (sSNU) dense layer: :class:`SNUDense` with ``output="sigmoid"``."""

    def __init__(self, units: int, output: str = "sigmoid", **kwargs: Any) -> None:
        super().__init__(units, output=output, **kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SSNURecurrent(SNURecurrent):
    """Soft SNU recurrent layer: :class:`SNURecurrent` with ``output="sigmoid"``."""

    def __init__(self, units: int, output: str = "sigmoid", **kwargs: Any) -> None:
        super().__init__(units, output=output, **kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SSNUConv2D(SNUConv2D):
    """Soft SNU convolution: :class:`SNUConv2D` with ``output="sigmoid"``."""

    def __init__(
        self, filters: int, kernel_size: Any, output: str = "sigmoid", **kwargs
    ):
        super().__init__(filters, kernel_size, output=output, **kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SNUCell(_SNUSettingsMixin, keras.layers.Layer):
    """Per-step SNU cell for ``keras.layers.RNN``: streaming and stateful use.

    The state is ``[s, y]`` (membrane and last output, each ``(batch, units)``).
    With ``recurrent=True`` the cell adds ``H y_{t-1}``. Weights are named and
    shaped as in :class:`SNUDense` / :class:`SNURecurrent`, so weights copy
    between the two one to one. Other arguments as for :class:`SNUDense`.
    """

    def __init__(
        self,
        units: int,
        recurrent: bool = False,
        decay: float | None = None,
        tau: float | None = None,
        dt: float | None = None,
        decay_mode: str | None = None,
        activation: str = "relu",
        output: str = "step",
        pseudo_derivative: str = "tanh",
        pseudo_derivative_slope: float = 1.0,
        lateral_inhibition: bool = False,
        use_bias: bool = False,
        kernel_initializer: Any = "glorot_uniform",
        threshold_initializer: Any = "ones",
        trainable_threshold: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.units = _check_units(units, "units")
        self.recurrent = bool(recurrent)
        if decay is None and tau is None:
            decay = 0.8
        self._init_settings(
            decay,
            tau,
            dt,
            decay_mode,
            activation,
            output,
            pseudo_derivative,
            pseudo_derivative_slope,
            lateral_inhibition,
            use_bias,
            kernel_initializer,
            threshold_initializer,
            trainable_threshold,
        )
        self.state_size = [self.units, self.units]
        self.output_size = self.units

    def build(self, input_shape: tuple) -> None:
        self.kernel = self.add_weight(
            shape=(int(input_shape[-1]), self.units),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.recurrent_kernel = (
            self.add_weight(
                shape=(self.units, self.units),
                initializer="orthogonal",
                name="recurrent_kernel",
            )
            if self.recurrent
            else None
        )
        self._add_threshold_and_bias(self.units)

    def call(self, inputs: tf.Tensor, states: list[tf.Tensor], training: bool = False):
        state, output = states[0], states[1]
        current = tf.matmul(tf.cast(inputs, self.compute_dtype), self.kernel)
        if self.bias is not None:
            current = current + self.bias
        if self.recurrent_kernel is not None:
            current = current + tf.matmul(output, self.recurrent_kernel)
        state, output = snu_step(current, state, output, self.threshold, self.settings)
        return output, [state, output]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            units=self.units, recurrent=self.recurrent, **self._settings_config()
        )
        return config

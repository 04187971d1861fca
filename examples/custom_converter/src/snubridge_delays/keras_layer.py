"""Keras layer of the ``snu_dense_delayed`` kind, registered for ``.keras`` files.

Importing this module registers :class:`SNUDenseDelayed` with Keras under the
package name ``snubridge_delays``, so a saved model loads with
``safe_mode=True`` and no custom-object dict once the module is imported
(:func:`snubridge.keras_io.load_model` imports it through the kind's entry
point).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from snubridge import keras_io
from snubridge.errors import SpecError
from snubridge.layers import SNUDense
from snubridge.spec import LayerSpec
from snubridge_delays.kind import KIND, delay_steps

PACKAGE = "snubridge_delays"


def _check_delay(delay: Any) -> int:
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise SpecError(
            f"delay must be an integer number of time steps >= 0, received {delay!r}."
        )
    return delay


@keras.saving.register_keras_serializable(package=PACKAGE)
class SNUDenseDelayed(SNUDense):
    """Dense SNU layer whose input synapses all have a delay of ``delay`` steps.

    Computes ``a_t = W x_{t-delay} + b`` (no input for ``t < delay``) and then
    the SNU recursion of :class:`snubridge.layers.SNUDense`, whose other
    arguments it takes.

    Args:
        units: Number of neurons.
        delay: Synaptic delay in time steps, an integer >= 0.
    """

    def __init__(self, units: int, delay: int = 1, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.delay = _check_delay(delay)

    def input_current(self, inputs: tf.Tensor) -> tf.Tensor:
        """Return ``W x_{t-delay} + b`` for every step, one product over all steps."""
        current = tf.tensordot(inputs, self.kernel, axes=[[2], [0]])
        if self.delay:
            steps = tf.shape(current)[1]
            padded = tf.pad(current, [[0, 0], [self.delay, 0], [0, 0]])
            current = tf.ensure_shape(
                padded[:, :steps], (None, inputs.shape[1], self.units)
            )
        if self.bias is not None:
            current = current + self.bias
        return current

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["delay"] = self.delay
        return config


def layer_to_spec(layer: SNUDenseDelayed, input_shape: tuple[int, ...]) -> LayerSpec:
    """Return the :class:`LayerSpec` of a built :class:`SNUDenseDelayed`."""
    entry = keras_io.snu_layer_spec(layer, KIND, input_shape)
    entry.params = {"delay": int(layer.delay)}
    return entry


def layer_from_spec(entry: LayerSpec, dtype: str, dt: float) -> SNUDenseDelayed:
    """Return an unbuilt :class:`SNUDenseDelayed` for ``entry`` (weights set later)."""
    return SNUDenseDelayed(
        int(entry.kernel.shape[1]),
        delay=delay_steps(entry),
        **keras_io.snu_layer_arguments(entry, dtype, dt),
    )

"""Step function with a selectable pseudo-derivative for backpropagation.

The forward pass is always the Heaviside step ``H(z) = 1 if z > 0 else 0``
(strictly greater, so a membrane exactly at threshold does not fire). Its true
derivative is zero almost everywhere, so training replaces it in the backward
pass by one of these pseudo-derivatives, each with a slope ``k > 0``:

``"tanh"``
    ``k * (1 - tanh(k z)^2)``, the derivative of ``tanh``; IBM's SNU toolkit
    (neuroaikit) uses it with ``k = 1``.
``"sigmoid"``
    ``k * sigma(k z) * (1 - sigma(k z))``, the derivative of a sigmoid with
    slope ``k`` (as in the SuperSpike family of surrogate gradients).
``"rectangle"``
    ``k`` where ``|z| < 1 / (2 k)`` and 0 elsewhere: a box of width ``1/k`` and
    unit area.
``"straight_through"``
    ``1`` everywhere (the straight-through estimator; ``k`` is ignored).
"""

from __future__ import annotations

import tensorflow as tf

from snubridge.errors import SpecError

PSEUDO_DERIVATIVES = ("tanh", "sigmoid", "rectangle", "straight_through")


def check_pseudo_derivative(name: str, slope: float) -> None:
    """Raise :class:`SpecError` for an unknown name or a non-positive slope."""
    if name not in PSEUDO_DERIVATIVES:
        raise SpecError(
            f"Unknown pseudo_derivative {name!r}; expected one of "
            f"{', '.join(map(repr, PSEUDO_DERIVATIVES))}."
        )
    if not float(slope) > 0:
        raise SpecError(
            f"pseudo_derivative_slope must be positive, received {slope!r}."
        )


def pseudo_derivative(margin: tf.Tensor, name: str, slope: float) -> tf.Tensor:
    """Return the pseudo-derivative ``dH/dz`` at ``margin = s - theta``."""
    k = tf.constant(slope, dtype=margin.dtype)
    if name == "tanh":
        return k * (1.0 - tf.square(tf.tanh(k * margin)))
    if name == "sigmoid":
        sigma = tf.sigmoid(k * margin)
        return k * sigma * (1.0 - sigma)
    if name == "rectangle":
        return tf.where(tf.abs(margin) < 0.5 / k, k, tf.zeros_like(margin))
    return tf.ones_like(margin)


def spike(margin: tf.Tensor, name: str = "tanh", slope: float = 1.0) -> tf.Tensor:
    """Return ``H(margin)`` (1 where ``margin > 0``) with a pseudo-derivative."""

    @tf.custom_gradient
    def step(z):
        def grad(upstream):
            return upstream * pseudo_derivative(z, name, slope)

        return tf.cast(z > 0, z.dtype), grad

    return step(margin)

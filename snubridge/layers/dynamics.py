"""SNU configuration and the one step function shared by every Keras layer.

Both implementations of the dynamics, the per-step cells for
``keras.layers.RNN`` and the fast sequence layers, call :func:`snu_step`, so
they compute the same floating-point operations in the same order. The maths
is stated in :mod:`snubridge.spec`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import tensorflow as tf

from snubridge.errors import SpecError
from snubridge.layers.pseudo import check_pseudo_derivative, spike
from snubridge.spec import ACTIVATIONS, OUTPUTS, check_decay, decay_from_tau


@dataclasses.dataclass(frozen=True)
class SNUSettings:
    """Validated neuron settings of one SNU layer.

    Attributes:
        decay: Membrane decay per step ``l`` in (0, 1].
        decay_mode: ``"direct"``, ``"exact"`` (``l = exp(-dt/tau)``) or
            ``"euler"`` (``l = 1 - dt/tau``).
        tau: Membrane time constant in seconds, or None in direct mode.
        dt: Time step in seconds, or None in direct mode.
        activation: ``g``, ``"relu"`` or ``"identity"``.
        output: ``h``, ``"step"`` (SNU) or ``"sigmoid"`` (sSNU).
        pseudo_derivative: Backward pass of the step, see
            :mod:`snubridge.layers.pseudo`.
        pseudo_derivative_slope: Its slope ``k``.
        lateral_inhibition: Winner-take-all within the layer, per sample.
    """

    decay: float
    decay_mode: str
    tau: float | None
    dt: float | None
    activation: str
    output: str
    pseudo_derivative: str
    pseudo_derivative_slope: float
    lateral_inhibition: bool


def resolve_settings(
    *,
    decay: float | None,
    tau: float | None,
    dt: float | None,
    decay_mode: str | None,
    activation: str,
    output: str,
    pseudo_derivative: str,
    pseudo_derivative_slope: float,
    lateral_inhibition: bool,
) -> SNUSettings:
    """Check the layer arguments and compute the decay; raise :class:`SpecError`.

    Give either ``decay`` alone, or ``tau`` and ``dt`` (seconds) with
    ``decay_mode`` set to ``"exact"`` or ``"euler"``: the discretisation is a
    stated choice because the Brian2 export integrates accordingly.
    """
    if activation not in ACTIVATIONS:
        raise SpecError(f"activation={activation!r}; expected one of {ACTIVATIONS}.")
    if output not in OUTPUTS:
        raise SpecError(
            f"output={output!r}; expected 'step' (SNU) or 'sigmoid' (sSNU)."
        )
    check_pseudo_derivative(pseudo_derivative, pseudo_derivative_slope)
    if lateral_inhibition and output != "step":
        raise SpecError("lateral_inhibition needs output='step'.")
    if tau is None:
        if decay is None:
            raise SpecError(
                "Give the membrane decay: decay=l, or tau, dt and decay_mode."
            )
        if decay_mode not in (None, "direct"):
            raise SpecError(
                f"decay_mode={decay_mode!r} needs tau and dt in seconds; "
                "pass them, or drop decay_mode to give the decay directly."
            )
        check_decay(decay, "SNU layer")
        return SNUSettings(
            float(decay),
            "direct",
            None,
            None,
            activation,
            output,
            pseudo_derivative,
            float(pseudo_derivative_slope),
            bool(lateral_inhibition),
        )
    if dt is None:
        raise SpecError(f"tau={tau!r} s needs the time step dt in seconds as well.")
    if decay_mode not in ("exact", "euler"):
        raise SpecError(
            f"With tau given, decay_mode must be 'exact' (l = exp(-dt/tau)) or "
            f"'euler' (l = 1 - dt/tau), received {decay_mode!r}."
        )
    computed = decay_from_tau(float(tau), float(dt), decay_mode)
    if decay is not None and not math.isclose(
        decay, computed, rel_tol=0, abs_tol=1e-12
    ):
        raise SpecError(
            f"decay={decay!r} contradicts tau={tau!r} s, dt={dt!r} s and "
            f"decay_mode={decay_mode!r}, which give {computed!r}; pass one or the "
            "other."
        )
    return SNUSettings(
        computed,
        decay_mode,
        float(tau),
        float(dt),
        activation,
        output,
        pseudo_derivative,
        float(pseudo_derivative_slope),
        bool(lateral_inhibition),
    )


def settings_config(settings: SNUSettings) -> dict[str, Any]:
    """Return the ``get_config`` entries that rebuild ``settings``."""
    config = dataclasses.asdict(settings)
    if settings.decay_mode == "direct":
        config["decay_mode"] = None
    else:
        config["decay"] = None
    return config


def snu_step(
    current: tf.Tensor,
    state: tf.Tensor,
    output: tf.Tensor,
    threshold: tf.Tensor,
    settings: SNUSettings,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Advance one SNU step; return the new ``(state, output)``.

    ``current`` is ``W x_t (+ b) (+ H y_{t-1})``; ``state`` and ``output`` are
    ``s_{t-1}`` and ``y_{t-1}``; the neuron axis is the last axis (for
    convolutions the last three axes are flattened by the caller or broadcast
    against a per-channel threshold).
    """
    decay = tf.constant(settings.decay, dtype=current.dtype)
    reset = output
    if settings.lateral_inhibition:
        reset = tf.broadcast_to(
            tf.reduce_max(output, axis=_neuron_axes(output), keepdims=True),
            tf.shape(output),
        )
    state = current + decay * state * (1.0 - reset)
    if settings.activation == "relu":
        state = tf.nn.relu(state)
    margin = state - threshold
    if settings.output == "sigmoid":
        return state, tf.sigmoid(margin)
    fired = spike(margin, settings.pseudo_derivative, settings.pseudo_derivative_slope)
    if settings.lateral_inhibition:
        axes = _neuron_axes(margin)
        masked = tf.where(fired > 0, margin, tf.constant(-math.inf, margin.dtype))
        best = tf.reduce_max(masked, axis=axes, keepdims=True)
        fired = fired * tf.stop_gradient(tf.cast(tf.equal(margin, best), margin.dtype))
    return state, fired


def _neuron_axes(values: tf.Tensor) -> list[int]:
    return list(range(1, values.shape.rank))

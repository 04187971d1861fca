"""Limited weight precision: uniform quantisation of kernels to 1..8 bits.

With ``b`` bits and a clipping bound ``c`` per quantised group (a layer, or
an output column), weights are rounded to a symmetric grid that contains 0::

    b >= 2:  W_q = c / L * clip(round(W L / c), -L, L),   L = 2^(b-1) - 1
    b = 1:   W_q = mean(|W|) * sign(W)       (binary weights, sign(0) = +1)

``clip="max"`` takes ``c = max |W|``. ``clip="mse"`` (the default) picks ``c``
among 64 fractions of ``max |W|`` to minimise the squared rounding error,
because with few levels the largest weight sets a step so coarse that most
weights round to 0 (with 2 bits, every ``|w| < max |W| / 2``).

Biases and thresholds stay at full precision: they are digital on the PCM
accelerator.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from snubridge.errors import DeviceError
from snubridge.spec import NetworkSpec

logger = logging.getLogger(__name__)

GROUPINGS = ("layer", "column")
CLIPS = ("mse", "max")


def _check_bits(bits: Any) -> int:
    if (
        isinstance(bits, bool)
        or not isinstance(bits, (int, np.integer))
        or not 1 <= bits <= 8
    ):
        raise DeviceError(f"bits must be an integer from 1 to 8, received {bits!r}.")
    return int(bits)


def _round_to_grid(values: np.ndarray, bound: np.ndarray, levels: int) -> np.ndarray:
    step = np.where(bound > 0, bound / levels, 1.0)
    return np.clip(np.rint(values / step), -levels, levels) * step


def quantize_weights(
    weights: np.ndarray, bits: int, *, per: str = "layer", clip: str = "mse"
) -> np.ndarray:
    """Return ``weights`` rounded to ``bits`` bits (see the module docstring).

    Args:
        weights: Array whose last axis is the output axis.
        bits: Bit width, 1..8.
        per: ``"layer"`` (one range for the array) or ``"column"`` (one range
            per output, the last axis).
        clip: ``"mse"`` or ``"max"``: how the clipping bound is chosen.
    """
    bits = _check_bits(bits)
    if per not in GROUPINGS:
        raise DeviceError(f"per={per!r} is not supported; expected one of {GROUPINGS}.")
    if clip not in CLIPS:
        raise DeviceError(f"clip={clip!r} is not supported; expected one of {CLIPS}.")
    values = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise DeviceError("weights contain NaN or infinity; they cannot be quantised.")
    axes = tuple(range(values.ndim - 1)) if per == "column" else None
    keep = per == "column"
    if bits == 1:
        magnitude = np.mean(np.abs(values), axis=axes, keepdims=keep)
        return np.where(values >= 0, 1.0, -1.0) * magnitude
    levels = 2 ** (bits - 1) - 1
    peak = np.max(np.abs(values), axis=axes, keepdims=keep)
    if clip == "max":
        return _round_to_grid(values, peak, levels)
    best, best_error = None, None
    for fraction in np.linspace(1.0 / 64, 1.0, 64):
        candidate = _round_to_grid(values, peak * fraction, levels)
        error = np.sum((candidate - values) ** 2, axis=axes, keepdims=keep)
        if best is None:
            best, best_error = candidate, error
            continue
        better = error < best_error
        best = np.where(better, candidate, best)
        best_error = np.minimum(error, best_error)
    return best


def quantize_spec(
    spec: NetworkSpec, bits: int, *, per: str = "layer", clip: str = "mse"
) -> NetworkSpec:
    """Return a copy of ``spec`` with every kernel and recurrent kernel quantised.

    Convolution kernels ``(kh, kw, c_in, c_out)`` use their last axis as the
    output axis. The input spec is not changed.
    """
    bits = _check_bits(bits)
    quantized = copy.deepcopy(spec)
    for layer in quantized.layers:
        if layer.kernel is not None:
            layer.kernel = quantize_weights(layer.kernel, bits, per=per, clip=clip)
        if layer.recurrent_kernel is not None:
            layer.recurrent_kernel = quantize_weights(
                layer.recurrent_kernel, bits, per=per, clip=clip
            )
    quantized.metadata = dict(
        quantized.metadata, weight_bits=bits, weight_grouping=per, weight_clip=clip
    )
    return quantized.validate()


def precision_sweep(
    spec: NetworkSpec,
    data: np.ndarray,
    labels: np.ndarray,
    *,
    bits: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8),
    task: str = "classification",
    mask: np.ndarray | None = None,
    per: str = "layer",
    clip: str = "mse",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Score ``spec`` with its weights quantised to each bit width (no device noise).

    Returns a JSON-able dict ``{"metric", "full_precision", "bits": {b: score}}``
    with accuracy (a fraction) for classification and frame NLL in nats per
    step for music.
    """
    from snubridge.pcm.deploy import _check_inputs, _run, _score

    data = np.asarray(data)
    labels = np.asarray(labels)
    _check_inputs(spec, data, labels, task, mask)
    full = _score(spec, _run(spec, data, batch_size), labels, task, mask)
    scores = {}
    for width in bits:
        quantized = quantize_spec(spec, width, per=per, clip=clip)
        scores[int(width)] = _score(
            quantized, _run(quantized, data, batch_size), labels, task, mask
        )
        logger.info("%d-bit weights: %.4f", width, scores[int(width)])
    return {
        "metric": "accuracy" if task == "classification" else "frame_nll",
        "full_precision": full,
        "grouping": per,
        "clip": clip,
        "bits": scores,
    }

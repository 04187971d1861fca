"""Spike encoders: turn intensities or given rasters into :class:`SpikeData`.

Each input sample of shape ``features`` (for example a 28 x 28 image) becomes
``n_steps`` time steps of ``prod(features)`` neurons. The spatial shape is kept
in ``SpikeData.neuron_shape``, and ``to_array(shape=(28, 28, 1))`` restores it
for a convolutional network. Intensities are first scaled to ``[0, 1]``:

* ``uint8`` input (pixel values 0..255) is divided by 255 unless ``scale`` is
  given;
* float input is used as it is unless ``scale`` is given;
* other integer dtypes need an explicit ``scale``.

Spikes are drawn independently for every sample, time step and neuron from
``numpy.random.default_rng(seed)``. Equal seeds and equal inputs give equal
spikes under the same numpy version, because the draws are made in blocks of a
fixed size in sample order. numpy may change a Generator's streams between
versions. Passing a ``numpy.random.Generator`` continues its stream, so
encoding a data set batch by batch from one generator gives different (equally
valid) spikes than encoding it in one call with an int seed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from snubridge.errors import DataError
from snubridge.spikes import SpikeData

logger = logging.getLogger(__name__)

# Uniform draws per block: 2**22 float32 values are 16 MiB of scratch memory,
# whatever the size of the data set.
_BLOCK_ELEMENTS = 2**22


def scale_intensities(values: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Return ``values * scale`` as float64 intensities, checked to lie in [0, 1].

    Args:
        values: Array ``(samples, *features)``.
        scale: Factor applied before the check. ``None`` means 1/255 for
            ``uint8`` and 1 for float arrays.

    Raises:
        DataError: non-numeric input, an integer dtype other than ``uint8``
            without ``scale``, a non-positive or non-finite ``scale``, or an
            intensity that is NaN, infinite, negative or above 1.
    """
    array = np.asarray(values)
    if array.dtype == bool:
        array = array.astype(np.uint8)
        scale = 1.0 if scale is None else scale
    if not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
    ):
        raise DataError(
            f"Intensities must be a numeric array, got dtype {array.dtype}."
        )
    if scale is None:
        if array.dtype == np.uint8:
            scale = 1.0 / 255.0
        elif np.issubdtype(array.dtype, np.floating):
            scale = 1.0
        else:
            raise DataError(
                f"Intensities of dtype {array.dtype} need an explicit scale that "
                "maps them to [0, 1], for example scale=1/255 for pixel values."
            )
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise DataError(f"scale must be a finite number greater than 0, got {scale!r}.")
    intensities = array.astype(np.float64) * scale
    if intensities.size == 0:
        return intensities
    bad = ~np.isfinite(intensities)
    if np.any(bad):
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"Intensity at index {position} is {array[position]}; intensities must "
            "be finite. Replace NaN and infinite values before encoding."
        )
    if float(intensities.min()) < 0:
        position = tuple(int(i) for i in np.argwhere(intensities < 0)[0])
        raise DataError(
            f"Intensity at index {position} is {array[position]}, which is negative; "
            "intensities must lie in [0, 1] after scaling. Shift the data to start "
            "at 0 first."
        )
    if float(intensities.max()) > 1:
        position = tuple(int(i) for i in np.argwhere(intensities > 1)[0])
        raise DataError(
            f"Intensity at index {position} is {array[position]}, which is "
            f"{intensities[position]:g} after scaling by {scale:g}; intensities "
            "must lie in [0, 1]. Pass scale=1/255 for pixel values or divide by "
            "the maximum."
        )
    return intensities


def rate_encode(
    values: np.ndarray,
    n_steps: int,
    *,
    max_probability: float = 1.0,
    seed: int | np.random.Generator,
    scale: float | None = None,
    dt: float = 1e-3,
    labels: np.ndarray | Sequence[int] | None = None,
) -> SpikeData:
    """Encode intensities as Bernoulli spike trains (rate coding).

    Every neuron fires in every step independently with probability
    ``p = intensity * max_probability``, so its expected count over
    ``n_steps`` steps is ``n_steps * p`` and its expected rate is ``p / dt`` Hz.

    Args:
        values: Intensities ``(samples, *features)``, for example uint8 images
            ``(samples, 28, 28)``.
        n_steps: Number of time steps (>= 1).
        max_probability: Spike probability per step at intensity 1, in (0, 1].
        seed: Int seed of ``numpy.random.default_rng``, or a Generator to draw
            from.
        scale: Factor that maps ``values`` to [0, 1]; see
            :func:`scale_intensities`.
        dt: Time step in seconds, stored in the result for rates in Hz.
        labels: Optional integer label per sample, stored in the result.

    Returns:
        SpikeData ``(samples, n_steps, prod(features))`` with
        ``neuron_shape = features``.

    Raises:
        DataError: invalid intensities, ``n_steps``, ``max_probability`` or
            ``seed``.
    """
    probability = _check_probability("max_probability", max_probability)
    intensities = _sample_intensities(values, scale)
    return _bernoulli(
        intensities * probability, n_steps, seed, dt, labels, intensities.shape[1:]
    )


def poisson_encode(
    values: np.ndarray,
    n_steps: int,
    *,
    max_rate_hz: float,
    dt: float = 1e-3,
    seed: int | np.random.Generator,
    scale: float | None = None,
    labels: np.ndarray | Sequence[int] | None = None,
) -> SpikeData:
    """Encode intensities as Poisson spike trains sampled on a grid of ``dt``.

    A neuron of intensity ``x`` is a Poisson process of rate
    ``r = x * max_rate_hz``. A step of length ``dt`` contains ``k`` events with
    probability ``exp(-r dt) (r dt)^k / k!``; a step with one or more events
    becomes one spike, because spikes are binary. Every step therefore fires
    independently with probability ``p = 1 - exp(-r dt)``, and the measured
    rate ``p / dt`` is below ``r`` by the clipped multiple events, by about
    ``r^2 dt / 2`` when ``r dt`` is small. A warning is logged when
    ``max_rate_hz * dt > 0.1``, where the shortfall at intensity 1 is about
    5 percent or more (4.8 percent at exactly 0.1).

    Args:
        values: Intensities ``(samples, *features)``.
        n_steps: Number of time steps (>= 1).
        max_rate_hz: Rate in Hz at intensity 1 (finite, > 0).
        dt: Time step in seconds.
        seed: Int seed of ``numpy.random.default_rng``, or a Generator.
        scale: Factor that maps ``values`` to [0, 1]; see
            :func:`scale_intensities`.
        labels: Optional integer label per sample.

    Returns:
        SpikeData ``(samples, n_steps, prod(features))``.

    Raises:
        DataError: invalid intensities, ``n_steps``, ``max_rate_hz``, ``dt`` or
            ``seed``.
    """
    rate = float(max_rate_hz)
    if not math.isfinite(rate) or rate <= 0:
        raise DataError(
            f"max_rate_hz must be a finite rate in Hz greater than 0, got "
            f"{max_rate_hz!r}."
        )
    step = float(dt)
    if not math.isfinite(step) or step <= 0:
        raise DataError(f"dt must be a finite time step in seconds > 0, got {dt!r}.")
    if rate * step > 0.1:
        logger.warning(
            "max_rate_hz * dt = %g: steps with several Poisson events become one "
            "spike, so the top measured rate is %g Hz, not %g Hz.",
            rate * step,
            -math.expm1(-rate * step) / step,
            rate,
        )
    intensities = _sample_intensities(values, scale)
    probabilities = -np.expm1(-intensities * rate * step)
    return _bernoulli(probabilities, n_steps, seed, step, labels, intensities.shape[1:])


def raster_encode(
    raster: np.ndarray,
    *,
    dt: float = 1e-3,
    labels: np.ndarray | Sequence[int] | None = None,
) -> SpikeData:
    """Wrap given spike rasters ``(samples, steps, *neuron_dims)`` as SpikeData.

    Neuron axes after the first two are flattened in C order and kept as
    ``neuron_shape``. Values must be 0 or 1 (bool, int or float).

    Raises:
        DataError: fewer than three axes, or values other than 0 and 1.
    """
    array = np.asarray(raster)
    if array.ndim < 3:
        raise DataError(
            f"A raster must have shape (samples, steps, *neuron_dims), got shape "
            f"{array.shape}; add a samples axis with raster[np.newaxis]."
        )
    neuron_shape = array.shape[2:]
    flat = array.reshape(array.shape[0], array.shape[1], -1)
    return SpikeData(flat, dt=dt, labels=labels, neuron_shape=neuron_shape)


def _sample_intensities(values, scale) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim < 2:
        raise DataError(
            f"Intensities must have shape (samples, *features), got shape "
            f"{array.shape}; add a samples axis with values[np.newaxis]."
        )
    return scale_intensities(array, scale)


def _check_probability(name: str, value) -> float:
    number = float(value)
    if not math.isfinite(number) or not 0 < number <= 1:
        raise DataError(f"{name} must lie in (0, 1], got {value!r}.")
    return number


def _make_rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise DataError(f"seed must be a non-negative int, got {seed}.")
        return np.random.default_rng(int(seed))
    raise DataError(
        f"seed must be a non-negative int or a numpy.random.Generator, got "
        f"{seed!r}; encoders need a seed so that spikes are reproducible."
    )


def _bernoulli(
    probabilities: np.ndarray,
    n_steps: int,
    seed,
    dt: float,
    labels,
    neuron_shape: tuple[int, ...],
) -> SpikeData:
    """Draw spikes ``u < p`` with ``u`` uniform on [0, 1), block by block."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)):
        raise DataError(f"n_steps must be an int >= 1, got {n_steps!r}.")
    if n_steps < 1:
        raise DataError(f"n_steps must be an int >= 1, got {n_steps}.")
    rng = _make_rng(seed)
    n_samples = probabilities.shape[0]
    flat = probabilities.reshape(n_samples, -1).astype(np.float32)
    n_neurons = flat.shape[1]
    spikes = np.zeros((n_samples, int(n_steps), n_neurons), dtype=bool)
    per_sample = max(int(n_steps) * n_neurons, 1)
    block = max(1, _BLOCK_ELEMENTS // per_sample)
    for start in range(0, n_samples, block):
        stop = min(start + block, n_samples)
        uniform = rng.random((stop - start, int(n_steps), n_neurons), dtype=np.float32)
        np.less(uniform, flat[start:stop, np.newaxis, :], out=spikes[start:stop])
    return SpikeData(spikes, dt=dt, labels=labels, neuron_shape=neuron_shape)

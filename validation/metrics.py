"""Spike-train distances on the discrete time grid, vectorised over trains.

Every function takes two binary rasters of equal shape ``(samples, steps,
*neurons)``, values 0 or 1 (bool, int or float), and compares them train by
train: the train of neuron ``i`` in sample ``s`` of the first raster against
the same train of the second. Results have shape ``(samples, neurons)`` with
the neuron axes flattened in C order, matching the ``(samples, steps, units)``
layout of :attr:`snubridge.reference.SimulationResult.states`.

Times are counted in steps: a spike at step ``t`` happened at ``t * dt``
seconds, so a time constant of ``tau`` steps is ``tau * dt`` seconds and a cost
of ``q`` per step is ``q / dt`` per second. Two identical trains give a
distance of exactly 0 and a coincidence factor of exactly 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np

from snubridge.errors import EquivalenceError

logger = logging.getLogger(__name__)


def _as_trains(raster: np.ndarray, name: str) -> np.ndarray:
    """Return ``raster`` as a boolean ``(samples, steps, neurons)`` array."""
    array = np.asarray(raster)
    if array.ndim < 3:
        raise EquivalenceError(
            f"{name} must have shape (samples, steps, *neurons), received shape "
            f"{array.shape}; add a samples axis with raster[np.newaxis]."
        )
    if array.dtype != bool:
        if not np.all((array == 0) | (array == 1)):
            bad = tuple(int(i) for i in np.argwhere((array != 0) & (array != 1))[0])
            raise EquivalenceError(
                f"{name} must contain spikes (0 or 1), but contains {array[bad]!r} "
                f"at index {bad}; compare membrane states with a numeric difference "
                "instead."
            )
        array = array != 0
    return array.reshape(array.shape[0], array.shape[1], -1)


def _pair(
    reference: np.ndarray, candidate: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    first = _as_trains(reference, "reference raster")
    second = _as_trains(candidate, "candidate raster")
    if first.shape != second.shape:
        raise EquivalenceError(
            f"Rasters differ in shape: {np.shape(reference)} and "
            f"{np.shape(candidate)}; both back ends must run the same samples and "
            "steps."
        )
    return first, second


def van_rossum_distance(
    reference: np.ndarray, candidate: np.ndarray, tau: float
) -> np.ndarray:
    """Compute the van Rossum distance of every pair of trains.

    With ``lam = exp(-1 / tau)`` (``tau`` in steps) and ``d_t = a_t - b_t``, the
    difference of the two trains filtered by the causal exponential kernel is
    ``e_t = lam * e_{t-1} + d_t`` (``e_{-1} = 0``), and::

        D^2 = (1 - lam^2) * sum_{t=0}^{T-1} e_t^2 + lam^2 * e_{T-1}^2

    The last term is the exact sum of the kernel tail after the final step,
    where ``e`` only decays. ``D^2`` equals ``sum_{i,j} d_i d_j lam^|i-j|``.
    That is the continuous-time van Rossum distance (van Rossum, Neural
    Computation 13, 751-763, 2001) for spikes at times ``t * dt`` and time
    constant ``tau * dt``. It is normalised so that one spike against none
    gives 1, as Elephant's ``van_rossum_distance`` is. Divide by ``sqrt(2)``
    for the paper's normalisation. ``tau = inf`` gives ``|n_a - n_b|``.

    Args:
        reference: Raster ``(samples, steps, *neurons)``.
        candidate: Raster of the same shape.
        tau: Time constant of the kernel in steps, > 0 (``math.inf`` allowed).

    Returns:
        Distances ``(samples, neurons)``, dimensionless, float64.

    Raises:
        EquivalenceError: non-binary rasters, mismatched shapes or invalid tau.
    """
    tau = _check_parameter("tau", tau, allow_zero=False)
    first, second = _pair(reference, candidate)
    decay = math.exp(-1.0 / tau)
    filtered = np.zeros((first.shape[0], first.shape[2]), np.float64)
    total = np.zeros_like(filtered)
    for step in range(first.shape[1]):
        difference = first[:, step].astype(np.int8) - second[:, step].astype(np.int8)
        filtered = decay * filtered + difference
        total += filtered * filtered
    squared = (1.0 - decay * decay) * total + decay * decay * filtered * filtered
    # Every term is non-negative, but keep the root safe from any future rewrite
    # of the sum into differences of large numbers.
    return np.sqrt(np.maximum(squared, 0.0))


def _spike_times(trains: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Return spike steps ``(trains, max_count)`` in increasing order, padded with 0."""
    longest = int(counts.max()) if counts.size else 0
    order = np.argsort(~trains, axis=1, kind="stable")[:, :longest]
    valid = np.arange(longest)[np.newaxis, :] < counts[:, np.newaxis]
    return np.where(valid, order, 0).astype(np.float64)


def victor_purpura_distance(
    reference: np.ndarray, candidate: np.ndarray, cost: float
) -> np.ndarray:
    """Compute the Victor-Purpura distance of every pair of trains.

    The distance is the minimum total cost of edits that turn one train into
    the other (Victor and Purpura, Journal of Neurophysiology 76, 1310-1326,
    1996). Inserting or deleting a spike costs 1, and moving a spike by ``k``
    steps costs ``cost * k``. With spike steps ``a_1 < ... < a_n``
    and ``b_1 < ... < b_m``, the dynamic programme is::

        G[i, 0] = i,  G[0, j] = j
        G[i, j] = min(G[i-1, j] + 1, G[i, j-1] + 1,
                      G[i-1, j-1] + cost * |a_i - b_j|)

    and the distance is ``G[n, m]``. Cells on one anti-diagonal ``i + j = k``
    depend only on the two diagonals before it, so the programme runs one
    diagonal at a time for all trains at once. Only trains that differ enter
    it; equal trains give exactly 0. ``cost = 0`` gives ``|n - m|``; with
    ``cost = inf`` spikes cannot move, and coincident spikes cost nothing.

    Args:
        reference: Raster ``(samples, steps, *neurons)``.
        candidate: Raster of the same shape.
        cost: Cost of moving a spike by one step, >= 0 (``math.inf`` allowed).
            Elephant's ``cost_factor`` in Hz is ``cost / dt``.

    Returns:
        Distances ``(samples, neurons)``, float64.

    Raises:
        EquivalenceError: non-binary rasters, mismatched shapes or invalid cost.
    """
    cost = _check_parameter("cost", cost, allow_zero=True)
    first, second = _pair(reference, candidate)
    samples, _, neurons = first.shape
    result = np.zeros((samples, neurons), np.float64)
    differs = np.any(first != second, axis=1)
    if not np.any(differs):
        return result
    trains_a = np.moveaxis(first, 1, 2)[differs]
    trains_b = np.moveaxis(second, 1, 2)[differs]
    result[differs] = _victor_purpura_pairs(trains_a, trains_b, cost)
    return result


def _victor_purpura_pairs(trains_a: np.ndarray, trains_b: np.ndarray, cost: float):
    """Run the anti-diagonal dynamic programme on ``(pairs, steps)`` trains."""
    count_a = trains_a.sum(axis=1)
    count_b = trains_b.sum(axis=1)
    times_a = _spike_times(trains_a, count_a)
    times_b = _spike_times(trains_b, count_b)
    pairs = trains_a.shape[0]
    rows = int(count_a.max())
    cols = int(count_b.max())
    index = np.arange(rows + 1)
    distance = np.full(pairs, np.nan)
    # Column i of the array for diagonal k is G[i, k - i]. Cells outside the
    # table are inf.
    before = np.full((pairs, rows + 1), np.inf)
    current = np.full((pairs, rows + 1), np.inf)
    current[:, 0] = 0.0
    done = (count_a + count_b) == 0
    distance[done] = 0.0
    for diagonal in range(1, rows + cols + 1):
        column = diagonal - index
        inside = (column >= 0) & (column <= cols)
        following = np.full((pairs, rows + 1), np.inf)
        # Interior cells i >= 1 and j >= 1.
        interior = np.flatnonzero(inside & (index >= 1) & (column >= 1))
        if interior.size:
            shift = np.abs(times_a[:, interior - 1] - times_b[:, column[interior] - 1])
            with np.errstate(invalid="ignore"):
                moved = np.where(shift == 0, 0.0, cost * shift)
            following[:, interior] = np.minimum(
                np.minimum(current[:, interior - 1] + 1.0, current[:, interior] + 1.0),
                before[:, interior - 1] + moved,
            )
        # Edges of the table: G[i, 0] = i and G[0, j] = j.
        if diagonal <= rows:
            following[:, diagonal] = float(diagonal)
        if diagonal <= cols:
            following[:, 0] = float(diagonal)
        finished = (count_a + count_b) == diagonal
        if np.any(finished):
            distance[finished] = following[finished, count_a[finished]]
        before, current = current, following
    return distance


def coincidence_factor(
    reference: np.ndarray, candidate: np.ndarray, window: int = 1
) -> np.ndarray:
    """Compute the coincidence factor Gamma of every pair of trains.

    Following Kistler, Gerstner and van Hemmen (Neural Computation 9,
    1015-1045, 1997), with the reference as the data train ``a`` and the
    candidate as the model train ``b``::

        Gamma = (N_coinc - E) / (0.5 * (n_a + n_b) * (1 - (2 w + 1) * nu))
        E = (2 w + 1) * nu * n_a,   nu = n_b / T

    ``N_coinc`` counts the spikes of ``a`` with at least one spike of ``b`` no
    more than ``w`` steps away. ``nu`` is the model's spike probability per
    step, and ``E`` is the number of coincidences expected by chance from a
    Bernoulli train of that rate. The paper's continuous window of length
    ``2 Delta`` becomes ``2 w + 1`` grid steps. Gamma is 1 for identical
    trains (two silent trains included), about 0 for unrelated ones, and NaN
    where the model fires so often that ``(2 w + 1) * nu >= 1`` makes the normalisation
    undefined.

    Args:
        reference: Raster ``(samples, steps, *neurons)``, the data train.
        candidate: Raster of the same shape, the model train.
        window: Half-width ``w`` of the coincidence window in steps, >= 0;
            ``w = 1`` accepts spikes one step apart.

    Returns:
        Gamma ``(samples, neurons)``, float64.
    """
    if (
        isinstance(window, bool)
        or not isinstance(window, (int, np.integer))
        or window < 0
    ):
        raise EquivalenceError(
            f"The coincidence window must be a whole number of steps >= 0, received "
            f"{window!r}; use 1 or 2."
        )
    first, second = _pair(reference, candidate)
    steps = first.shape[1]
    window = int(window)
    widened = second.copy()
    for shift in range(1, min(window, steps - 1) + 1):
        widened[:, shift:] |= second[:, :-shift]
        widened[:, :-shift] |= second[:, shift:]
    count_a = first.sum(axis=1).astype(np.float64)
    count_b = second.sum(axis=1).astype(np.float64)
    coincident = (first & widened).sum(axis=1).astype(np.float64)
    bins = 2 * window + 1
    rate = count_b / steps if steps else np.zeros_like(count_b)
    expected = bins * rate * count_a
    normalisation = 1.0 - bins * rate
    denominator = 0.5 * (count_a + count_b) * normalisation
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where(denominator > 0, (coincident - expected) / denominator, np.nan)
    # One silent train against a firing one: no coincidences and none expected.
    gamma = np.where(
        (count_a + count_b > 0) & ((count_a == 0) | (count_b == 0)), 0.0, gamma
    )
    identical = np.all(first == second, axis=1)
    return np.where(identical, 1.0, gamma)


def mean_activity(raster: np.ndarray) -> np.ndarray:
    """Return the spike probability per step of every neuron, ``(neurons,)``.

    The mean over samples and steps; multiply by ``1 / dt`` for a rate in Hz.
    """
    trains = _as_trains(raster, "raster")
    if trains.shape[0] == 0 or trains.shape[1] == 0:
        return np.zeros(trains.shape[2])
    return trains.mean(axis=(0, 1))


def activity_similarity(
    reference: Iterable[np.ndarray], candidate: Iterable[np.ndarray]
) -> float:
    """Compute the cosine similarity of mean activity over the whole network.

    Each argument lists the rasters of the network's spiking layers in the same
    order. The mean activity of every neuron (:func:`mean_activity`) is joined
    into one vector per back end, and the result is
    ``r_a . r_b / (|r_a| |r_b|)``, in [0, 1] because activities are
    non-negative: 1 when the two population vectors point the same way. It is
    exactly 1 for equal vectors (two silent networks included) and 0 when only
    one network fires. Cosine similarity ignores a common scale factor of all
    rates, so pair it with the spike-count differences per neuron.

    Raises:
        EquivalenceError: different numbers of layers or mismatched shapes.
    """
    first_layers = list(reference)
    second_layers = list(candidate)
    if len(first_layers) != len(second_layers):
        raise EquivalenceError(
            f"Received {len(first_layers)} reference layers but {len(second_layers)} "
            "candidate layers; pass the same spiking layers of both networks."
        )
    if not first_layers:
        return 1.0
    vectors_a, vectors_b = [], []
    for first, second in zip(first_layers, second_layers, strict=True):
        a, b = _pair(first, second)
        vectors_a.append(mean_activity(a))
        vectors_b.append(mean_activity(b))
    vector_a = np.concatenate(vectors_a)
    vector_b = np.concatenate(vectors_b)
    if np.array_equal(vector_a, vector_b):
        return 1.0
    norm = float(np.linalg.norm(vector_a) * np.linalg.norm(vector_b))
    if norm == 0.0:
        return 0.0
    return float(np.clip(np.dot(vector_a, vector_b) / norm, 0.0, 1.0))


def _check_parameter(name: str, value: float, allow_zero: bool) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EquivalenceError(
            f"{name} must be a number, received {value!r}."
        ) from None
    if math.isnan(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise EquivalenceError(
            f"{name} must be {bound} (in steps), received {value!r}."
        )
    return number

"""Grid spike-train distances against Elephant and hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from snubridge.errors import EquivalenceError
from snubridge.validation import metrics

neo = pytest.importorskip("neo")
pq = pytest.importorskip("quantities")
dissimilarity = pytest.importorskip("elephant.spike_train_dissimilarity")

DT = 1e-3  # seconds per step for the conversion to Elephant's spike times


def random_pair(seed: int, samples=3, steps=80, neurons=6, rate=0.12, flip=0.08):
    """Return two seeded rasters that differ in about ``flip`` of their bins."""
    rng = np.random.default_rng(seed)
    first = rng.random((samples, steps, neurons)) < rate
    second = first ^ (rng.random(first.shape) < flip)
    # One train silent in both and one silent on one side only.
    first[0, :, 0] = False
    second[0, :, 0] = False
    second[1, :, 1] = False
    return first, second


def as_neo(train: np.ndarray) -> neo.SpikeTrain:
    steps = len(train)
    return neo.SpikeTrain(np.flatnonzero(train) * DT * pq.s, t_stop=steps * DT * pq.s)


def elephant_matrix(function, first, second, **options) -> np.ndarray:
    samples, _, neurons = first.shape
    result = np.empty((samples, neurons))
    for sample in range(samples):
        for neuron in range(neurons):
            pair = [as_neo(first[sample, :, neuron]), as_neo(second[sample, :, neuron])]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                result[sample, neuron] = function(pair, **options)[0, 1]
    return result


@pytest.mark.parametrize("tau", [0.7, 3.0, 12.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_van_rossum_matches_elephant(tau, seed):
    first, second = random_pair(seed)
    expected = elephant_matrix(
        dissimilarity.van_rossum_distance, first, second, time_constant=tau * DT * pq.s
    )
    computed = metrics.van_rossum_distance(first, second, tau)
    assert computed.shape == (3, 6)
    np.testing.assert_allclose(computed, expected, rtol=1e-9, atol=1e-9)


def test_van_rossum_infinite_tau_counts():
    first, second = random_pair(4)
    computed = metrics.van_rossum_distance(first, second, math.inf)
    expected = np.abs(first.sum(axis=1) - second.sum(axis=1))
    np.testing.assert_allclose(computed, expected)


def test_van_rossum_hand_values():
    steps = 30
    one = np.zeros((1, steps, 1), bool)
    one[0, 10, 0] = True
    none = np.zeros_like(one)
    assert metrics.van_rossum_distance(one, none, 4.0)[0, 0] == pytest.approx(1.0)
    shifted = np.zeros_like(one)
    shifted[0, 13, 0] = True
    # Two single spikes k steps apart: D^2 = 2 - 2 exp(-k / tau).
    expected = math.sqrt(2.0 - 2.0 * math.exp(-3.0 / 4.0))
    assert metrics.van_rossum_distance(one, shifted, 4.0)[0, 0] == pytest.approx(
        expected
    )


@pytest.mark.parametrize("cost", [0.05, 0.4, 1.0, 3.0])
@pytest.mark.parametrize("seed", [0, 2])
def test_victor_purpura_matches_elephant(cost, seed):
    first, second = random_pair(seed)
    expected = elephant_matrix(
        dissimilarity.victor_purpura_distance,
        first,
        second,
        cost_factor=(cost / DT) * pq.Hz,
    )
    computed = metrics.victor_purpura_distance(first, second, cost)
    np.testing.assert_allclose(computed, expected, rtol=1e-9, atol=1e-9)


def test_victor_purpura_zero_cost_counts():
    first, second = random_pair(3)
    computed = metrics.victor_purpura_distance(first, second, 0.0)
    expected = np.abs(first.sum(axis=1).astype(int) - second.sum(axis=1))
    np.testing.assert_array_equal(computed, expected)


def test_victor_purpura_hand_value():
    first = np.zeros((1, 20, 1), bool)
    second = np.zeros_like(first)
    first[0, [2, 9], 0] = True
    second[0, [4, 15, 18], 0] = True
    # Cost 0.5: move 2 -> 4 (1.0); moving 9 -> 15 would cost 3.0, so delete 9 and
    # insert 15 (2.0); insert 18 (1.0).
    assert metrics.victor_purpura_distance(first, second, 0.5)[0, 0] == pytest.approx(
        4.0
    )
    # With cost 0.1: move 2->4 (0.2), 9->15 (0.6), insert 18 (1).
    assert metrics.victor_purpura_distance(first, second, 0.1)[0, 0] == pytest.approx(
        1.8
    )


def test_identical_trains_exact():
    first, _ = random_pair(5)
    assert np.all(metrics.van_rossum_distance(first, first, 5.0) == 0.0)
    assert np.all(metrics.victor_purpura_distance(first, first, 0.5) == 0.0)
    for window in (0, 1, 2):
        assert np.all(metrics.coincidence_factor(first, first, window) == 1.0)
    assert metrics.activity_similarity([first], [first]) == 1.0


def gamma_by_loops(first: np.ndarray, second: np.ndarray, window: int) -> np.ndarray:
    """Kistler et al. (1997) Gamma written out spike by spike."""
    samples, steps, neurons = first.shape
    result = np.empty((samples, neurons))
    for sample in range(samples):
        for neuron in range(neurons):
            data = np.flatnonzero(first[sample, :, neuron])
            model = np.flatnonzero(second[sample, :, neuron])
            if np.array_equal(data, model):
                result[sample, neuron] = 1.0
                continue
            coincidences = sum(
                1 for t in data if any(abs(t - u) <= window for u in model)
            )
            rate = len(model) / steps
            expected = (2 * window + 1) * rate * len(data)
            norm = 1 - (2 * window + 1) * rate
            if len(data) == 0 or len(model) == 0:
                result[sample, neuron] = 0.0
            elif norm <= 0:
                result[sample, neuron] = np.nan
            else:
                result[sample, neuron] = (coincidences - expected) / (
                    0.5 * (len(data) + len(model)) * norm
                )
    return result


@pytest.mark.parametrize("window", [0, 1, 2])
def test_gamma_matches_loops(window):
    first, second = random_pair(6, steps=100, neurons=8)
    computed = metrics.coincidence_factor(first, second, window)
    expected = gamma_by_loops(first, second, window)
    np.testing.assert_allclose(computed, expected, rtol=1e-12, equal_nan=True)


def test_gamma_window_accepts_one_step_shift():
    steps = 50
    first = np.zeros((1, steps, 1), bool)
    first[0, [5, 20, 35], 0] = True
    second = np.roll(first, 1, axis=1)
    rate = 3 / steps
    # Window 0: no coincidence, Gamma = -E / (0.5 * 6 * (1 - rate)).
    exact = metrics.coincidence_factor(first, second, 0)[0, 0]
    assert exact == pytest.approx(-(rate * 3) / (3 * (1 - rate)))
    # Window 1: all three coincide.
    near = metrics.coincidence_factor(first, second, 1)[0, 0]
    assert near == pytest.approx((3 - 3 * rate * 3) / (3 * (1 - 3 * rate)))


def test_activity_similarity_values():
    first = np.zeros((2, 10, 2), bool)
    second = np.zeros_like(first)
    first[:, :4, 0] = True  # activity (0.4, 0)
    second[:, :3, 0] = True
    second[:, :4, 1] = True  # activity (0.3, 0.4)
    expected = 0.4 * 0.3 / (0.4 * 0.5)
    assert metrics.activity_similarity([first], [second]) == pytest.approx(expected)
    silent = np.zeros_like(first)
    assert metrics.activity_similarity([first], [silent]) == 0.0
    assert metrics.activity_similarity([silent], [silent]) == 1.0


def test_rejects_non_binary():
    first = np.zeros((1, 5, 2))
    second = first.copy()
    second[0, 1, 1] = 0.5
    with pytest.raises(EquivalenceError, match="0 or 1"):
        metrics.van_rossum_distance(first, second, 2.0)


def test_rejects_shape_mismatch():
    with pytest.raises(EquivalenceError, match="shape"):
        metrics.victor_purpura_distance(np.zeros((1, 5, 2)), np.zeros((1, 6, 2)), 1.0)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), "x"])
def test_rejects_bad_tau(tau):
    with pytest.raises(EquivalenceError, match="tau"):
        metrics.van_rossum_distance(np.zeros((1, 5, 1)), np.zeros((1, 5, 1)), tau)


@pytest.mark.parametrize("window", [-1, 1.5, True])
def test_rejects_bad_window(window):
    with pytest.raises(EquivalenceError, match="window"):
        metrics.coincidence_factor(np.zeros((1, 5, 1)), np.zeros((1, 5, 1)), window)

"""Seeded statistical tests of the rate, Poisson and raster encoders.

Each encoded neuron is ``N`` independent Bernoulli trials (samples x steps) of
probability ``p``, so its spike fraction has standard deviation
``sigma = sqrt(p (1 - p) / N)``. Checks accept ``|fraction - p| <= 5 sigma``:
a correct encoder fails one such check with probability below 6e-7, while the
model errors the tests target (a wrong scale, ``r dt`` in place of
``1 - exp(-r dt)``, a transposed neuron axis) are 10 sigma or more away. The
seeds are fixed, so every run draws the same spikes.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from snubridge.encoders import (
    poisson_encode,
    raster_encode,
    rate_encode,
    scale_intensities,
)
from snubridge.errors import DataError
from snubridge.spikes import SpikeData

N_SAMPLES = 200
N_STEPS = 500
TRIALS = N_SAMPLES * N_STEPS
SIGMAS = 5.0
INTENSITIES = np.array([0.0, 0.05, 0.25, 0.5, 0.73, 0.9, 1.0])


def _bound(p: np.ndarray, trials: int) -> np.ndarray:
    """Return the 5-sigma binomial bound on a spike fraction over ``trials``."""
    return SIGMAS * np.sqrt(p * (1 - p) / trials)


def _spike_fraction(data: SpikeData) -> np.ndarray:
    """Return the fraction of (sample, step) trials with a spike, per neuron."""
    return data.spikes.mean(axis=(0, 1))


def _tile(values: np.ndarray) -> np.ndarray:
    return np.tile(values, (N_SAMPLES, 1))


@pytest.mark.parametrize("max_probability", [1.0, 0.4])
def test_rate_fraction_matches_intensity(max_probability):
    data = rate_encode(
        _tile(INTENSITIES), N_STEPS, max_probability=max_probability, seed=11
    )
    expected = INTENSITIES * max_probability
    deviation = np.abs(_spike_fraction(data) - expected)
    assert np.all(deviation <= _bound(expected, TRIALS))


def test_rate_extremes_are_exact():
    data = rate_encode(_tile(np.array([0.0, 1.0])), N_STEPS, seed=3)
    assert data.spikes[:, :, 0].sum() == 0
    assert data.spikes[:, :, 1].all()


def test_rate_steps_independent():
    # Independent steps fire together in consecutive steps with probability
    # p^2; a draw reused along the time axis would give p.
    p = 0.3
    data = rate_encode(np.full((N_SAMPLES, 4), p), N_STEPS, seed=5)
    both = data.spikes[:, 1:, :] & data.spikes[:, :-1, :]
    trials = N_SAMPLES * (N_STEPS - 1) * 4
    assert abs(both.mean() - p**2) <= _bound(np.array(p**2), trials)


def test_rate_samples_differ():
    data = rate_encode(np.full((2, 50), 0.5), 100, seed=9)
    assert not np.array_equal(data.spikes[0], data.spikes[1])


def test_rate_uint8_scaled_by_255():
    pixels = np.array([[0, 51, 128, 255]], dtype=np.uint8).repeat(N_SAMPLES, 0)
    data = rate_encode(pixels, N_STEPS, seed=21)
    expected = np.array([0, 51, 128, 255]) / 255.0
    deviation = np.abs(_spike_fraction(data) - expected)
    assert np.all(deviation <= _bound(expected, TRIALS))


def test_rate_explicit_scale():
    values = np.full((N_SAMPLES, 1), 30, dtype=np.int16)
    data = rate_encode(values, N_STEPS, seed=2, scale=0.01)
    assert abs(_spike_fraction(data)[0] - 0.3) <= _bound(np.array(0.3), TRIALS)


def test_rate_same_seed_reproducible():
    values = np.random.default_rng(0).random((6, 10))
    first = rate_encode(values, 30, seed=123)
    second = rate_encode(values, 30, seed=123)
    np.testing.assert_array_equal(first.spikes, second.spikes)


def test_rate_different_seeds_differ():
    values = np.full((6, 10), 0.5)
    first = rate_encode(values, 30, seed=1)
    second = rate_encode(values, 30, seed=2)
    assert not np.array_equal(first.spikes, second.spikes)


def test_rate_generator_continues_stream():
    values = np.full((3, 8), 0.5)
    rng = np.random.default_rng(4)
    first = rate_encode(values, 20, seed=rng)
    second = rate_encode(values, 20, seed=rng)
    assert not np.array_equal(first.spikes, second.spikes)


def test_rate_blocks_cover_large_inputs():
    # 40 samples x 1000 steps x 200 neurons is two blocks of draws; the
    # second block must be filled too.
    data = rate_encode(np.full((40, 200), 0.5), 1000, seed=8)
    halves = data.spikes[:20].mean(), data.spikes[20:].mean()
    trials = 20 * 1000 * 200
    for fraction in halves:
        assert abs(fraction - 0.5) <= _bound(np.array(0.5), trials)


def test_rate_image_layout_kept():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 3, 17] = 255
    images[1, 20, 5] = 255
    data = rate_encode(images, 10, seed=0, labels=[4, 9])
    assert data.spikes.shape == (2, 10, 784)
    assert data.neuron_shape == (28, 28)
    assert data.labels.tolist() == [4, 9]
    assert data.spikes[0, :, 3 * 28 + 17].all()
    assert data.spikes.sum() == 20
    conv = data.to_array(np.float32, shape=(28, 28, 1))
    assert conv.shape == (2, 10, 28, 28, 1)
    assert conv[0, :, 3, 17, 0].all()
    assert conv[1, :, 20, 5, 0].all()
    assert conv.sum() == 20


def test_rate_dt_stored():
    data = rate_encode(np.full((N_SAMPLES, 1), 0.2), N_STEPS, seed=6, dt=5e-4)
    assert data.dt == 5e-4
    # Expected rate p / dt = 0.2 / 0.5 ms = 400 Hz.
    rate = data.rates().mean()
    assert abs(rate - 400.0) <= _bound(np.array(0.2), TRIALS)[()] / 5e-4


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.array([[0.2, np.nan]]), "must be finite"),
        (np.array([[0.2, np.inf]]), "must be finite"),
        (np.array([[0.2, -0.1]]), "negative"),
        (np.array([[0.2, 1.5]]), r"lie in \[0, 1\]"),
        (np.array([[10, 200]], dtype=np.int32), "explicit scale"),
        (np.array([["a", "b"]]), "numeric"),
        (np.array([0.1, 0.2]), r"\(samples, \*features\)"),
    ],
)
def test_rate_rejects_bad_intensities(values, match):
    with pytest.raises(DataError, match=match):
        rate_encode(values, 10, seed=0)


def test_rejects_above_one_after_scaling():
    pixels = np.array([[10, 200]], dtype=np.uint8)
    with pytest.raises(DataError, match="2 after scaling by 0.01"):
        scale_intensities(pixels, scale=0.01)


@pytest.mark.parametrize("max_probability", [0.0, -0.5, 1.5, np.nan])
def test_rate_rejects_bad_max_probability(max_probability):
    with pytest.raises(DataError, match="max_probability"):
        rate_encode(np.zeros((1, 2)), 10, max_probability=max_probability, seed=0)


@pytest.mark.parametrize("n_steps", [0, -3, 2.5, True])
def test_rejects_bad_n_steps(n_steps):
    with pytest.raises(DataError, match="n_steps"):
        rate_encode(np.zeros((1, 2)), n_steps, seed=0)


@pytest.mark.parametrize("seed", [None, -1, 1.5, True, "7"])
def test_rejects_bad_seed(seed):
    with pytest.raises(DataError, match="seed"):
        rate_encode(np.zeros((1, 2)), 10, seed=seed)


def test_poisson_fraction_matches_formula():
    max_rate, dt = 200.0, 1e-3
    data = poisson_encode(
        _tile(INTENSITIES), N_STEPS, max_rate_hz=max_rate, dt=dt, seed=17
    )
    expected = 1.0 - np.exp(-INTENSITIES * max_rate * dt)
    deviation = np.abs(_spike_fraction(data) - expected)
    assert np.all(deviation <= _bound(expected, TRIALS))
    # At r dt = 0.2 the formula gives 0.181; the naive r dt = 0.2 is far off.
    naive_gap = abs(_spike_fraction(data)[-1] - 0.2)
    # Twice the 5-sigma bound is 10 sigma.
    assert naive_gap > 2 * _bound(expected[-1:], TRIALS)[0]


def test_poisson_rate_in_hertz():
    max_rate, dt = 50.0, 1e-3
    data = poisson_encode(
        np.ones((N_SAMPLES, 1)), N_STEPS, max_rate_hz=max_rate, dt=dt, seed=4
    )
    p = -math.expm1(-max_rate * dt)
    expected_hz = p / dt  # 48.77 Hz
    bound_hz = _bound(np.array(p), TRIALS)[()] / dt
    assert abs(data.rates().mean() - expected_hz) <= bound_hz


def test_poisson_intervals_geometric():
    # Independent steps of probability p give geometric inter-spike intervals
    # with mean 1 / p steps and variance (1 - p) / p^2.
    max_rate, dt = 100.0, 1e-3
    data = poisson_encode(
        np.ones((N_SAMPLES, 1)), N_STEPS, max_rate_hz=max_rate, dt=dt, seed=12
    )
    p = -math.expm1(-max_rate * dt)
    intervals = np.concatenate(
        [np.diff(np.flatnonzero(train)) for train in data.spikes[:, :, 0]]
    )
    standard_error = math.sqrt((1 - p) / p**2 / intervals.size)
    assert abs(intervals.mean() - 1 / p) <= SIGMAS * standard_error


def test_poisson_reproducible_and_seed_dependent():
    values = np.full((4, 6), 0.8)
    first = poisson_encode(values, 40, max_rate_hz=300, seed=5)
    second = poisson_encode(values, 40, max_rate_hz=300, seed=5)
    third = poisson_encode(values, 40, max_rate_hz=300, seed=6)
    np.testing.assert_array_equal(first.spikes, second.spikes)
    assert not np.array_equal(first.spikes, third.spikes)


def test_poisson_warns_when_steps_saturate(caplog):
    with caplog.at_level(logging.WARNING, logger="snubridge.encoders"):
        poisson_encode(np.ones((1, 1)), 5, max_rate_hz=500, dt=1e-3, seed=0)
    records = [r for r in caplog.records if r.name == "snubridge.encoders"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING


def test_poisson_quiet_below_saturation(caplog):
    with caplog.at_level(logging.WARNING, logger="snubridge.encoders"):
        poisson_encode(np.ones((1, 1)), 5, max_rate_hz=50, dt=1e-3, seed=0)
    assert not [r for r in caplog.records if r.name == "snubridge.encoders"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_rate_hz": 0.0}, "max_rate_hz"),
        ({"max_rate_hz": np.inf}, "max_rate_hz"),
        ({"max_rate_hz": 100.0, "dt": 0.0}, "dt"),
        ({"max_rate_hz": 100.0, "dt": -1e-3}, "dt"),
    ],
)
def test_poisson_rejects_bad_parameters(kwargs, match):
    with pytest.raises(DataError, match=match):
        poisson_encode(np.zeros((1, 2)), 10, seed=0, **kwargs)


def test_poisson_rejects_nan_intensity():
    with pytest.raises(DataError, match="must be finite"):
        poisson_encode(np.array([[np.nan]]), 10, max_rate_hz=10.0, seed=0)


def test_raster_flattens_neuron_axes():
    raster = np.zeros((2, 3, 4, 5), dtype=np.int8)
    raster[1, 2, 3, 1] = 1
    data = raster_encode(raster, dt=2e-3, labels=[0, 1])
    assert data.spikes.shape == (2, 3, 20)
    assert data.neuron_shape == (4, 5)
    assert data.spikes[1, 2, 3 * 5 + 1]
    assert data.spikes.sum() == 1
    assert data.dt == 2e-3
    np.testing.assert_array_equal(data.to_array(np.int8, shape=(4, 5)), raster)


def test_raster_rejects_non_binary():
    with pytest.raises(DataError, match="must be 0 or 1"):
        raster_encode(np.full((1, 2, 2), 0.5))


def test_raster_rejects_two_axes():
    with pytest.raises(DataError, match="add a samples axis"):
        raster_encode(np.zeros((3, 4)))

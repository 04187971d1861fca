"""Statistics of the PCM device models against their published formulas.

Every expected value is computed here from the formulas of Joshi et al.
(Nat. Commun. 11, 2473, 2020) and Nandakumar et al. (J. Appl. Phys. 124,
152135, 2018) written out by hand, not by calling the model. Tolerances are
multiples of the standard error of the estimate for the sample size used.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from snubridge.errors import DeviceError
from snubridge.pcm.crossbar import CrossbarConfig
from snubridge.pcm.devices import (
    PulsePCM,
    StatisticalPCM,
    device_from_name,
    joshi_2020,
    nandakumar_2018,
)

N = 40_000


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _normal_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _folded_moments(mu: float, sigma: float) -> tuple[float, float]:
    """Mean and standard deviation of |X| for X ~ N(mu, sigma^2)."""
    mean = sigma * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sigma**2)) + mu * (
        1 - 2 * _normal_cdf(-mu / sigma)
    )
    return mean, math.sqrt(mu**2 + sigma**2 - mean**2)


def _rectified_mean(mu: float, sigma: float) -> float:
    """Mean of max(X, 0) for X ~ N(mu, sigma^2)."""
    return mu * _normal_cdf(mu / sigma) + sigma * _normal_pdf(mu / sigma)


@pytest.mark.parametrize("target", [2.0, 9.0, 17.5, 24.0])
def test_programming_noise_spread(target):
    device = joshi_2020()
    rng = np.random.default_rng(11)
    programmed = device.program(np.full(N, target), rng)
    x = target / 25.0
    expected = 0.26348 + 1.9650 * x - 1.1731 * x**2
    # Clipping at g_max trims the upper tail for targets near 25 uS.
    if target + 4 * expected < 25.0:
        measured = np.std(programmed - target, ddof=1)
        assert abs(measured / expected - 1) < 4 / math.sqrt(2 * N)
        assert abs(np.mean(programmed - target)) < 4 * expected / math.sqrt(N)
    assert programmed.max() <= 25.0
    assert programmed.min() >= 0.0


def test_programming_noise_scales_with_g_max():
    device = joshi_2020(g_max=10.0)
    x = 4.0 / 10.0
    expected = (0.26348 + 1.9650 * x - 1.1731 * x**2) * 10.0 / 25.0
    assert device.programming_sigma(np.array([4.0]))[0] == pytest.approx(expected)


@pytest.mark.parametrize("target", [1.25, 5.0, 20.0])
def test_drift_exponent_recovered(target):
    # Read noise off, so two reads give each device's exponent exactly.
    device = joshi_2020(read_noise_scale=0.0, programming_noise_scale=0.0)
    rng = np.random.default_rng(5)
    g_target = np.full(N, target)
    g_programmed = device.program(g_target, rng)
    nu = device.sample_drift_exponents(g_target, rng)
    early, _ = device.state_at(g_programmed, nu, 100.0, rng)
    late, _ = device.state_at(g_programmed, nu, 1e6, rng)
    recovered = -np.log(late / early) / math.log((1e6 + 20.0) / (100.0 + 20.0))
    x = target / 25.0
    mu = min(max(-0.0155 * math.log(x) + 0.0244, 0.049), 0.1)
    sigma = min(max(-0.0125 * math.log(x) - 0.0059, 0.008), 0.045)
    mean, spread = _folded_moments(mu, sigma)
    assert abs(recovered.mean() - mean) < 4 * spread / math.sqrt(N)
    assert abs(recovered.std(ddof=1) / spread - 1) < 5 / math.sqrt(2 * N)


def test_pulse_model_drift_follows_power_law():
    device = nandakumar_2018(drift_exponent_spread=0.01)
    rng = np.random.default_rng(8)
    g = np.full(N, 6.0)
    nu = device.sample_drift_exponents(g, rng)
    state, _ = device.state_at(g, nu, 3600.0, rng)
    recovered = -np.log(state / g) / math.log(3600.0 / 38.6)
    mean, spread = _folded_moments(0.04, 0.01)
    assert abs(recovered.mean() - mean) < 4 * spread / math.sqrt(N)
    assert abs(recovered.std(ddof=1) / spread - 1) < 5 / math.sqrt(2 * N)


@pytest.mark.parametrize("seconds", [0.0, 3600.0, 3.15e7])
def test_read_noise_spread_statistical(seconds):
    device = joshi_2020(drift_scale=0.0)
    rng = np.random.default_rng(2)
    g = np.full(N, 6.0)
    drifted, spread = device.state_at(g, np.zeros(N), seconds, rng)
    ratio = 6.0 / 25.0
    q_s = min(0.0088 / max(ratio**0.65, 1e-3), 0.2)
    expected = 6.0 * q_s * math.sqrt(math.log((seconds + 20.0 + 250e-9) / (2 * 250e-9)))
    np.testing.assert_allclose(spread, expected, rtol=1e-12)
    # The same spread once per state in "per_state" mode.
    per_state = joshi_2020(drift_scale=0.0, read_noise_mode="per_state")
    sampled, zero = per_state.state_at(g, np.zeros(N), seconds, rng)
    assert np.all(zero == 0)
    assert abs(np.std(sampled - 6.0, ddof=1) / expected - 1) < 4 / math.sqrt(2 * N)
    assert np.all(drifted == 6.0)


def test_read_noise_grows_with_conductance_pulse():
    device = nandakumar_2018()
    spread = device.read_sigma(np.array([0.1, 5.0, 10.0]))
    np.testing.assert_allclose(
        spread, [0.03 * 0.1 + 0.13, 0.03 * 5 + 0.13, 0.03 * 10 + 0.13]
    )


@pytest.mark.parametrize("start", [0.1, 4.0, 9.0])
def test_set_pulse_increment_distribution(start):
    device = nandakumar_2018()
    rng = np.random.default_rng(3)
    after = device.set_pulse(np.full(N, start), rng)
    increment = after - start
    mu = -0.084 * start + 0.892
    sigma = 0.09 * start + 0.575
    expected = _rectified_mean(mu, sigma)
    assert abs(increment.mean() - expected) < 4 * sigma / math.sqrt(N)
    assert increment.min() >= 0.0
    # Increments below 0 are clipped: their share is the Gaussian mass below 0.
    zero_share = np.mean(increment == 0.0)
    assert abs(zero_share - _normal_cdf(-mu / sigma)) < 4 * math.sqrt(0.25 / N)


def test_negative_increments_allowed_when_asked():
    device = nandakumar_2018(allow_negative_increments=True)
    rng = np.random.default_rng(4)
    increment = device.set_pulse(np.full(N, 2.0), rng) - 2.0
    mu = -0.084 * 2.0 + 0.892
    sigma = 0.09 * 2.0 + 0.575
    assert abs(increment.mean() - mu) < 4 * sigma / math.sqrt(N)
    assert abs(increment.std(ddof=1) / sigma - 1) < 4 / math.sqrt(2 * N)


def test_conductance_bounds_never_exceeded():
    rng = np.random.default_rng(9)
    noisy = joshi_2020(
        programming_noise_scale=20.0, read_noise_mode="per_state", read_noise_scale=20.0
    )
    targets = rng.uniform(0.0, 25.0, N)
    programmed = noisy.program(targets, rng)
    assert programmed.min() >= 0.0
    assert programmed.max() <= 25.0
    nu = noisy.sample_drift_exponents(targets, rng)
    for seconds in (0.0, 1.0, 86400.0, 3.15e7):
        state, _ = noisy.state_at(programmed, nu, seconds, rng)
        assert state.min() >= 0.0
        assert state.max() <= 25.0
    pulse = nandakumar_2018(allow_negative_increments=True, increment_mean_slope=0.0)
    g = pulse.reset((N,), rng)
    for _ in range(40):
        g = pulse.set_pulse(g, rng)
        assert g.min() >= 0.0
        assert g.max() <= pulse.g_max


def test_pulse_one_shot_lands_near_target():
    device = nandakumar_2018()
    rng = np.random.default_rng(6)
    programmed = device.program(np.full(N, 5.0), rng)
    assert abs(np.median(programmed) - 5.0) < 1.0


def test_presets_by_name():
    assert isinstance(device_from_name("statistical"), StatisticalPCM)
    assert isinstance(device_from_name("Pulse"), PulsePCM)
    with pytest.raises(DeviceError, match="expected one of"):
        device_from_name("rram")


@pytest.mark.parametrize(
    ("factory", "field", "value"),
    [
        (StatisticalPCM, "g_max", 0.0),
        (StatisticalPCM, "g_max", -5.0),
        (StatisticalPCM, "g_max", float("nan")),
        (StatisticalPCM, "t0", 0.0),
        (StatisticalPCM, "drift_mean_bounds", (0.1, 0.05)),
        (StatisticalPCM, "drift_std_bounds", (0.04, 0.04)),
        (StatisticalPCM, "read_noise_mode", "sometimes"),
        (StatisticalPCM, "programming_noise_scale", -1.0),
        (PulsePCM, "g_max", 0.0),
        (PulsePCM, "g_reset", 30.0),
        (PulsePCM, "t0", float("inf")),
        (PulsePCM, "increment_mean_offset", float("nan")),
        (CrossbarConfig, "tile_rows", 0),
        (CrossbarConfig, "tile_cols", -3),
        (CrossbarConfig, "dac_bits", 0),
        (CrossbarConfig, "adc_bits", 17),
        (CrossbarConfig, "dac_bits", 4.5),
        (CrossbarConfig, "dac_range", (1.0, -1.0)),
        (CrossbarConfig, "adc_range", (3.0, 3.0)),
        (CrossbarConfig, "dac_range", (float("nan"), 1.0)),
        (CrossbarConfig, "output_noise", -0.1),
        (CrossbarConfig, "mapping", "row"),
    ],
)
def test_bad_configuration_names_field(factory, field, value):
    with pytest.raises(DeviceError, match=field):
        factory(**{field: value})

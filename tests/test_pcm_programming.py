"""Programming: program-and-verify, differential pairs, refresh, PCMWeight pulses."""

from __future__ import annotations

import numpy as np
import pytest

from snubridge.errors import DeviceError
from snubridge.pcm.devices import joshi_2020, nandakumar_2018
from snubridge.pcm.hwloop import (
    Adam,
    PCMWeight,
    expected_increment,
    mean_set_increment,
    train_in_the_loop,
)
from snubridge.pcm.programming import (
    DifferentialPair,
    program_and_verify,
    program_one_shot,
)


def test_verify_narrows_pulse_programming():
    device = nandakumar_2018()
    rng = np.random.default_rng(0)
    targets = np.full(5000, 6.0)
    blind = program_one_shot(device, targets, rng)
    verified, iterations = program_and_verify(device, targets, rng, tolerance=0.5)
    assert iterations > 1
    assert np.std(verified - 6.0) < 0.5 * np.std(blind - 6.0)
    # Reads carry noise of 0.03 * 6 + 0.13 = 0.31 uS, so allow three of them.
    assert np.mean(np.abs(verified - 6.0) < 0.5 + 3 * 0.31) > 0.99


def test_verify_narrows_statistical_programming():
    device = joshi_2020()
    rng = np.random.default_rng(1)
    targets = np.full(5000, 12.0)
    blind = program_one_shot(device, targets, rng)
    verified, _ = program_and_verify(device, targets, rng, tolerance=0.3)
    assert np.std(verified - 12.0) < 0.8 * np.std(blind - 12.0)


def test_verify_rejects_bad_settings():
    with pytest.raises(DeviceError, match="tolerance"):
        program_and_verify(
            joshi_2020(), np.ones(3), np.random.default_rng(0), tolerance=0
        )
    with pytest.raises(DeviceError, match="max_iterations"):
        program_and_verify(
            joshi_2020(), np.ones(3), np.random.default_rng(0), max_iterations=0
        )


def test_differential_pair_only_increases_until_refresh():
    device = nandakumar_2018()
    rng = np.random.default_rng(2)
    pair = DifferentialPair((400,), device, rng)
    refreshed_any = False
    for _ in range(60):
        increase = rng.random(400) < 0.6
        decrease = ~increase & (rng.random(400) < 0.5)
        before_plus, before_minus = pair.g_plus.copy(), pair.g_minus.copy()
        refreshed = pair.pulse(increase, decrease)
        kept = ~refreshed
        assert np.all(pair.g_plus[kept] >= before_plus[kept])
        assert np.all(pair.g_minus[kept] >= before_minus[kept])
        # Devices that got no pulse and no refresh do not move.
        idle = kept & ~increase
        assert np.all(pair.g_plus[idle] == before_plus[idle])
        refreshed_any |= bool(refreshed.any())
        assert pair.g_plus.max() <= device.g_max
    assert refreshed_any
    assert pair.refreshes > 0


def test_refresh_happens_near_saturation_and_keeps_difference():
    device = nandakumar_2018()
    rng = np.random.default_rng(3)
    pair = DifferentialPair((2000,), device, rng)
    threshold = pair.refresh_threshold
    assert threshold == pytest.approx(0.9 * 0.892 / 0.084)
    pair.program(np.full(2000, 3.0))
    pair.g_minus = np.full(2000, 2.0)
    pair.g_plus = np.full(2000, threshold - 1e-9)
    difference = threshold - 2.0
    refreshed = pair.refresh_saturated()
    assert not refreshed.any()
    pair.g_plus = np.full(2000, threshold)
    refreshed = pair.refresh_saturated()
    assert refreshed.all()
    assert pair.g_plus.max() < threshold
    assert np.all(pair.g_minus < 1.0)
    # The rewritten difference is close to the one read before the refresh.
    assert abs(np.median(pair.difference()) - difference) < 0.6


def test_pair_needs_pulse_model():
    with pytest.raises(DeviceError, match="PulsePCM"):
        DifferentialPair((3,), joshi_2020(), np.random.default_rng(0))


def test_pcm_weight_accumulates_then_pulses():
    weight = PCMWeight(np.zeros((2, 3)), rng=4, weight_range=1.0)
    before_plus = weight.pair.g_plus.copy()
    before_minus = weight.pair.g_minus.copy()
    small = np.full((2, 3), 0.4 * weight.step)
    assert weight.apply_update(small) == 0
    np.testing.assert_allclose(weight.accumulator, small)
    np.testing.assert_array_equal(weight.pair.g_plus, before_plus)
    # A second update crosses one step on (0, 0) only, upwards, and (1, 2) downwards.
    update = np.zeros((2, 3))
    update[0, 0] = 0.7 * weight.step
    update[1, 2] = -1.5 * weight.step
    assert weight.apply_update(update) == 2
    assert weight.pair.g_plus[0, 0] >= before_plus[0, 0]
    assert weight.pair.g_minus[1, 2] >= before_minus[1, 2]
    assert weight.accumulator[0, 0] == pytest.approx(0.1 * weight.step)
    assert weight.accumulator[1, 2] == pytest.approx(-0.1 * weight.step)


def test_pcm_weight_rejects_bad_update():
    weight = PCMWeight(np.zeros((2, 2)), rng=0)
    with pytest.raises(DeviceError, match="shape"):
        weight.apply_update(np.zeros(3))
    with pytest.raises(DeviceError, match="NaN"):
        weight.apply_update(np.full((2, 2), np.nan))


def test_hardware_loop_fits_linear_map():
    rng = np.random.default_rng(5)
    truth = np.array([[0.6, -0.3], [-0.5, 0.2], [0.1, 0.4]])
    inputs = rng.normal(size=(256, 3))
    targets = inputs @ truth
    weight = PCMWeight(np.zeros((3, 2)), rng=6, weight_range=1.5)

    def gradient(values):
        error = inputs @ values["w"] - targets
        return float(np.mean(error**2)), {"w": 2 * inputs.T @ error / len(inputs)}

    history = train_in_the_loop(
        {"w": weight}, gradient, steps=300, learning_rate=0.02, rule="adam"
    )
    # One pulse moves a weight by about 0.12 here, with a spread of about as
    # much, so the loss settles at a floor set by the pulse noise. The mean of
    # the last 50 steps averages out the read noise of single steps.
    assert np.mean(history[-50:]) < 0.2 * history[0]
    assert np.max(np.abs(weight.value() - truth)) < 0.25


def test_adam_first_step_is_learning_rate():
    rule = Adam(learning_rate=0.01)
    step = rule.update("w", np.array([3.0, -0.2]))
    np.testing.assert_allclose(step, [-0.01, 0.01], rtol=1e-4)


def test_expected_increment_matches_sampled_pulses():
    device = nandakumar_2018()
    rng = np.random.default_rng(31)
    for g in (0.1, 4.0, 9.0):
        start = np.full(200_000, g)
        sampled = device.set_pulse(start, rng) - start
        spread = sampled.std() / np.sqrt(sampled.size)
        assert abs(sampled.mean() - expected_increment(device, g)) < 4 * spread
    # Without the clip at 0 the expectation is the Gaussian mean m1 G + c1.
    unclipped = nandakumar_2018(allow_negative_increments=True)
    assert expected_increment(unclipped, 9.0) == pytest.approx(-0.084 * 9 + 0.892)


def test_mean_set_increment_matches_monte_carlo():
    device = nandakumar_2018()
    rng = np.random.default_rng(32)
    threshold = 0.9 * device.g_saturation
    g = device.reset((20_000,), rng)
    start = g.copy()
    pulses = np.zeros(g.shape)
    active = np.ones(g.shape, dtype=bool)
    while active.any():
        g = device.set_pulse(g, rng, active)
        pulses += active
        active &= g < threshold
    # Total rise over total pulses of devices pulsed from RESET to the threshold.
    simulated = (g - start).sum() / pulses.sum()
    epsilon = mean_set_increment(device, threshold)
    assert epsilon == pytest.approx(simulated, rel=0.03)
    assert epsilon < expected_increment(device, device.g_reset)
    weight = PCMWeight(np.zeros((2, 2)), rng=3)
    assert weight.step * weight.scale == pytest.approx(epsilon)
    with pytest.raises(DeviceError, match="g_stop"):
        mean_set_increment(device, 0.05)

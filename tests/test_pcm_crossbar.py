"""Crossbar reads: converters, tiling, the fast path against the reference path.

Weights are asymmetric and matrices are not square, so a transposed matrix or
a swapped tile fails. Expected means and variances are written out from the
read equation of :mod:`snubridge.pcm.crossbar`; the fast path and the plain
per-tile loops must both match them and each other in distribution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from snubridge.errors import DeviceError
from snubridge.pcm.crossbar import (
    AnalogMatrix,
    CrossbarConfig,
    MatrixState,
    fast_standard_normal,
    quantize_uniform,
    tile_slices,
)
from snubridge.pcm.devices import joshi_2020, nandakumar_2018
from snubridge.pcm.reference_path import reference_matmul

IDEAL = dict(dac_bits=None, adc_bits=None, adc_range=None)


def _weights(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    # Row- and column-dependent offsets make the matrix clearly asymmetric.
    base = rng.normal(0.0, 0.3, (rows, cols))
    return base + np.linspace(-0.2, 0.4, rows)[:, None] * np.linspace(1.0, -0.5, cols)


def _noise_free_statistical():
    return joshi_2020(
        programming_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0
    )


def test_quantize_uniform_signed_grid():
    values = np.array([-2.0, -0.5, 0.0, 0.3, 0.999, 1.5])
    result = quantize_uniform(values, 8, -1.0, 1.0)
    expected = np.array([-127, round(-0.5 * 127), 0, round(0.3 * 127), 127, 127]) / 127
    np.testing.assert_allclose(result, expected)


def test_quantize_uniform_one_sided_grid():
    values = np.array([-0.2, 0.1, 0.5, 2.0])
    result = quantize_uniform(values, 3, 0.0, 1.0)
    np.testing.assert_allclose(result, [0.0, 1 / 7, 4 / 7, 1.0])


def test_quantize_uniform_ideal_only_clips():
    np.testing.assert_array_equal(
        quantize_uniform(np.array([-3.0, 0.123, 4.0]), None, -1.0, 2.0),
        [-1.0, 0.123, 2.0],
    )


def test_tile_slices_cover_matrix():
    config = CrossbarConfig(tile_rows=512, tile_cols=512)
    assert len(tile_slices(784, 256, config)) == 2
    tiles = tile_slices(1000, 600, config)
    assert len(tiles) == 4
    covered = np.zeros((1000, 600), dtype=int)
    for rows, cols in tiles:
        covered[rows, cols] += 1
    assert np.all(covered == 1)


def test_noise_free_read_equals_product():
    rng = np.random.default_rng(0)
    weights = _weights(rng, 37, 11)
    config = CrossbarConfig(tile_rows=8, tile_cols=5, read_noise=False, **IDEAL)
    matrix = AnalogMatrix(weights, _noise_free_statistical(), config, rng)
    state = matrix.state(3600.0, rng)
    inputs = rng.uniform(-1.0, 1.0, (6, 37))
    expected = inputs @ weights
    fast = state.matmul(inputs, rng)
    reference = reference_matmul(state, inputs, rng)
    tolerance = 64 * np.finfo(np.float32).eps * np.abs(inputs) @ np.abs(weights)
    assert np.all(np.abs(fast - expected) <= tolerance)
    assert np.all(np.abs(reference - expected) <= tolerance)
    assert not np.allclose(fast, inputs @ weights[::-1])


def test_column_mapping_scales_each_column():
    rng = np.random.default_rng(1)
    weights = _weights(rng, 9, 4)
    config = CrossbarConfig(mapping="column", read_noise=False, **IDEAL)
    matrix = AnalogMatrix(weights, _noise_free_statistical(), config, rng)
    np.testing.assert_allclose(matrix.scale, 25.0 / np.abs(weights).max(axis=0))
    peak = np.maximum(matrix.g_plus, matrix.g_minus).max(axis=0)
    np.testing.assert_allclose(peak, 25.0)
    summary = matrix.summary()
    assert summary["mapping"] == "column"
    assert len(summary["scale_us_per_unit"]) == 4
    assert summary["devices"] == 2 * 9 * 4


def _read_statistics(outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return outputs.mean(axis=0), outputs.var(axis=0, ddof=1)


@pytest.mark.parametrize("binary", [True, False])
def test_fast_and_reference_agree_with_formula(binary):
    rng = np.random.default_rng(7)
    weights = _weights(rng, 21, 6)
    config = CrossbarConfig(tile_rows=8, tile_cols=4, output_noise=0.05, **IDEAL)
    matrix = AnalogMatrix(weights, joshi_2020(), config, rng)
    state = matrix.state(86400.0, rng)
    if binary:
        x = (rng.random(21) < 0.5).astype(float)
    else:
        x = rng.uniform(-1.0, 1.0, 21)
    reads = 4000
    fast = state.matmul(np.tile(x, (reads, 1)), rng)
    reference = reference_matmul(state, np.tile(x, (reads, 1)), rng)
    # Expected from the read equation: g_range = 25 uS, x_fs = 1.
    to_units = 25.0 / matrix.scale
    mean = x @ (state.g_plus - state.g_minus) / 25.0 * to_units
    row_tiles = math.ceil(21 / 8)
    variance = (
        (x**2) @ (state.sigma_plus**2 + state.sigma_minus**2) / 25.0**2
        + row_tiles * 0.05**2
    ) * to_units**2
    for outputs in (fast, reference):
        measured_mean, measured_var = _read_statistics(outputs)
        assert np.all(np.abs(measured_mean - mean) < 4.5 * np.sqrt(variance / reads))
        assert np.all(np.abs(measured_var / variance - 1) < 4.5 * math.sqrt(2 / reads))
    # Two-sample Kolmogorov-Smirnov distance on every output column.
    for column in range(6):
        a = np.sort(fast[:, column])
        b = np.sort(reference[:, column])
        grid = np.concatenate([a, b])
        distance = (
            np.max(
                np.abs(
                    np.searchsorted(a, grid, "right")
                    - np.searchsorted(b, grid, "right")
                )
            )
            / reads
        )
        # 1.73 sqrt(2/n) is the 0.5 % critical value of the two-sample KS test.
        assert distance < 1.73 * math.sqrt(2 / reads)


def test_fast_and_reference_agree_with_adc():
    rng = np.random.default_rng(12)
    weights = _weights(rng, 19, 5)
    config = CrossbarConfig(
        tile_rows=10, tile_cols=3, dac_bits=4, adc_bits=5, adc_range=(-1.5, 1.5)
    )
    matrix = AnalogMatrix(weights, nandakumar_2018(), config, rng)
    state = matrix.state(600.0, rng)
    x = rng.uniform(-0.8, 1.0, 19)
    reads = 3000
    fast = state.matmul(np.tile(x, (reads, 1)), rng)
    reference = reference_matmul(state, np.tile(x, (reads, 1)), rng)
    for column in range(5):
        values = np.union1d(fast[:, column], reference[:, column])
        fast_counts = np.array([np.sum(np.isclose(fast[:, column], v)) for v in values])
        ref_counts = np.array(
            [np.sum(np.isclose(reference[:, column], v)) for v in values]
        )
        keep = fast_counts + ref_counts >= 20
        assert keep.sum() >= 2
        # Chi-square homogeneity test of the two histograms of ADC codes.
        total = fast_counts[keep] + ref_counts[keep]
        chi2 = np.sum((fast_counts[keep] - ref_counts[keep]) ** 2 / total)
        dof = keep.sum() - 1
        assert chi2 < dof + 5 * math.sqrt(2 * dof)


def test_fast_normal_table_statistics():
    rng = np.random.default_rng(3)
    values = fast_standard_normal(rng, (400_000,))
    assert values.dtype == np.float32
    assert abs(values.mean()) < 4 / math.sqrt(values.size)
    assert abs(values.var() - 1) < 4 * math.sqrt(2 / values.size)
    assert abs(np.mean(values < -1.0) - 0.158655) < 4 * math.sqrt(0.134 / values.size)


def test_drift_compensation_restores_uniform_drift():
    rng = np.random.default_rng(4)
    weights = _weights(rng, 30, 8)
    device = nandakumar_2018(read_noise_offset=0.0, read_noise_slope=0.0)
    config = CrossbarConfig(read_noise=False, **IDEAL)
    matrix = AnalogMatrix(weights, device, config, rng)
    matrix.record_reference(rng)
    at_programming = matrix.state(device.t0, rng).matmul(np.eye(30), rng)
    state = matrix.state(3.15e7, rng)
    alpha = state.compensate_drift(rng)
    assert alpha == pytest.approx((3.15e7 / 38.6) ** 0.04, rel=1e-5)
    np.testing.assert_allclose(
        state.matmul(np.eye(30), rng), at_programming, rtol=1e-5, atol=1e-6
    )


def test_compensation_needs_reference():
    rng = np.random.default_rng(4)
    matrix = AnalogMatrix(
        _weights(rng, 5, 3), joshi_2020(), CrossbarConfig(**IDEAL), rng
    )
    with pytest.raises(DeviceError, match="record_reference"):
        matrix.state(10.0, rng).compensate_drift(rng)


def test_calibrated_adc_needs_inputs():
    rng = np.random.default_rng(4)
    with pytest.raises(DeviceError, match="calibration"):
        AnalogMatrix(_weights(rng, 5, 3), joshi_2020(), CrossbarConfig(), rng)


def test_calibrated_adc_covers_ideal_outputs():
    rng = np.random.default_rng(5)
    weights = _weights(rng, 12, 4)
    inputs = rng.uniform(0, 1, (50, 12))
    matrix = AnalogMatrix(
        weights,
        joshi_2020(),
        CrossbarConfig(adc_headroom=1.5),
        rng,
        calibration_inputs=inputs,
    )
    ideal = np.abs(inputs @ (weights * matrix.scale) / 25.0).max()
    assert matrix.adc_range[1] == pytest.approx(1.5 * ideal, rel=0.02)


def test_bad_weights_and_inputs():
    rng = np.random.default_rng(6)
    config = CrossbarConfig(**IDEAL)
    with pytest.raises(DeviceError, match="NaN"):
        AnalogMatrix(np.array([[1.0, np.nan]]), joshi_2020(), config, rng)
    matrix = AnalogMatrix(_weights(rng, 4, 3), joshi_2020(), config, rng)
    with pytest.raises(DeviceError, match=r"\(rows, 4\)"):
        matrix.state(1.0, rng).matmul(np.ones((2, 3)), rng)


def _exact_spread(state, inputs: np.ndarray) -> np.ndarray:
    # Output read-noise spread per row tile from the read equation, in float64,
    # without the fast path's matrices: sqrt(x^2 @ (sigma+^2 + sigma-^2)) / g.
    matrix = state.matrix
    variance = (state.sigma_plus**2 + state.sigma_minus**2) / matrix.g_range**2
    spreads = []
    for start in range(0, matrix.shape[0], matrix.config.tile_rows):
        block = slice(start, start + matrix.config.tile_rows)
        spreads.append(np.sqrt(np.square(inputs[:, block]) @ variance[block]))
    return np.concatenate(spreads, axis=1)


def _low_rank_spread(state, inputs: np.ndarray) -> np.ndarray:
    codes = inputs.astype(np.float32)
    binary = bool(np.all((codes == 0) | (codes == 1)))
    spreads = [
        np.sqrt(tile.mean_and_variance(codes, binary)[1]) for tile in state._blocks
    ]
    return np.concatenate(spreads, axis=1)


def _mnist_principal_weights(n_out: int) -> tuple[np.ndarray, np.ndarray]:
    from snubridge.data.mnist import load_mnist

    folder = "/work/shared/data/mnist"
    try:
        digits = load_mnist(folder, "test")
    except OSError:
        pytest.skip(f"MNIST test set not found in {folder}")
    images = digits.images.reshape(-1, 784).astype(np.float64)
    images /= images.max()
    centred = images[:3000] - images[:3000].mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    weights = vectors[:, ::-1][:, :n_out] * np.linspace(1.0, 0.2, n_out)
    return weights, (images[3000:3600] > 0.5).astype(np.float64)


@pytest.mark.parametrize(("source", "tolerance"), [("random", 0.05), ("mnist", 0.1)])
def test_low_rank_spread_within_bound(source, tolerance):
    rng = np.random.default_rng(21)
    if source == "random":
        weights = _weights(rng, 600, 48)
        density = rng.uniform(0.1, 0.5, (600, 1))
        inputs = (rng.random((600, 600)) < density).astype(float)
    else:
        # Principal directions of MNIST span a wide range of |w|, so their
        # read-noise variances vary more and need a looser bound than 5 %.
        weights, inputs = _mnist_principal_weights(48)
    config = CrossbarConfig(variance="low_rank", variance_tolerance=tolerance, **IDEAL)
    state = AnalogMatrix(weights, joshi_2020(), config, rng).state(86400.0, rng)
    assert any(tile.low_rank for tile in state._blocks)
    exact = _exact_spread(state, inputs)
    approximate = _low_rank_spread(state, inputs)
    error = np.where(exact > 0, approximate / np.where(exact > 0, exact, 1.0) - 1, 0)
    worst_column_rms = np.sqrt(np.mean(error**2, axis=0)).max()
    assert worst_column_rms <= config.variance_tolerance
    # The approximation is in use: its spreads are not the exact ones.
    assert worst_column_rms > 0.002
    exact_mode = AnalogMatrix(
        weights, joshi_2020(), CrossbarConfig(variance="exact", **IDEAL), rng
    ).state(86400.0, rng)
    exact_spreads = _low_rank_spread(exact_mode, inputs)
    np.testing.assert_allclose(
        exact_spreads, _exact_spread(exact_mode, inputs), rtol=1e-4, atol=1e-9
    )


def test_low_rank_falls_back_for_sparse_reads():
    rng = np.random.default_rng(22)
    weights = _weights(rng, 300, 20)
    config = CrossbarConfig(variance="low_rank", variance_tolerance=0.05, **IDEAL)
    state = AnalogMatrix(weights, joshi_2020(), config, rng).state(86400.0, rng)
    tile = state._blocks[0]
    assert tile.low_rank
    assert tile.min_inputs > 3
    inputs = np.zeros((5, 300))
    inputs[np.arange(5)[:, None], rng.choice(300, (5, 3), replace=True)] = 1.0
    np.testing.assert_allclose(
        _low_rank_spread(state, inputs), _exact_spread(state, inputs), rtol=1e-5
    )


def _pooled_ks(first: np.ndarray, second: np.ndarray) -> float:
    a, b = np.sort(first.ravel()), np.sort(second.ravel())
    grid = np.concatenate([a, b])
    distance = np.abs(
        np.searchsorted(a, grid, "right") / a.size
        - np.searchsorted(b, grid, "right") / b.size
    )
    return float(distance.max())


def test_low_rank_mode_agrees_with_reference():
    rng = np.random.default_rng(23)
    weights = _weights(rng, 200, 8)
    config = CrossbarConfig(
        variance="low_rank", variance_tolerance=0.03, output_noise=0.0, **IDEAL
    )
    matrix = AnalogMatrix(weights, joshi_2020(), config, rng)
    state = matrix.state(86400.0, rng)
    x = (rng.random(200) < 0.8).astype(float)
    assert state._blocks[0].low_rank
    assert x.sum() >= state._blocks[0].min_inputs
    reads = 3000
    inputs = np.tile(x, (reads, 1))
    # Standardise every column by the read equation, then pool the columns.
    to_units = 25.0 / matrix.scale
    mean = x @ (state.g_plus - state.g_minus) / 25.0 * to_units
    spread = _exact_spread(state, x[None, :])[0] * to_units

    def standardised(outputs):
        return (outputs - mean) / spread

    reference = standardised(reference_matmul(state, inputs, rng))
    fast = standardised(state.matmul(inputs, rng))
    louder = MatrixState(
        matrix,
        state.time,
        state.g_plus,
        state.g_minus,
        1.1 * state.sigma_plus,
        1.1 * state.sigma_minus,
    )
    fast_louder = standardised(louder.matmul(inputs, rng))
    # 1.73 sqrt(2/n) is the 0.5 % critical value of the two-sample KS test.
    critical = 1.73 * math.sqrt(2 / fast.size)
    assert _pooled_ks(fast, reference) < critical
    # The test has the power to see 10 % more read noise.
    assert _pooled_ks(fast_louder, reference) > critical


def test_variance_settings_validated():
    with pytest.raises(DeviceError, match="variance="):
        CrossbarConfig(variance="svd")
    with pytest.raises(DeviceError, match="variance_rank"):
        CrossbarConfig(variance_rank=0)
    with pytest.raises(DeviceError, match="variance_tolerance"):
        CrossbarConfig(variance_tolerance=0.0)

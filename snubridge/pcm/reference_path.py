"""Plain per-read, per-tile crossbar reads: the second implementation for tests.

Every read loops over the tiles and draws the read noise of every device of
the tile explicitly, then adds output noise and digitises with the ADC, as
stated in :mod:`snubridge.pcm.crossbar`. It shares no arithmetic with the fast
path beyond the DAC/ADC rounding rule. It is a few hundred times slower on a
784 x 256 matrix (``benchmarks/bench_pcm.py speed``).
"""

from __future__ import annotations

import logging

import numpy as np

from snubridge.pcm.crossbar import MatrixState, quantize_uniform

logger = logging.getLogger(__name__)


def reference_matmul(
    state: MatrixState, inputs: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Read ``state`` once per row of ``inputs`` (rows, in); return (rows, out)."""
    matrix = state.matrix
    config = matrix.config
    inputs = np.asarray(inputs, dtype=np.float64)
    rows = inputs.shape[0]
    n_out = matrix.shape[1]
    low, high = config.dac_range
    full_scale = config.input_full_scale
    result = np.zeros((rows, n_out))
    for row in range(rows):
        x = quantize_uniform(inputs[row], config.dac_bits, low, high) / full_scale
        output = np.zeros(n_out)
        for row_slice, col_slice in matrix.tiles:
            g_plus = state.g_plus[row_slice, col_slice]
            g_minus = state.g_minus[row_slice, col_slice]
            read_plus = g_plus + state.sigma_plus[
                row_slice, col_slice
            ] * rng.standard_normal(g_plus.shape)
            read_minus = g_minus + state.sigma_minus[
                row_slice, col_slice
            ] * rng.standard_normal(g_minus.shape)
            column = np.zeros(g_plus.shape[1])
            for i, value in enumerate(x[row_slice]):
                if value != 0.0:
                    column += value * (read_plus[i] - read_minus[i]) / matrix.g_range
            if config.output_noise > 0:
                column += config.output_noise * rng.standard_normal(column.shape)
            if matrix.adc_range is not None:
                column = quantize_uniform(column, config.adc_bits, *matrix.adc_range)
            output[col_slice] += column
        scale = full_scale * matrix.g_range / matrix.scale
        result[row] = output * scale * state.compensation
    return result

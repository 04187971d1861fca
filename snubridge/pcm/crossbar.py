"""Crossbar tiles of differential PCM pairs, with DAC, ADC and a fast path.

A weight matrix ``W`` of shape ``(in, out)`` (rows are inputs, as in Keras) is
stored on two devices per weight: ``G+ = s max(W, 0)`` and ``G- = s max(-W, 0)``
with the mapping scale ``s`` in uS per weight unit, one per layer (the largest
``|W|`` maps to ``g_range``) or one per column. The matrix is cut into tiles of
``tile_rows x tile_cols`` devices. One read of a tile, in normalised units, is::

    x_n = DAC(x) / x_fs                        (x_fs = max |dac_range|)
    y_n[j] = ADC( sum_i x_n[i] (G+_ij + e+_ij - G-_ij - e-_ij) / g_range + e_out[j] )

with per-read device noise ``e+-`` of spread ``sigma+-`` from the device model
and output noise ``e_out`` of spread ``output_noise``. Row tiles are summed
digitally and the result is scaled back: ``y = alpha y_n x_fs g_range / s``,
where ``alpha`` is the global drift compensation factor (1 when off).

The fast path draws no per-device noise: for independent Gaussian ``e``, the
sum over rows is itself Gaussian with variance
``sum_i x_n[i]^2 (sigma+_ij^2 + sigma-_ij^2) / g_range^2``, so each read needs
one matrix product for the mean, one for the variance and one normal number
per output and row tile. :mod:`snubridge.pcm.reference_path` draws every
device's noise explicitly and is tested to agree in distribution.

The variance product costs as much as the mean product. The default
``CrossbarConfig.variance="exact"`` runs it in full; the option
``CrossbarConfig.variance="low_rank"`` replaces the variance matrix ``S`` of a
row tile by its rank-``r`` SVD ``U V`` (computed once per inference time), and
the variance costs ``(x^2 U) V``. ``S`` is an element-wise function of the
conductances with per-device drift, so it is not close to low rank: the
residual ``S - U V`` behaves like independent noise of about the spread of
``S`` itself, and a higher rank barely helps. Its effect on a read shrinks as
``1 / sqrt(k)`` with the number ``k`` of inputs the read sums, so each row tile
stores the smallest ``k`` for which :func:`predicted_std_error` meets
``variance_tolerance``, and reads with fewer inputs get the exact product.
``benchmarks/bench_pcm.py speed`` prints the measured error of both modes.
NOTE: the bound is on the root-mean-square error over reads whose active
inputs look like a random subset; single reads can be off by several times
the bound, and structured inputs that pick rows of unusually large variance
can exceed it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import statistics
from typing import Any

import numpy as np

from snubridge.errors import DeviceError
from snubridge.pcm.devices import DeviceModel, PulsePCM, check_number, check_range

logger = logging.getLogger(__name__)

MAPPINGS = ("layer", "column")
PROGRAMMING_METHODS = ("one_shot", "verify")
VARIANCE_MODES = ("exact", "low_rank")


@dataclasses.dataclass(frozen=True)
class CrossbarConfig:
    """Array, converter and mapping settings of the emulated accelerator."""

    tile_rows: int = 512
    """Device rows (inputs) per tile."""

    tile_cols: int = 512
    """Device columns (outputs) per tile."""

    dac_bits: int | None = 8
    """Input DAC resolution in bits (1..16); None for an ideal DAC."""

    dac_range: tuple[float, float] = (-1.0, 1.0)
    """Input range of the DAC in input units; inputs outside are clipped."""

    adc_bits: int | None = 8
    """Output ADC resolution in bits (1..16); None for an ideal ADC."""

    adc_range: tuple[float, float] | None = None
    """ADC range in normalised units (a column of ``tile_rows`` inputs at full
    scale on devices at ``g_range`` reads ``tile_rows``); outputs outside are
    clipped. None calibrates it per matrix from sample inputs at programming
    time (``adc_headroom`` times the largest ideal tile output)."""

    adc_headroom: float = 1.25
    """Factor on the largest ideal tile output when the ADC range is calibrated."""

    output_noise: float = 0.0
    """Spread of additive Gaussian noise per tile output and read, normalised
    units. 0 by default: no measured value is assumed."""

    read_noise: bool = True
    """Draw the device model's per-read noise at every read."""

    variance: str = "exact"
    """Method of the fast path for the per-read output variance
    ``v = x_n^2 @ S``, with ``S`` the normalised per-device read-noise variance.
    ``"exact"`` runs the full product. ``"low_rank"`` replaces ``S`` by its SVD
    ``U V`` of rank at most ``variance_rank`` wherever the predicted error is
    within ``variance_tolerance``, and runs the exact product for other reads."""

    variance_rank: int = 4
    """Largest rank of the SVD of ``S`` tried in the ``"low_rank"`` mode (1..64).
    Each row tile takes the smallest rank whose minimum input count is within
    5 % of the best one among ranks 1..``variance_rank``."""

    variance_tolerance: float = 0.05
    """Bound of the ``"low_rank"`` mode on the predicted root-mean-square
    relative error of the output standard deviation of each column, as a
    fraction. Reads whose effective input count is too small to meet it get
    the exact variance."""

    mapping: str = "layer"
    """Mapping scale from weights to conductances: ``"layer"`` (one scale per
    matrix) or ``"column"`` (one per output column)."""

    programming: str = "one_shot"
    """``"one_shot"`` or ``"verify"`` (iterative program-and-verify)."""

    verify_tolerance: float = 0.5
    """Program-and-verify tolerance in uS around each target."""

    verify_iterations: int = 100
    """Maximum program-and-verify iterations."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> CrossbarConfig:
        """Check every field; raise :class:`DeviceError` naming the bad one."""
        owner = type(self).__name__
        for field in ("tile_rows", "tile_cols", "verify_iterations"):
            value = getattr(self, field)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < 1
            ):
                raise DeviceError(
                    f"{owner}.{field} must be an integer of at least 1, "
                    f"received {value!r}."
                )
        for field in ("dac_bits", "adc_bits"):
            value = getattr(self, field)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise DeviceError(
                    f"{owner}.{field} must be an integer from 1 to 16 or None, "
                    f"received {value!r}."
                )
            if not 1 <= value <= 16:
                raise DeviceError(
                    f"{owner}.{field} must lie in 1..16 bits, received {value!r}."
                )
        check_range(owner, "dac_range", self.dac_range)
        if self.adc_range is not None:
            check_range(owner, "adc_range", self.adc_range)
        for bits, field in ((self.dac_bits, "dac_range"), (self.adc_bits, "adc_range")):
            bounds = getattr(self, field)
            if bits == 1 and bounds is not None and bounds[0] < 0 < bounds[1]:
                raise DeviceError(
                    f"{owner}.{field}={tuple(bounds)} spans 0 on both sides, which a "
                    "1-bit converter cannot hold; use a one-sided range or at least "
                    "2 bits."
                )
        if self.variance not in VARIANCE_MODES:
            raise DeviceError(
                f"{owner}.variance={self.variance!r} is not supported; expected one "
                f"of {VARIANCE_MODES}."
            )
        rank = self.variance_rank
        if (
            isinstance(rank, bool)
            or not isinstance(rank, (int, np.integer))
            or not 1 <= rank <= 64
        ):
            raise DeviceError(
                f"{owner}.variance_rank must be an integer from 1 to 64, "
                f"received {rank!r}."
            )
        check_number(
            owner,
            "variance_tolerance",
            self.variance_tolerance,
            minimum=0.0,
            strict_minimum=True,
        )
        check_number(owner, "adc_headroom", self.adc_headroom, minimum=1.0)
        check_number(owner, "output_noise", self.output_noise, minimum=0.0)
        check_number(
            owner,
            "verify_tolerance",
            self.verify_tolerance,
            minimum=0.0,
            strict_minimum=True,
        )
        if self.mapping not in MAPPINGS:
            raise DeviceError(
                f"{owner}.mapping={self.mapping!r} is not supported; expected one of "
                f"{MAPPINGS}."
            )
        if self.programming not in PROGRAMMING_METHODS:
            raise DeviceError(
                f"{owner}.programming={self.programming!r} is not supported; expected "
                f"one of {PROGRAMMING_METHODS}."
            )
        return self

    @property
    def input_full_scale(self) -> float:
        """``x_fs``: the largest input magnitude the DAC passes, input units."""
        return max(abs(self.dac_range[0]), abs(self.dac_range[1]))


def quantize_uniform(
    values: np.ndarray, bits: int | None, low: float, high: float
) -> np.ndarray:
    """Clip ``values`` to ``[low, high]`` and round them to a converter grid.

    The grid contains 0. A range that spans 0 uses a signed code of
    ``2^(bits-1) - 1`` steps per side of ``max(|low|, |high|)``; a one-sided range
    uses ``2^bits - 1`` steps of ``max(|low|, |high|)``. ``bits=None`` only clips.
    """
    clipped = np.clip(values, low, high)
    if bits is None:
        return clipped
    full_scale = max(abs(low), abs(high))
    levels = 2 ** (bits - 1) - 1 if low < 0 < high else 2**bits - 1
    if levels < 1:
        raise DeviceError(
            f"A 1-bit converter cannot span the signed range ({low}, {high}); use a "
            "one-sided range or at least 2 bits."
        )
    step = full_scale / levels
    quantized = np.rint(clipped / step) * step
    return np.clip(quantized, low, high).astype(clipped.dtype, copy=False)


def _grid_step(bits: int, low: float, high: float) -> float:
    # Grid step of quantize_uniform.
    full_scale = max(abs(low), abs(high))
    levels = 2 ** (bits - 1) - 1 if low < 0 < high else 2**bits - 1
    return full_scale / max(levels, 1)


def _is_binary(values: np.ndarray) -> bool:
    return not np.any((values != 0) & (values != 1))


@functools.lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    # Standard-normal quantiles at (k + 0.5) / 2^16, rescaled to unit variance.
    inverse = statistics.NormalDist().inv_cdf
    table = np.array([inverse((k + 0.5) / 65536.0) for k in range(65536)])
    return (table / table.std()).astype(np.float32)


def fast_standard_normal(
    rng: np.random.Generator, shape: tuple[int, ...]
) -> np.ndarray:
    """Return float32 standard-normal numbers drawn by table lookup.

    Each number is one of 2^16 equiprobable normal quantiles chosen by 16 random
    bits, about five times faster than ``Generator.standard_normal`` here.
    NOTE: the tails are cut at 4.3 standard deviations (probability 1.6e-5 per
    side) and the values are discrete; the read-noise tests check the spread.
    """
    count = int(np.prod(shape))
    raw = rng.bit_generator.random_raw((count + 3) // 4)
    return np.take(_normal_table(), raw.view(np.uint16)[:count]).reshape(shape)


def usable_g_range(device: DeviceModel) -> float:
    """Return the largest target conductance in uS the mapping uses for ``device``.

    ``g_max`` for the statistical model; for the pulse model 90 % of the
    conductance where the mean SET increment vanishes, since targets above it
    take a diverging number of pulses.
    """
    if isinstance(device, PulsePCM):
        return 0.9 * device.g_saturation
    return float(device.g_max)


def tile_slices(
    rows: int, cols: int, config: CrossbarConfig
) -> list[tuple[slice, slice]]:
    """Return the (row, column) slices of every tile of a ``rows x cols`` matrix."""
    return [
        (
            slice(r, min(r + config.tile_rows, rows)),
            slice(c, min(c + config.tile_cols, cols)),
        )
        for r in range(0, rows, config.tile_rows)
        for c in range(0, cols, config.tile_cols)
    ]


class AnalogMatrix:
    """One weight matrix programmed onto differential PCM pairs.

    Args:
        weights: Weight matrix ``(in, out)``.
        device: Device model.
        config: Crossbar settings.
        rng: Generator for programming noise and drift exponents.
        name: Matrix name used in reports and errors (the layer key).
        calibration_inputs: Inputs ``(rows, in)`` used to calibrate the ADC
            range when ``config.adc_range`` is None.
    """

    def __init__(
        self,
        weights: np.ndarray,
        device: DeviceModel,
        config: CrossbarConfig,
        rng: np.random.Generator,
        *,
        name: str = "matrix",
        calibration_inputs: np.ndarray | None = None,
    ) -> None:
        from snubridge.pcm.programming import program_conductances

        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 2 or min(weights.shape) < 1:
            raise DeviceError(
                f"Matrix {name!r}: weights must be a non-empty 2-D array (in, out), "
                f"received shape {weights.shape}."
            )
        if not np.all(np.isfinite(weights)):
            raise DeviceError(f"Matrix {name!r}: weights contain NaN or infinity.")
        self.name = name
        self.weights = weights
        self.device = device
        self.config = config
        self.g_range = usable_g_range(device)
        if config.mapping == "column":
            peak = np.abs(weights).max(axis=0)
        else:
            peak = np.full(weights.shape[1], np.abs(weights).max())
        # Columns (or matrices) of zeros get scale 1: their targets are 0 anyway.
        self.scale = np.where(
            peak > 0, self.g_range / np.where(peak > 0, peak, 1.0), 1.0
        )
        self.target_plus = np.maximum(weights, 0.0) * self.scale
        self.target_minus = np.maximum(-weights, 0.0) * self.scale
        self.g_plus = program_conductances(device, self.target_plus, rng, config)
        self.g_minus = program_conductances(device, self.target_minus, rng, config)
        self.nu_plus = device.sample_drift_exponents(self.target_plus, rng)
        self.nu_minus = device.sample_drift_exponents(self.target_minus, rng)
        self.tiles = tile_slices(*weights.shape, config)
        self.adc_range = self._adc_range(calibration_inputs)
        self.reference_inputs = self._reference_inputs(rng)
        self.reference_level: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(in, out)``."""
        return self.weights.shape

    @property
    def devices(self) -> int:
        """Number of PCM devices used: two per weight."""
        return 2 * self.weights.size

    @property
    def row_tiles(self) -> int:
        """Number of tiles along the input axis."""
        return math.ceil(self.shape[0] / self.config.tile_rows)

    def _adc_range(
        self, calibration_inputs: np.ndarray | None
    ) -> tuple[float, float] | None:
        if self.config.adc_bits is None and self.config.adc_range is None:
            return None
        if self.config.adc_range is not None:
            return tuple(self.config.adc_range)
        if calibration_inputs is None:
            raise DeviceError(
                f"Matrix {self.name!r}: CrossbarConfig.adc_range is None, so the ADC "
                "range is calibrated, but no calibration inputs were given; pass "
                "calibration_inputs or set adc_range."
            )
        cfg = self.config
        lo, hi = cfg.dac_range
        inputs = quantize_uniform(
            np.asarray(calibration_inputs, np.float64), cfg.dac_bits, lo, hi
        )
        inputs = inputs / cfg.input_full_scale
        ideal = (self.target_plus - self.target_minus) / self.g_range
        peak = 0.0
        for start in range(0, self.shape[0], cfg.tile_rows):
            block = slice(start, start + cfg.tile_rows)
            peak = max(
                peak, float(np.abs(inputs[:, block] @ ideal[block]).max(initial=0.0))
            )
        bound = cfg.adc_headroom * peak if peak > 0 else 1.0
        return (-bound, bound)

    def _reference_inputs(self, rng: np.random.Generator) -> np.ndarray:
        # Fixed calibration vectors for global drift compensation, drawn uniformly
        # over the positive DAC range.
        full_scale = self.config.dac_range[1] if self.config.dac_range[1] > 0 else 1.0
        return rng.uniform(0.0, full_scale, size=(32, self.shape[0]))

    def state(self, t: float, rng: np.random.Generator) -> MatrixState:
        """Sample the array at ``t`` seconds after programming (drift, state noise)."""
        g_plus, sigma_plus = self.device.state_at(self.g_plus, self.nu_plus, t, rng)
        g_minus, sigma_minus = self.device.state_at(self.g_minus, self.nu_minus, t, rng)
        if not self.config.read_noise:
            sigma_plus = np.zeros_like(sigma_plus)
            sigma_minus = np.zeros_like(sigma_minus)
        return MatrixState(self, t, g_plus, g_minus, sigma_plus, sigma_minus)

    def record_reference(self, rng: np.random.Generator) -> float:
        """Read the reference inputs right after programming and store the level.

        The level is ``sum |y_ref|`` at the device's programming read time; global
        drift compensation later rescales outputs by ``level(0) / level(t)``.
        """
        state = self.state(self.device.programming_read_time, rng)
        self.reference_level = state.reference_level(rng)
        return self.reference_level

    def summary(self) -> dict[str, Any]:
        """Return a JSON-able description of the mapping."""
        layer_scale = self.config.mapping == "layer"
        return {
            "name": self.name,
            "shape": list(self.shape),
            "devices": self.devices,
            "tiles": len(self.tiles),
            "tile_grid": [
                self.row_tiles,
                math.ceil(self.shape[1] / self.config.tile_cols),
            ],
            "mapping": self.config.mapping,
            "scale_us_per_unit": float(self.scale[0])
            if layer_scale
            else self.scale.tolist(),
            "g_range_us": self.g_range,
            "adc_range": None if self.adc_range is None else list(self.adc_range),
        }


def predicted_std_error(
    variance: np.ndarray, approximation: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Return the predicted error of approximate output spreads, worst column.

    Take a read that sums ``k`` of the ``n`` rows of the variance matrix ``S``,
    as if the active set were drawn at random without replacement. The
    residual ``R = S - approximation`` then adds ``sum_i R_ij`` over those rows
    to the variance of column ``j``. That sum has mean ``k mu_j`` and variance
    ``k (n - k) / (n - 1) tau_j^2``, where ``mu_j`` and ``tau_j^2`` are the mean
    and variance of column ``j`` of ``R``. The variance itself is about
    ``k m_j``, with ``m_j`` the mean of column ``j`` of ``S``. The relative error of the
    standard deviation is about half that of the variance, so the predicted
    root-mean-square relative error is::

        e_j(k) = sqrt(mu_j^2 + (n - k) / ((n - 1) k) tau_j^2) / (2 m_j)

    Args:
        variance: ``S``, ``(n, out)``, non-negative.
        approximation: Its approximation, same shape.
        counts: Input counts ``k`` (1..n) to evaluate.

    Returns:
        ``max_j e_j(k)`` for every ``k`` in ``counts``; infinity where a column
        with ``m_j = 0`` has a non-zero residual.
    """
    variance = np.asarray(variance, dtype=np.float64)
    residual = variance - np.asarray(approximation, dtype=np.float64)
    n = variance.shape[0]
    counts = np.asarray(counts, dtype=np.float64)
    mu = residual.mean(axis=0)
    tau2 = residual.var(axis=0)
    m = variance.mean(axis=0)
    finite = n / (n - 1) if n > 1 else 0.0
    coefficient = np.where(counts < n, (n - counts) * finite / (n * counts), 0.0)
    numerator = np.sqrt(mu[None, :] ** 2 + coefficient[:, None] * tau2[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        error = np.where(
            m[None, :] > 0,
            numerator / (2 * m[None, :]),
            np.where(numerator > 0, np.inf, 0.0),
        )
    return error.max(axis=1)


class _RowTile:
    # One row band of tiles: its slice, the normalised mean and variance
    # matrices and, in the "low_rank" mode, the SVD factors of the variance.

    def __init__(
        self,
        rows: slice,
        mean: np.ndarray,
        variance: np.ndarray,
        config: CrossbarConfig,
    ) -> None:
        self.rows = rows
        self.mean = np.ascontiguousarray(mean)
        self.variance = np.ascontiguousarray(variance)
        self.out = mean.shape[1]
        self.joined = np.ascontiguousarray(np.concatenate([mean, variance], axis=1))
        self.low_rank = False
        self.min_inputs = 0
        self.rank = 0
        self.predicted_error = 0.0
        if config.variance == "low_rank" and np.any(variance > 0):
            self._factorise(config)

    def _factorise(self, config: CrossbarConfig) -> None:
        n, out = self.variance.shape
        exact = self.variance.astype(np.float64)
        u, singular, vt = np.linalg.svd(exact, full_matrices=False)
        counts = np.arange(1, n + 1)
        # Smallest input count that meets the bound, for every rank up to the
        # maximum: the error falls as k grows, so every larger count meets it too.
        candidates = []
        for rank in range(1, min(config.variance_rank, n, out) + 1):
            left = u[:, :rank] * singular[:rank]
            error = predicted_std_error(exact, left @ vt[:rank], counts)
            meets = np.nonzero(error <= config.variance_tolerance)[0]
            if meets.size:
                candidates.append((int(meets[0]) + 1, rank, float(error[meets[0]])))
        if not candidates:
            return
        # Every extra rank costs one pass over the outputs, so take the smallest
        # rank whose count is within 5 % of the best one.
        best = min(count for count, _, _ in candidates)
        self.min_inputs, rank, self.predicted_error = next(
            entry for entry in candidates if entry[0] <= 1.05 * best
        )
        left = u[:, :rank] * singular[:rank]
        right = vt[:rank]
        self.rank = rank
        self.low_rank = True
        self.left = np.ascontiguousarray(left, dtype=np.float32)
        self.right = np.ascontiguousarray(right, dtype=np.float32)
        ones = np.ones((n, 1), dtype=np.float32)
        # A matrix-vector product sums a row faster than ndarray.sum here.
        self.row_ones = ones[:, 0]
        # Binary reads get the mean and x U from one product.
        self.joined_low = np.ascontiguousarray(
            np.concatenate([self.mean, self.left], axis=1)
        )
        self.left_ones = np.ascontiguousarray(np.concatenate([self.left, ones], axis=1))

    def mean_and_variance(
        self, codes: np.ndarray, binary: bool, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the mean and variance of this band's outputs, in code units."""
        x = codes[:, self.rows]
        out = self.out
        if self.low_rank and binary and not exact:
            # The input count of a binary read is its row sum. When most reads
            # have too few inputs for the bound, the exact product for all of
            # them is cheaper than the low-rank product plus the exact one.
            counts = x @ self.row_ones
            short = np.count_nonzero((counts < self.min_inputs - 1e-3) & (counts > 0))
            exact = short > x.shape[0] // 2
        if not self.low_rank or exact:
            if binary:
                product = x @ self.joined
                return product[:, :out], product[:, out:]
            return x @ self.mean, np.square(x) @ self.variance
        rank = self.rank
        if binary:
            product = x @ self.joined_low
            mean = product[:, :out]
            projected = product[:, out:]
            squared = x
        else:
            mean = x @ self.mean
            squared = np.square(x)
            projected_ones = squared @ self.left_ones
            projected = projected_ones[:, :rank]
            total = projected_ones[:, rank]
            power = np.einsum("ij,ij->i", squared, squared)
            with np.errstate(divide="ignore", invalid="ignore"):
                counts = np.where(power > 0, total * total / power, np.inf)
        # (x U) V as a sum of rank-1 terms: OpenBLAS runs a product with an
        # inner dimension this small slowly when its threads are contended.
        variance = projected[:, 0:1] * self.right[0]
        for component in range(1, rank):
            variance += projected[:, component : component + 1] * self.right[component]
        np.maximum(variance, 0.0, out=variance)
        # Too few inputs for the bound: those reads get the exact product.
        few = np.nonzero((counts < self.min_inputs - 1e-3) & (counts > 1e-3))[0]
        if few.size:
            variance[few] = squared[few] @ self.variance
        return mean, variance


class MatrixState:
    """An :class:`AnalogMatrix` sampled at one inference time, ready to be read.

    Attributes:
        matrix: The programmed matrix.
        time: Seconds since programming.
        g_plus, g_minus: Conductances at ``time`` in uS, ``(in, out)``.
        sigma_plus, sigma_minus: Per-read noise spreads in uS, ``(in, out)``.
        compensation: Global drift compensation factor ``alpha`` (1 = off).
    """

    def __init__(
        self,
        matrix: AnalogMatrix,
        time: float,
        g_plus: np.ndarray,
        g_minus: np.ndarray,
        sigma_plus: np.ndarray,
        sigma_minus: np.ndarray,
    ) -> None:
        self.matrix = matrix
        self.time = time
        self.g_plus = g_plus
        self.g_minus = g_minus
        self.sigma_plus = sigma_plus
        self.sigma_minus = sigma_minus
        self.compensation = 1.0
        g_range = matrix.g_range
        difference = ((g_plus - g_minus) / g_range).astype(np.float32)
        variance = ((sigma_plus**2 + sigma_minus**2) / g_range**2).astype(np.float32)
        self.has_read_noise = bool(np.any(variance > 0))
        config = matrix.config
        self._blocks = []
        for start in range(0, matrix.shape[0], config.tile_rows):
            block = slice(start, min(start + config.tile_rows, matrix.shape[0]))
            self._blocks.append(
                _RowTile(block, difference[block], variance[block], config)
            )
        low, high = config.dac_range
        probe = np.array([0.0, 1.0])
        # Inputs of 0 and 1 skip the DAC when both values lie on its grid.
        self._binary_passes_dac = config.input_full_scale == 1.0 and np.array_equal(
            quantize_uniform(probe, config.dac_bits, low, high), probe
        )
        self._output_scale = (config.input_full_scale * g_range / matrix.scale).astype(
            np.float32
        )

    @property
    def config(self) -> CrossbarConfig:
        """The crossbar settings of the matrix."""
        return self.matrix.config

    def normalised_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """Return ``DAC(x) / x_fs`` as float32."""
        config = self.config
        values = np.asarray(inputs, dtype=np.float32)
        low, high = config.dac_range
        return quantize_uniform(values, config.dac_bits, low, high) / np.float32(
            config.input_full_scale
        )

    def _dac_codes(self, values: np.ndarray) -> tuple[np.ndarray, float]:
        # Return (c, f) with DAC(x) / x_fs = f * c, so that the products run on c.
        config = self.config
        low, high = config.dac_range
        full_scale = config.input_full_scale
        if self._binary_passes_dac and not np.any((values != 0) & (values != 1)):
            return values, 1.0 / full_scale
        codes = np.clip(values, low, high)
        if config.dac_bits is None:
            return codes, 1.0 / full_scale
        step = _grid_step(config.dac_bits, low, high)
        codes *= np.float32(1.0 / step)
        np.rint(codes, out=codes)
        np.clip(
            codes,
            math.ceil(low / step - 1e-9),
            math.floor(high / step + 1e-9),
            out=codes,
        )
        return codes, step / full_scale

    def matmul(
        self,
        inputs: np.ndarray,
        rng: np.random.Generator,
        *,
        exact: bool = False,
    ) -> np.ndarray:
        """Read the array once per input row (fast path); return ``(rows, out)``.

        Every row of ``inputs`` (samples and time steps flattened together) is
        one read with fresh read and output noise. The products run on the DAC
        codes ``c`` with ``x_n = f c``; mean, spread and ADC step are rescaled
        by ``f`` instead of the inputs. ``exact=True`` computes the output
        variance with the full product even when ``config.variance`` is
        ``"low_rank"``.
        """
        inputs = np.asarray(inputs)
        if inputs.ndim != 2 or inputs.shape[1] != self.matrix.shape[0]:
            raise DeviceError(
                f"Matrix {self.matrix.name!r}: inputs must have shape (rows, "
                f"{self.matrix.shape[0]}), received {inputs.shape}."
            )
        config = self.config
        codes, factor = self._dac_codes(np.asarray(inputs, dtype=np.float32))
        noisy = self.has_read_noise or config.output_noise > 0
        # For codes of 0 and 1 only, c^2 = c and one product gives mean and variance.
        binary = self.has_read_noise and (codes is inputs or _is_binary(codes))
        out_var = np.float32(config.output_noise**2 / factor**2)
        adc = self.matrix.adc_range
        if adc is not None and config.adc_bits is not None:
            adc_step = _grid_step(config.adc_bits, *adc) / factor
            code_low = math.ceil(adc[0] / factor / adc_step - 1e-9)
            code_high = math.floor(adc[1] / factor / adc_step + 1e-9)
            result_scale = adc_step
        else:
            adc_step = None
            result_scale = 1.0
        total = None
        for tile in self._blocks:
            if self.has_read_noise:
                mean, variance = tile.mean_and_variance(codes, binary, exact)
            else:
                mean, variance = codes[:, tile.rows] @ tile.mean, None
            if noisy:
                if variance is None:
                    spread = np.sqrt(out_var)
                else:
                    if out_var > 0:
                        variance += out_var
                    spread = np.sqrt(variance, out=variance)
                read = fast_standard_normal(rng, mean.shape)
                read *= spread
                read += mean
            else:
                read = np.array(mean)
            if adc_step is not None:
                read *= np.float32(1.0 / adc_step)
                np.rint(read, out=read)
                np.clip(read, code_low, code_high, out=read)
            elif adc is not None:
                np.clip(read, adc[0] / factor, adc[1] / factor, out=read)
            if total is None:
                total = read
            else:
                total += read
        total *= self._output_scale * np.float32(
            result_scale * factor * self.compensation
        )
        return total

    def reference_level(self, rng: np.random.Generator) -> float:
        """Return ``sum |y|`` over the matrix's reference inputs, uncompensated."""
        saved, self.compensation = self.compensation, 1.0
        try:
            outputs = self.matmul(self.matrix.reference_inputs, rng)
        finally:
            self.compensation = saved
        return float(np.abs(outputs).sum())

    def compensate_drift(self, rng: np.random.Generator) -> float:
        """Set ``alpha = level(programming) / level(now)`` from reference reads.

        Needs :meth:`AnalogMatrix.record_reference` first; returns ``alpha``.
        """
        if self.matrix.reference_level is None:
            raise DeviceError(
                f"Matrix {self.matrix.name!r}: no reference read at programming time; "
                "call record_reference() after programming."
            )
        level = self.reference_level(rng)
        self.compensation = self.matrix.reference_level / level if level > 0 else 1.0
        return self.compensation

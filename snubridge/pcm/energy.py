"""Energy and latency estimate of one inference on PCM crossbars.

These are estimates from operation counts, not measurements. Two views are
given side by side:

* component estimate: device read energy ``V_read^2 G t_read`` summed over the
  devices a read drives, plus a fixed energy per DAC and per ADC conversion;
  latency from the read pulse and one ADC conversion per read, layers and
  steps in sequence;
* chip-level estimate: multiply-accumulate count times the energy per
  operation and throughput per core reported for IBM's 64-core PCM chip
  (Le Gallo et al., Nature Electronics 6, 680-693, 2023: 8-bit MVMs at
  9.76 TOPS/W and 63.1 TOPS over 64 cores of 256 x 256 devices in one-phase
  read mode).

Counts per sample: a dense or recurrent matrix is read once per time step, a
convolution once per output position and step, a readout once per step.
Every read drives all tiles of the matrix: ``in x n_col_tiles`` DAC and
``out x n_row_tiles`` ADC conversions.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from snubridge.pcm.crossbar import AnalogMatrix
from snubridge.pcm.devices import check_number
from snubridge.spec import NetworkSpec

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EnergyConstants:
    """Constants of the estimate, each with its source."""

    read_voltage: float = 0.2
    """Read voltage across a device in volts. Assumption: a typical PCM read
    bias well below the threshold switching voltage, not taken from a paper."""

    read_pulse: float = 250e-9
    """Read pulse duration in seconds: the read time of the PCM noise model of
    Joshi et al., Nat. Commun. 11, 2473 (2020)."""

    dac_energy: float = 0.5e-12
    """Energy per input DAC conversion in joules. Assumption, not from a paper:
    an 8-bit pulse-width modulator of the order of a picojoule."""

    adc_energy: float = 2e-12
    """Energy per output ADC conversion in joules. Assumption, not from a
    paper: an 8-bit column ADC of a few picojoules."""

    adc_time: float = 100e-9
    """Conversion time of one ADC in seconds. Assumption, not from a paper."""

    chip_ops_per_joule: float = 9.76e12
    """Operations (a multiply or an add) per joule of 8-bit MVMs on IBM's
    64-core PCM chip, one-phase read (Le Gallo et al., Nat. Electron. 2023)."""

    chip_ops_per_second_per_core: float = 63.1e12 / 64
    """Operations per second of one 256 x 256 core of that chip, one-phase read
    (63.1 TOPS over 64 cores; Le Gallo et al., Nat. Electron. 2023)."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for field in dataclasses.fields(self):
            check_number(
                owner,
                field.name,
                getattr(self, field.name),
                minimum=0.0,
                strict_minimum=True,
            )


def reads_per_sample(spec: NetworkSpec, steps: int) -> dict[str, int]:
    """Return the number of crossbar reads per sample for every matrix key."""
    counts: dict[str, int] = {}
    for layer in spec.layers:
        if layer.kind == "flatten":
            continue
        positions = 1
        if layer.kind == "snu_conv2d":
            out_h, out_w, _ = layer.output_shape
            positions = out_h * out_w
        counts[layer.name] = positions * int(steps)
        if layer.kind == "snu_recurrent":
            counts[f"{layer.name}/recurrent"] = int(steps)
    return counts


def estimate_inference(
    spec: NetworkSpec,
    matrices: Mapping[str, AnalogMatrix],
    steps: int,
    *,
    input_activity: Mapping[str, float] | None = None,
    constants: EnergyConstants | None = None,
) -> dict[str, Any]:
    """Return the energy (J) and latency (s) estimate of one sample of ``steps`` steps.

    Args:
        spec: Network.
        matrices: Programmed matrices, as from
            :func:`snubridge.pcm.deploy.program_network`.
        steps: Time steps per sample.
        input_activity: Matrix key to the mean fraction of nonzero inputs per
            read (spike rate); 1 (every row driven) when missing, an upper bound.
        constants: Constants of the estimate.
    """
    constants = constants or EnergyConstants()
    activity = dict(input_activity or {})
    reads = reads_per_sample(spec, steps)
    per_matrix = {}
    total_device = total_dac = total_adc = 0.0
    latency = 0.0
    macs = 0
    for key, matrix in matrices.items():
        count = reads.get(key, 0)
        rows, cols = matrix.shape
        col_tiles = -(-cols // matrix.config.tile_cols)
        fraction = float(activity.get(key, 1.0))
        # Mean conductance per row in siemens: both devices of every pair conduct.
        row_conductance = (matrix.g_plus.sum() + matrix.g_minus.sum()) / rows * 1e-6
        device = (
            count
            * fraction
            * rows
            * row_conductance
            * constants.read_voltage**2
            * constants.read_pulse
        )
        dac = count * rows * col_tiles * constants.dac_energy
        adc = count * cols * matrix.row_tiles * constants.adc_energy
        total_device += device
        total_dac += dac
        total_adc += adc
        latency += count * (constants.read_pulse + constants.adc_time)
        macs += count * rows * cols
        per_matrix[key] = {
            "reads": count,
            "device_energy_j": device,
            "dac_energy_j": dac,
            "adc_energy_j": adc,
        }
    chip_energy = 2 * macs / constants.chip_ops_per_joule
    chip_latency = sum(
        reads.get(key, 0)
        * 2
        * matrix.shape[0]
        * matrix.shape[1]
        / constants.chip_ops_per_second_per_core
        for key, matrix in matrices.items()
    )
    return {
        "note": (
            "estimate from operation counts and the constants listed, not a measurement"
        ),
        "steps": int(steps),
        "multiply_accumulates": int(macs),
        "component_estimate": {
            "device_energy_j": total_device,
            "dac_energy_j": total_dac,
            "adc_energy_j": total_adc,
            "total_energy_j": total_device + total_dac + total_adc,
            "latency_s": latency,
        },
        "chip_level_estimate": {"energy_j": chip_energy, "latency_s": chip_latency},
        "per_matrix": per_matrix,
        "constants": dataclasses.asdict(constants),
    }


def mean_input_activity(inputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Return the fraction of nonzero entries of each matrix's recorded inputs."""
    return {
        key: float(np.count_nonzero(value) / max(value.size, 1))
        for key, value in inputs.items()
    }

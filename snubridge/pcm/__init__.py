"""Phase-change memory (PCM) crossbar emulator: deploy SNU networks on analog tiles.

Modules, by concept:

* :mod:`~snubridge.pcm.devices`: device models (statistical and pulse-level)
  and their presets.
* :mod:`~snubridge.pcm.crossbar`: tiles, DAC and ADC, and the vectorised
  fast path of crossbar reads.
* :mod:`~snubridge.pcm.reference_path`: plain per-read, per-tile loops, the
  second implementation the fast path is tested against.
* :mod:`~snubridge.pcm.programming`: one-shot programming, program-and-verify
  and differential pairs with refresh.
* :mod:`~snubridge.pcm.deploy`: scoring a network at several times after
  programming, with and without drift compensation.
* :mod:`~snubridge.pcm.hwloop`: hardware-in-the-loop training.
* :mod:`~snubridge.pcm.quantize`: 1 to 8 bit weights.
* :mod:`~snubridge.pcm.energy`: energy and latency estimate.
"""

from __future__ import annotations

from snubridge.pcm.crossbar import AnalogMatrix, CrossbarConfig, MatrixState
from snubridge.pcm.deploy import (
    DEFAULT_TIMES,
    DeploymentReport,
    deploy,
    program_network,
)
from snubridge.pcm.devices import (
    PulsePCM,
    StatisticalPCM,
    device_from_name,
    joshi_2020,
    nandakumar_2018,
)
from snubridge.pcm.quantize import precision_sweep, quantize_spec, quantize_weights

__all__ = [
    "DEFAULT_TIMES",
    "AnalogMatrix",
    "CrossbarConfig",
    "DeploymentReport",
    "MatrixState",
    "PulsePCM",
    "StatisticalPCM",
    "deploy",
    "device_from_name",
    "joshi_2020",
    "nandakumar_2018",
    "precision_sweep",
    "program_network",
    "quantize_spec",
    "quantize_weights",
]

"""Programming of PCM conductances: one-shot, program-and-verify, differential pairs.

Conductances are in uS. SET pulses crystallise a PCM cell, so they can only
raise its conductance step by step. Lowering it takes a RESET to the amorphous
state, after which the device is programmed up again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from snubridge.errors import DeviceError
from snubridge.pcm.devices import DeviceModel, PulsePCM, StatisticalPCM, check_number

if TYPE_CHECKING:
    from snubridge.pcm.crossbar import CrossbarConfig

logger = logging.getLogger(__name__)


def program_one_shot(
    device: DeviceModel, targets: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Program every target once without reading back; return conductances in uS.

    The statistical model adds its programming noise ``sigma_P(G_T)``; the pulse
    model applies the pulse count whose noise-free trajectory lands nearest the
    target.
    """
    return device.program(np.asarray(targets, dtype=np.float64), rng)


def program_and_verify(
    device: DeviceModel,
    targets: np.ndarray,
    rng: np.random.Generator,
    *,
    tolerance: float = 0.5,
    max_iterations: int = 100,
) -> tuple[np.ndarray, int]:
    """Program iteratively, reading back after every step; return ``(G, iterations)``.

    Pulse model: start from RESET, read every device (with read noise) and give
    one SET pulse to each device read below ``target - tolerance``; a device read
    above ``target + tolerance`` is RESET and starts over. Statistical model:
    program once, read back with the 1/f spread at the programming read time and
    reprogram (a fresh programming draw) every device read outside
    ``target +- tolerance``. A device read inside ``target +- tolerance`` once
    counts as verified and gets no further pulses. NOTE: the published
    ``sigma_P`` of the statistical model already describes devices after the
    hardware's own iterative programming, so verifying here narrows the spread
    further than measured.

    Args:
        device: Device model.
        targets: Target conductances in uS.
        rng: Random generator.
        tolerance: Accepted read-back error in uS.
        max_iterations: Iteration limit; devices not verified by then keep
            their last conductance (logged at debug level).
    """
    check_number(
        "program_and_verify", "tolerance", tolerance, minimum=0.0, strict_minimum=True
    )
    if int(max_iterations) < 1:
        raise DeviceError(
            "program_and_verify.max_iterations must be at least 1, "
            f"received {max_iterations!r}."
        )
    targets = np.clip(np.asarray(targets, dtype=np.float64), 0.0, device.g_max)
    if isinstance(device, PulsePCM):
        g = device.reset(targets.shape, rng)
    else:
        g = device.program(targets, rng)
    done = np.zeros(targets.shape, dtype=bool)
    iterations = 0
    while iterations < int(max_iterations):
        iterations += 1
        readback = verify_read(device, g, rng)
        low = ~done & (readback < targets - tolerance)
        high = ~done & (readback > targets + tolerance)
        # A device read inside the band once is verified and left alone.
        done |= ~(low | high)
        if done.all():
            break
        if isinstance(device, PulsePCM):
            if high.any():
                g = np.where(high, device.reset(targets.shape, rng), g)
            g = device.set_pulse(g, rng, low)
        else:
            g = np.where(low | high, device.program(targets, rng), g)
    if not done.all():
        logger.debug(
            "program_and_verify: %d of %d devices not verified within +-%s uS after "
            "%d iterations",
            int(np.count_nonzero(~done)),
            targets.size,
            tolerance,
            iterations,
        )
    return g, iterations


def verify_read(
    device: DeviceModel, g: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Return one noisy read of conductances ``g`` (uS) at the programming read time."""
    nu = np.zeros_like(g)
    if isinstance(device, StatisticalPCM) and device.read_noise_mode == "per_state":
        state, _ = device.state_at(g, nu, device.programming_read_time, rng)
        return state
    drifted, spread = device.state_at(g, nu, device.programming_read_time, rng)
    return drifted + spread * rng.standard_normal(g.shape)


def program_conductances(
    device: DeviceModel,
    targets: np.ndarray,
    rng: np.random.Generator,
    config: CrossbarConfig,
) -> np.ndarray:
    """Program ``targets`` (uS) with the method that ``config.programming`` names."""
    if config.programming == "verify":
        g, _ = program_and_verify(
            device,
            targets,
            rng,
            tolerance=config.verify_tolerance,
            max_iterations=config.verify_iterations,
        )
        return g
    return program_one_shot(device, targets, rng)


class DifferentialPair:
    """Two pulse-programmed devices per weight, ``w ~ G+ - G-``, with refresh.

    A positive update pulses ``G+`` and a negative one pulses ``G-``, so between
    refreshes conductances only grow. When either device of a pair reaches
    ``refresh_threshold``, the pair's difference is read, both devices are
    RESET and the difference is programmed back onto one device with
    program-and-verify.

    Args:
        shape: Shape of the weight array.
        device: Pulse-level device model.
        rng: Random generator.
        refresh_threshold: Conductance in uS that triggers a refresh; default
            90 % of the conductance where the mean SET increment vanishes.
        verify_tolerance: Program-and-verify tolerance of the refresh, uS.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        device: PulsePCM,
        rng: np.random.Generator,
        *,
        refresh_threshold: float | None = None,
        verify_tolerance: float = 0.5,
    ) -> None:
        if not isinstance(device, PulsePCM):
            raise DeviceError(
                "DifferentialPair needs a pulse-level device model (PulsePCM), "
                "received "
                f"{type(device).__name__}."
            )
        self.device = device
        self.rng = rng
        if refresh_threshold is None:
            refresh_threshold = 0.9 * device.g_saturation
        self.refresh_threshold = check_number(
            "DifferentialPair",
            "refresh_threshold",
            refresh_threshold,
            minimum=device.g_reset,
            strict_minimum=True,
            maximum=device.g_max,
        )
        self.verify_tolerance = verify_tolerance
        self.g_plus = device.reset(tuple(shape), rng)
        self.g_minus = device.reset(tuple(shape), rng)
        self.refreshes = 0
        self.pulses = 0

    def difference(self) -> np.ndarray:
        """Return ``G+ - G-`` in uS (noise-free)."""
        return self.g_plus - self.g_minus

    def read(self) -> np.ndarray:
        """Return one noisy read of ``G+ - G-`` in uS."""
        device = self.device
        noise_plus = device.read_sigma(self.g_plus) * self.rng.standard_normal(
            self.g_plus.shape
        )
        noise_minus = device.read_sigma(self.g_minus) * self.rng.standard_normal(
            self.g_minus.shape
        )
        return (self.g_plus + noise_plus) - (self.g_minus + noise_minus)

    def program(self, targets: np.ndarray) -> None:
        """RESET every pair and program ``targets`` (uS, signed) onto it."""
        targets = np.asarray(targets, dtype=np.float64)
        self._rewrite(np.ones(targets.shape, dtype=bool), targets)

    def pulse(self, increase: np.ndarray, decrease: np.ndarray) -> np.ndarray:
        """Pulse ``G+`` where ``increase`` and ``G-`` where ``decrease`` (one SET each).

        Then refresh saturated pairs; return the mask of refreshed pairs.
        """
        self.g_plus = self.device.set_pulse(self.g_plus, self.rng, increase)
        self.g_minus = self.device.set_pulse(self.g_minus, self.rng, decrease)
        self.pulses += int(np.count_nonzero(increase)) + int(np.count_nonzero(decrease))
        return self.refresh_saturated()

    def refresh_saturated(self) -> np.ndarray:
        """Refresh every pair with a device at or above the threshold; return them."""
        saturated = (self.g_plus >= self.refresh_threshold) | (
            self.g_minus >= self.refresh_threshold
        )
        if saturated.any():
            self._rewrite(saturated, self.read())
            self.refreshes += int(np.count_nonzero(saturated))
        return saturated

    def _rewrite(self, mask: np.ndarray, values: np.ndarray) -> None:
        device = self.device
        limit = 0.9 * self.refresh_threshold
        selected = values[mask]
        plus_target = np.clip(np.where(selected > 0, selected, 0.0), 0.0, limit)
        minus_target = np.clip(np.where(selected < 0, -selected, 0.0), 0.0, limit)
        new_plus, _ = program_and_verify(
            device, plus_target, self.rng, tolerance=self.verify_tolerance
        )
        new_minus, _ = program_and_verify(
            device, minus_target, self.rng, tolerance=self.verify_tolerance
        )
        self.g_plus = self.g_plus.copy()
        self.g_minus = self.g_minus.copy()
        self.g_plus[mask] = new_plus
        self.g_minus[mask] = new_minus

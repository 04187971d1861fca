"""Hardware-in-the-loop training: weights live on PCM pairs, updates become pulses.

The forward pass uses the weights read from the emulated devices (with read
noise), so the gradient is taken at the hardware's weights, as in the SNU
hardware experiment of Wozniak et al. (Nature Machine Intelligence 2, 325-336,
2020). Updates are accumulated digitally and applied as pulses, the
mixed-precision scheme of Nandakumar et al. (Frontiers in Neuroscience 14, 406,
2020). Each weight keeps an accumulator ``chi`` and an update ``delta`` adds
to it. For every whole ``epsilon`` in ``chi`` one pulse goes to ``G+`` when
``chi > 0`` or to ``G-`` when ``chi < 0``, and ``chi`` moves by ``epsilon``
toward 0, so ``chi`` loses the number of pulses times ``epsilon``. ``epsilon``
is the mean device update, :func:`mean_set_increment` over the conductances
from RESET to the refresh threshold. At most ``max_pulses_per_update`` pulses
fire per update, and the rest stays in ``chi`` for later updates. A pair with
a device near saturation is refreshed (see
:class:`~snubridge.pcm.programming.DifferentialPair`).

:class:`PCMWeight` is the numpy wrapper; :func:`train_in_the_loop` runs a
training loop on any gradient function, and :class:`KerasHardwareLoop` routes
the ``kernel`` gradients of a Keras model to PCM weights while the other
variables (thresholds, biases) train digitally.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from snubridge.errors import DeviceError
from snubridge.pcm.devices import PulsePCM, check_number, nandakumar_2018
from snubridge.pcm.programming import DifferentialPair

logger = logging.getLogger(__name__)


def expected_increment(device: PulsePCM, g: float) -> float:
    """Return the expected SET increment in uS at conductance ``g``.

    For an increment ``N(mu, sigma^2)`` clipped at 0 (the default, see
    ``PulsePCM.allow_negative_increments``) the expectation is
    ``mu Phi(mu / sigma) + sigma phi(mu / sigma)``. ``Phi`` and ``phi`` are the
    standard normal distribution and density. Without the clip it is ``mu``.
    """
    mean, spread = (float(v) for v in device.increment_moments(g))
    if device.allow_negative_increments or spread == 0.0:
        return mean if device.allow_negative_increments else max(mean, 0.0)
    z = mean / spread
    cdf = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return mean * cdf + spread * pdf


def mean_set_increment(device: PulsePCM, g_stop: float) -> float:
    """Return the mean device update ``epsilon`` in uS from RESET to ``g_stop``.

    The conductance follows its expected path ``G_(n+1) = G_n + E[dG](G_n)``
    (:func:`expected_increment`, capped at ``g_max``) from ``g_reset`` until it
    reaches ``g_stop`` after ``N`` pulses, and ``epsilon = (G_N - g_reset) / N``.
    For the default :func:`nandakumar_2018` device and ``g_stop = 9.56`` uS this
    is about 0.71 uS, against 0.90 uS for the first pulse from RESET. A Monte
    Carlo run of 20,000 devices gave 0.72 uS.
    """
    if not device.g_reset < g_stop <= device.g_max:
        raise DeviceError(
            f"mean_set_increment: g_stop={g_stop} uS must lie above g_reset="
            f"{device.g_reset} uS and at most g_max={device.g_max} uS."
        )
    g = float(device.g_reset)
    for pulses in range(1, 10_001):
        g = min(g + expected_increment(device, g), device.g_max)
        if g >= g_stop:
            return (g - device.g_reset) / pulses
    raise DeviceError(
        f"mean_set_increment: the expected conductance does not reach g_stop="
        f"{g_stop} uS within 10,000 pulses; lower g_stop."
    )


class PCMWeight:
    """Weight array on differential PCM pairs, read and written like a variable.

    Args:
        initial: Initial weights, any shape.
        device: Pulse-level device model; default :func:`nandakumar_2018`.
        rng: Random generator (or an int seed).
        weight_range: Weight magnitude in weight units that maps to the usable
            conductance range; default twice the largest initial ``|w|``.
            The range fixes both the largest weight and the weight step of one
            pulse (``step_us / scale``), so it trades clipping against
            resolution. NOTE: the default suits weights that stay near their
            initial size; weights that grow in training (the JSB network's
            hidden kernel grows from 0.16 to about 1.5) are clipped by it, and
            BENCHMARKS.md lists the measured effect of other ranges.
        max_pulses_per_update: Upper bound of pulses per device per update.
        refresh_threshold: Conductance in uS that triggers a refresh.
        step_us: Device update ``epsilon`` in uS that one pulse is taken to
            add; default :func:`mean_set_increment` up to the refresh threshold.
        name: Name used in logs.
    """

    def __init__(
        self,
        initial: np.ndarray,
        device: PulsePCM | None = None,
        *,
        rng: np.random.Generator | int = 0,
        weight_range: float | None = None,
        max_pulses_per_update: int = 1,
        refresh_threshold: float | None = None,
        step_us: float | None = None,
        name: str = "weight",
    ) -> None:
        device = device or nandakumar_2018()
        if not isinstance(device, PulsePCM):
            raise DeviceError(
                "PCMWeight programs with SET pulses and needs a PulsePCM device model, "
                f"received {type(device).__name__}."
            )
        initial = np.asarray(initial, dtype=np.float64)
        if not np.all(np.isfinite(initial)):
            raise DeviceError(
                f"PCMWeight {name!r}: initial weights contain NaN or infinity."
            )
        self.rng = (
            rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        )
        if weight_range is None:
            peak = float(np.abs(initial).max(initial=0.0))
            weight_range = 2.0 * peak if peak > 0 else 1.0
        weight_range = check_number(
            "PCMWeight", "weight_range", weight_range, minimum=0.0, strict_minimum=True
        )
        if int(max_pulses_per_update) < 1:
            raise DeviceError(
                "PCMWeight.max_pulses_per_update must be at least 1, received "
                f"{max_pulses_per_update!r}."
            )
        self.name = name
        self.device = device
        self.max_pulses_per_update = int(max_pulses_per_update)
        self.pair = DifferentialPair(
            initial.shape, device, self.rng, refresh_threshold=refresh_threshold
        )
        # Weights of weight_range map to the largest conductance a refresh rewrites.
        self.scale = 0.9 * self.pair.refresh_threshold / weight_range
        self.pair.program(initial * self.scale)
        if step_us is None:
            step_us = mean_set_increment(device, self.pair.refresh_threshold)
        step_us = check_number(
            "PCMWeight", "step_us", step_us, minimum=0.0, strict_minimum=True
        )
        self.step = float(step_us) / self.scale
        self.accumulator = np.zeros(initial.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the weight array."""
        return self.accumulator.shape

    @property
    def devices(self) -> int:
        """Number of PCM devices: two per weight."""
        return 2 * self.accumulator.size

    def read(self) -> np.ndarray:
        """Return one noisy read of the weights, ``(G+ - G-) / scale``."""
        return self.pair.read() / self.scale

    def value(self) -> np.ndarray:
        """Return the noise-free weights ``(G+ - G-) / scale``."""
        return self.pair.difference() / self.scale

    def apply_update(self, delta: np.ndarray) -> int:
        """Add ``delta`` to the accumulators, fire the pulses due; return how many."""
        delta = np.asarray(delta, dtype=np.float64)
        if delta.shape != self.shape:
            raise DeviceError(
                f"PCMWeight {self.name!r}: update has shape {delta.shape}, "
                f"expected {self.shape}."
            )
        if not np.all(np.isfinite(delta)):
            raise DeviceError(
                f"PCMWeight {self.name!r}: update contains NaN or infinity."
            )
        self.accumulator += delta
        counts = np.trunc(self.accumulator / self.step)
        counts = np.clip(
            counts, -self.max_pulses_per_update, self.max_pulses_per_update
        )
        fired = 0
        for index in range(int(np.abs(counts).max(initial=0))):
            increase = counts > index
            decrease = counts < -index
            self.pair.pulse(increase, decrease)
            fired += int(np.count_nonzero(increase)) + int(np.count_nonzero(decrease))
        self.accumulator -= counts * self.step
        return fired


class Adam:
    """Adam update rule (Kingma and Ba, ICLR 2015) computed digitally.

    ``update(name, gradient)`` returns the weight change
    ``-lr m_hat / (sqrt(v_hat) + eps)``.
    """

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
    ) -> None:
        self.learning_rate = learning_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self._moments: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}

    def update(self, name: str, gradient: np.ndarray) -> np.ndarray:
        """Return the weight change for ``gradient`` of the variable ``name``."""
        m, v, count = self._moments.get(
            name, (np.zeros_like(gradient), np.zeros_like(gradient), 0)
        )
        count += 1
        m = self.beta_1 * m + (1 - self.beta_1) * gradient
        v = self.beta_2 * v + (1 - self.beta_2) * gradient**2
        self._moments[name] = (m, v, count)
        m_hat = m / (1 - self.beta_1**count)
        v_hat = v / (1 - self.beta_2**count)
        return -self.learning_rate * m_hat / (np.sqrt(v_hat) + self.epsilon)


def train_in_the_loop(
    weights: Mapping[str, PCMWeight],
    gradient: Callable[[dict[str, np.ndarray]], tuple[float, dict[str, np.ndarray]]],
    *,
    steps: int,
    learning_rate: float = 1e-3,
    rule: str = "sgd",
) -> list[float]:
    """Train PCM weights on a gradient function; return the loss of every step.

    Each step reads every weight (noisy), calls ``gradient(read_weights)`` for
    ``(loss, gradients)``, turns the gradients into updates (``"sgd"``:
    ``-lr g``; ``"adam"``: :class:`Adam`) and applies them as pulses.
    """
    if rule not in ("sgd", "adam"):
        raise DeviceError(f"rule={rule!r} is not supported; expected 'sgd' or 'adam'.")
    adam = Adam(learning_rate) if rule == "adam" else None
    history = []
    for _ in range(int(steps)):
        values = {name: weight.read() for name, weight in weights.items()}
        loss, gradients = gradient(values)
        for name, weight in weights.items():
            grad = np.asarray(gradients[name], dtype=np.float64)
            delta = adam.update(name, grad) if adam else -learning_rate * grad
            weight.apply_update(delta)
        history.append(float(loss))
    return history


def masked_frame_nll(targets: Any, probabilities: Any, mask: Any) -> Any:
    """Return the frame NLL in nats per valid step as a TensorFlow scalar.

    ``sum_{n,t} m[n,t] sum_k -(y log p + (1 - y) log(1 - p)) / sum_{n,t} m[n,t]``
    with ``p`` clipped to ``[1e-7, 1 - 1e-7]``, the same quantity as
    :func:`snubridge.data.jsb.frame_nll`.
    """
    import tensorflow as tf

    p = tf.clip_by_value(probabilities, 1e-7, 1 - 1e-7)
    frame = -tf.reduce_sum(
        targets * tf.math.log(p) + (1 - targets) * tf.math.log(1 - p), -1
    )
    return tf.reduce_sum(frame * mask) / tf.reduce_sum(mask)


class KerasHardwareLoop:
    """Train a Keras model whose ``kernel`` variables live on PCM pairs.

    Before every step the PCM weights are read into the kernel variables, so
    the forward pass and the gradient use the hardware's weights. The kernel
    gradients become pulse updates (digital Adam on the accumulators), and the
    other trainable variables take a Keras Adam step.

    Args:
        model: Keras model (for example :func:`snubridge.models.jsb_ssnu`).
        loss: ``loss(targets, predictions, mask) -> scalar tensor``.
        device: Pulse-level device model.
        learning_rate: Adam learning rate of both parts.
        seed: Seed of the device randomness.
        weight_range: See :class:`PCMWeight`: one value for every kernel, a
            mapping from variable path (``"ssnu_hidden/kernel"``) to value, or
            None for :class:`PCMWeight`'s default per kernel. Kernels missing
            from a mapping take the default.
        max_pulses_per_update: See :class:`PCMWeight`.
    """

    def __init__(
        self,
        model: Any,
        loss: Callable[..., Any],
        *,
        device: PulsePCM | None = None,
        learning_rate: float = 1e-3,
        seed: int = 0,
        weight_range: float | Mapping[str, float] | None = None,
        max_pulses_per_update: int = 1,
    ) -> None:
        import keras
        import tensorflow as tf

        self.model = model
        self.loss = loss
        rng = np.random.default_rng(seed)
        self.analog = []
        self.digital = []
        kernels = [
            variable.path
            for variable in model.trainable_variables
            if variable.path.rsplit("/", 1)[-1] in ("kernel", "recurrent_kernel")
        ]
        if isinstance(weight_range, Mapping):
            unknown = sorted(set(weight_range) - set(kernels))
            if unknown:
                raise DeviceError(
                    f"weight_range contains unknown kernel paths {unknown}; the "
                    f"model's kernels are {kernels}."
                )
        for variable in model.trainable_variables:
            if variable.path in kernels:
                weight = PCMWeight(
                    np.asarray(variable.numpy()),
                    device,
                    rng=rng,
                    weight_range=weight_range.get(variable.path)
                    if isinstance(weight_range, Mapping)
                    else weight_range,
                    max_pulses_per_update=max_pulses_per_update,
                    name=variable.path,
                )
                self.analog.append((variable, weight))
            else:
                self.digital.append(variable)
        if not self.analog:
            raise DeviceError(
                "The model has no 'kernel' variables to place on PCM devices."
            )
        self.rule = Adam(learning_rate)
        self.optimizer = keras.optimizers.Adam(learning_rate)
        variables = [variable for variable, _ in self.analog] + self.digital

        # One traced graph per input shape; the kernels enter as variables, so
        # new device reads need no retracing.
        @tf.function(reduce_retracing=True)
        def gradients(inputs, targets, mask):
            with tf.GradientTape() as tape:
                predictions = self.model(inputs, training=True)
                value = self.loss(targets, predictions, mask)
            return value, tape.gradient(value, variables)

        self._gradients = gradients

    @property
    def devices(self) -> int:
        """PCM devices holding the kernels."""
        return sum(weight.devices for _, weight in self.analog)

    @property
    def pulses(self) -> int:
        """SET pulses fired so far on all kernels, refresh programming excluded."""
        return sum(weight.pair.pulses for _, weight in self.analog)

    @property
    def refreshes(self) -> int:
        """Pair refreshes so far on all kernels."""
        return sum(weight.pair.refreshes for _, weight in self.analog)

    def train_step(self, inputs: Any, targets: Any, mask: Any = None) -> float:
        """Run one step on a batch; return the loss with the weights as read."""
        for variable, weight in self.analog:
            variable.assign(weight.read().astype(variable.dtype))
        if mask is None:
            mask = np.ones(np.shape(targets)[:2], dtype=np.float32)
        loss, gradients = self._gradients(
            np.asarray(inputs, np.float32),
            np.asarray(targets, np.float32),
            np.asarray(mask, np.float32),
        )
        count = len(self.analog)
        for (variable, weight), grad in zip(
            self.analog, gradients[:count], strict=True
        ):
            weight.apply_update(self.rule.update(variable.path, np.asarray(grad)))
        digital = [(g, v) for g, v in zip(gradients[count:], self.digital, strict=True)]
        self.optimizer.apply_gradients([(g, v) for g, v in digital if g is not None])
        return float(loss)

    def load_noise_free(self) -> None:
        """Write the noise-free PCM weights into the kernel variables."""
        for variable, weight in self.analog:
            variable.assign(weight.value().astype(variable.dtype))

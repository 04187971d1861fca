"""The one description of an SNU network that every back end reads.

Keras layers are turned into a :class:`NetworkSpec` (see :mod:`snubridge.keras_io`),
the parameter file stores it (:mod:`snubridge.params_file`), and the Brian2
exporter, the NIR writer, the numpy reference simulator and the PCM crossbar
emulator all read it. A spec is a feed-forward chain of layers; recurrence lives
inside a layer (``snu_recurrent``).

Dynamics of an SNU layer (Wozniak et al., Nature Machine Intelligence 2,
325-336, 2020), per sample and time step ``t``::

    a_t = W x_t + b + H y_{t-1}                      (b, H optional)
    s_t = g(a_t + l * s_{t-1} * (1 - r_{t-1}))
    y_t = h(s_t - theta)

``g`` is the identity or ReLU, ``h`` a step (``z > 0`` fires) or a sigmoid, and
``r = y`` except under lateral inhibition, where ``r`` is 1 for every neuron of
a sample in which any neuron fired. States are dimensionless; ``dt`` and ``tau``
are in seconds.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from snubridge.errors import SpecError

LAYER_KINDS = ("snu_dense", "snu_recurrent", "snu_conv2d", "readout", "flatten")
SPIKING_KINDS = ("snu_dense", "snu_recurrent", "snu_conv2d")
DECAY_MODES = ("direct", "exact", "euler")
ACTIVATIONS = ("identity", "relu")
OUTPUTS = ("step", "sigmoid")
READOUT_MODES = ("per_step", "mean", "leaky", "leaky_last")
READOUT_ACTIVATIONS = ("linear", "softmax", "sigmoid")
PADDINGS = ("valid", "same")
PRECISIONS = ("float32", "float64")

# Layer names reach logs, file paths and (after sanitising) Brian2 object names,
# so they are held to a conservative character set.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def decay_from_tau(tau: float, dt: float, mode: str) -> float:
    """Return the decay per step ``l`` of a membrane time constant.

    ``mode="exact"`` integrates ``dv/dt = -v / tau`` exactly over one step,
    ``l = exp(-dt / tau)``; ``mode="euler"`` is the forward Euler step
    ``l = 1 - dt / tau``. ``tau = inf`` gives ``l = 1`` (no leak). Both ``tau``
    and ``dt`` are in seconds.
    """
    _check_positive("tau", tau, allow_inf=True)
    _check_positive("dt", dt)
    if mode == "exact":
        return 1.0 if math.isinf(tau) else math.exp(-dt / tau)
    if mode == "euler":
        if tau < dt:
            raise SpecError(
                f"Euler decay needs tau >= dt, received tau={tau!r} s and dt={dt!r} s; "
                "use mode='exact' or a longer tau."
            )
        return 1.0 if math.isinf(tau) else 1.0 - dt / tau
    raise SpecError(f"Unknown decay mode {mode!r}; expected 'exact' or 'euler'.")


def tau_from_decay(decay: float, dt: float, mode: str) -> float:
    """Return the membrane time constant in seconds that gives decay ``l``.

    Inverse of :func:`decay_from_tau`: ``tau = -dt / ln(l)`` (exact) or
    ``tau = dt / (1 - l)`` (Euler); ``l = 1`` gives ``inf``.
    """
    check_decay(decay, "decay")
    _check_positive("dt", dt)
    if decay == 1.0:
        return math.inf
    if mode == "exact":
        return -dt / math.log(decay)
    if mode == "euler":
        return dt / (1.0 - decay)
    raise SpecError(f"Unknown decay mode {mode!r}; expected 'exact' or 'euler'.")


def check_decay(decay: Any, where: str) -> None:
    """Raise :class:`SpecError` unless ``decay`` is a number in (0, 1]."""
    try:
        value = float(decay)
    except (TypeError, ValueError):
        raise SpecError(f"{where}: decay must be a number, received {decay!r}.") from None
    if not (0.0 < value <= 1.0):
        raise SpecError(
            f"{where}: decay must lie in (0, 1], received {value!r}; "
            "use l = exp(-dt/tau) for a time constant tau."
        )


def _check_positive(field: str, value: Any, allow_inf: bool = False) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{field} must be a number, received {value!r}.") from None
    if math.isnan(number) or number <= 0 or (math.isinf(number) and not allow_inf):
        raise SpecError(f"{field} must be a positive finite number, received {value!r}.")


def check_name(name: Any) -> str:
    """Return ``name`` if it is a safe layer name, else raise :class:`SpecError`."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SpecError(
            f"Invalid layer name {name!r}: names may hold letters, digits, '_', '.' "
            "and '-' (at most 128 characters, not starting with '.' or '-'). "
            "Rename the layer."
        )
    return name


def _finite_array(value: Any, field: str, layer: str, ndim: int | None = None) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SpecError(f"Layer {layer!r}: {field} is not numeric ({value!r}).") from None
    if ndim is not None and array.ndim != ndim:
        raise SpecError(
            f"Layer {layer!r}: {field} must have {ndim} dimensions, "
            f"received shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise SpecError(
            f"Layer {layer!r}: {field} holds a non-finite value "
            f"({array[tuple(bad)]!r} at index {tuple(int(i) for i in bad)}); "
            "retrain or replace the weights before saving."
        )
    return array


def _choice(value: Any, allowed: Sequence[str], field: str, layer: str) -> str:
    if value not in allowed:
        raise SpecError(
            f"Layer {layer!r}: {field}={value!r} is not supported; "
            f"expected one of {', '.join(map(repr, allowed))}."
        )
    return value


def conv_output_hw(
    height: int, width: int, kernel_hw: tuple[int, int], strides: tuple[int, int], padding: str
) -> tuple[int, int]:
    """Return the output height and width of a 2-D convolution (Keras rules)."""
    if padding == "same":
        return -(-height // strides[0]), -(-width // strides[1])
    return (
        (height - kernel_hw[0]) // strides[0] + 1,
        (width - kernel_hw[1]) // strides[1] + 1,
    )


@dataclasses.dataclass
class LayerSpec:
    """One layer of an SNU network, in back-end independent form.

    Attributes:
        name: Layer name, as in the Keras model.
        kind: One of ``LAYER_KINDS``.
        kernel: Input weights ``W``: ``(in, out)`` for dense layers and
            readouts (Keras order), ``(kh, kw, c_in, c_out)`` for convolutions.
        threshold: Firing threshold ``theta`` per neuron, ``(out,)``; per output
            channel ``(c_out,)`` for convolutions. Dimensionless.
        bias: Optional input bias ``b``, ``(out,)`` or ``(c_out,)``.
        recurrent_kernel: ``H``, ``(out, out)``, rows indexed by the presynaptic
            neuron, for ``snu_recurrent`` only.
        decay: Membrane decay per step ``l`` in (0, 1]; for readouts the leak of
            the leaky integrator.
        decay_mode: ``"direct"`` (``l`` given as is), ``"exact"``
            (``l = exp(-dt/tau)``) or ``"euler"`` (``l = 1 - dt/tau``).
        tau: Membrane time constant in seconds when ``decay_mode`` is not
            ``"direct"``.
        activation: ``g``: ``"identity"`` or ``"relu"`` (clips the membrane at 0).
        output: ``h``: ``"step"`` (spiking SNU) or ``"sigmoid"`` (sSNU).
        lateral_inhibition: Winner-take-all within the layer, per sample.
        readout_mode: For readouts: ``"per_step"`` (``W x_t + b`` at every
            step), ``"mean"`` (mean over steps), ``"leaky"`` (leaky integrator
            ``u_t = l u_{t-1} + W x_t + b``, every step) or ``"leaky_last"``
            (its final value).
        readout_activation: ``"linear"``, ``"softmax"`` or ``"sigmoid"``.
        strides, padding: Convolution parameters (Keras conventions).
        input_shape: Per-step input shape of the layer, without the batch and
            time axes.
    """

    name: str
    kind: str
    kernel: np.ndarray | None = None
    threshold: np.ndarray | None = None
    bias: np.ndarray | None = None
    recurrent_kernel: np.ndarray | None = None
    decay: float = 1.0
    decay_mode: str = "direct"
    tau: float | None = None
    activation: str = "relu"
    output: str = "step"
    lateral_inhibition: bool = False
    readout_mode: str = "mean"
    readout_activation: str = "linear"
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    input_shape: tuple[int, ...] = ()

    @property
    def reset(self) -> str:
        """Reset rule: ``"zero"`` after a step spike, ``"scale"`` (by ``1 - y``) for sSNU."""
        return "zero" if self.output == "step" else "scale"

    @property
    def is_spiking(self) -> bool:
        """True for SNU layers with a step output, whose outputs are spikes."""
        return self.kind in SPIKING_KINDS and self.output == "step"

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-step output shape, without batch and time axes."""
        if self.kind == "flatten":
            return (int(np.prod(self.input_shape)),)
        if self.kind == "snu_conv2d":
            height, width, _ = self.input_shape
            out_h, out_w = conv_output_hw(
                height, width, self.kernel.shape[:2], self.strides, self.padding
            )
            return (out_h, out_w, int(self.kernel.shape[3]))
        return (int(self.kernel.shape[1]),)

    @property
    def units(self) -> int:
        """Number of output neurons per step."""
        return int(np.prod(self.output_shape))

    def validate(self) -> LayerSpec:
        """Check every field and return ``self``; raise :class:`SpecError` naming the fault."""
        check_name(self.name)
        name = self.name
        _choice(self.kind, LAYER_KINDS, "kind", name)
        self.input_shape = tuple(int(n) for n in self.input_shape)
        if not self.input_shape or any(n <= 0 for n in self.input_shape):
            raise SpecError(
                f"Layer {name!r}: input_shape must be positive sizes, "
                f"received {self.input_shape}."
            )
        if self.kind == "flatten":
            return self
        _choice(self.decay_mode, DECAY_MODES, "decay_mode", name)
        check_decay(self.decay, f"Layer {name!r}")
        self.decay = float(self.decay)
        if self.decay_mode != "direct":
            if self.tau is None:
                raise SpecError(
                    f"Layer {name!r}: decay_mode={self.decay_mode!r} needs tau in seconds."
                )
            self.tau = float(self.tau)
        conv = self.kind == "snu_conv2d"
        self.kernel = _finite_array(self.kernel, "kernel", name, 4 if conv else 2)
        expected_in = self.input_shape[-1] if conv else int(np.prod(self.input_shape))
        if conv and len(self.input_shape) != 3:
            raise SpecError(
                f"Layer {name!r}: a convolution needs input_shape (height, width, "
                f"channels), received {self.input_shape}."
            )
        if not conv and len(self.input_shape) != 1:
            raise SpecError(
                f"Layer {name!r}: dense input must be flat, received input_shape "
                f"{self.input_shape}; put a flatten layer before it."
            )
        kernel_in = self.kernel.shape[2] if conv else self.kernel.shape[0]
        if kernel_in != expected_in:
            raise SpecError(
                f"Layer {name!r}: kernel expects {kernel_in} inputs but the layer "
                f"receives {expected_in} (kernel shape {self.kernel.shape}, "
                f"input_shape {self.input_shape})."
            )
        n_out = int(self.kernel.shape[-1])
        if self.bias is not None:
            self.bias = _finite_array(self.bias, "bias", name, 1)
            if self.bias.shape != (n_out,):
                raise SpecError(
                    f"Layer {name!r}: bias must have shape ({n_out},), "
                    f"received {self.bias.shape}."
                )
        if self.kind == "readout":
            _choice(self.readout_mode, READOUT_MODES, "readout_mode", name)
            _choice(self.readout_activation, READOUT_ACTIVATIONS, "readout_activation", name)
            return self
        _choice(self.activation, ACTIVATIONS, "activation", name)
        _choice(self.output, OUTPUTS, "output", name)
        self.threshold = _finite_array(self.threshold, "threshold", name, 1)
        if self.threshold.shape != (n_out,):
            raise SpecError(
                f"Layer {name!r}: threshold must have shape ({n_out},), "
                f"received {self.threshold.shape}."
            )
        if self.lateral_inhibition and self.output != "step":
            raise SpecError(
                f"Layer {name!r}: lateral inhibition is defined for step outputs only; "
                "set output='step' or turn lateral_inhibition off."
            )
        if self.kind == "snu_recurrent":
            self.recurrent_kernel = _finite_array(
                self.recurrent_kernel, "recurrent_kernel", name, 2
            )
            if self.recurrent_kernel.shape != (n_out, n_out):
                raise SpecError(
                    f"Layer {name!r}: recurrent_kernel must have shape "
                    f"({n_out}, {n_out}), received {self.recurrent_kernel.shape}."
                )
        elif self.recurrent_kernel is not None:
            raise SpecError(
                f"Layer {name!r}: only snu_recurrent layers take a recurrent_kernel."
            )
        if conv:
            self.strides = tuple(int(s) for s in self.strides)
            if len(self.strides) != 2 or min(self.strides) < 1:
                raise SpecError(
                    f"Layer {name!r}: strides must be two positive integers, "
                    f"received {self.strides}."
                )
            _choice(self.padding, PADDINGS, "padding", name)
            if min(self.output_shape[:2]) < 1:
                raise SpecError(
                    f"Layer {name!r}: the kernel {self.kernel.shape[:2]} does not fit "
                    f"the input {self.input_shape[:2]}."
                )
        return self


@dataclasses.dataclass
class NetworkSpec:
    """A feed-forward chain of :class:`LayerSpec` with shared time step.

    Attributes:
        layers: Layers in order from input to output.
        input_shape: Per-step input shape (no batch or time axis).
        dt: Simulation time step in seconds.
        precision: ``"float32"`` or ``"float64"``, the dtype the Keras model
            computed in.
        name: Network name.
        metadata: Extra string or number entries, stored with the file.
    """

    layers: list[LayerSpec]
    input_shape: tuple[int, ...]
    dt: float = 1e-3
    precision: str = "float32"
    name: str = "snu_network"
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> NetworkSpec:
        """Check the chain of shapes and every layer; return ``self``."""
        _check_positive("dt", self.dt)
        self.dt = float(self.dt)
        check_name(self.name)
        if self.precision not in PRECISIONS:
            raise SpecError(
                f"precision={self.precision!r} is not supported; expected 'float32' "
                "or 'float64'."
            )
        if not self.layers:
            raise SpecError("A network needs at least one layer.")
        self.input_shape = tuple(int(n) for n in self.input_shape)
        shape = self.input_shape
        seen: set[str] = set()
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, LayerSpec):
                raise SpecError(
                    f"Layer {index} is a {type(layer).__name__}, expected a LayerSpec."
                )
            if layer.name in seen:
                raise SpecError(f"Two layers are named {layer.name!r}; names must be unique.")
            seen.add(layer.name)
            if tuple(layer.input_shape) != shape:
                raise SpecError(
                    f"Layer {layer.name!r} (position {index}) expects input shape "
                    f"{tuple(layer.input_shape)} but the layer before it produces "
                    f"{shape}."
                )
            layer.validate()
            if layer.kind == "readout" and index != len(self.layers) - 1:
                raise SpecError(
                    f"Readout layer {layer.name!r} must be the last layer, found at "
                    f"position {index} of {len(self.layers)}."
                )
            shape = layer.output_shape
        return self

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-step output shape of the last layer."""
        return self.layers[-1].output_shape

    def layer(self, name: str) -> LayerSpec:
        """Return the layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise SpecError(
            f"No layer named {name!r}; layers are {', '.join(l.name for l in self.layers)}."
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a plain-dict view (arrays as numpy arrays)."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "dt": self.dt,
            "precision": self.precision,
            "metadata": dict(self.metadata),
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NetworkSpec:
        """Build and validate a spec from :meth:`to_dict` output."""
        layers = [LayerSpec(**dict(entry)) for entry in data["layers"]]
        return cls(
            layers=layers,
            input_shape=tuple(data["input_shape"]),
            dt=data.get("dt", 1e-3),
            precision=data.get("precision", "float32"),
            name=data.get("name", "snu_network"),
            metadata=dict(data.get("metadata", {})),
        ).validate()

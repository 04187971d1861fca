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

Extension layer kinds
---------------------
Besides the built-in :data:`LAYER_KINDS`, other packages add layer kinds with
:func:`register_layer_kind`, or without any call through an entry point in the
group ``snubridge.layer_kinds`` (:data:`LAYER_KIND_ENTRY_POINT_GROUP`) whose
name is the kind and whose value is a :class:`LayerKind` (or a callable with no
arguments that returns one), for example in ``pyproject.toml``::

    [project.entry-points."snubridge.layer_kinds"]
    my_layer = "my_package.kind:LAYER_KIND"

The entry points are loaded once: the first time a lookup misses (for example
when a spec names a kind that is not registered) or the kinds are listed. An
extension layer keeps its own parameters in
:attr:`LayerSpec.params` (plain numbers and short strings) next to the common
fields, and its :class:`LayerKind` defines how to compute its output shape,
validate it, simulate it in :mod:`snubridge.reference` and map it to and from
a Keras layer (:mod:`snubridge.keras_io`). Converters of extension kinds
register in :mod:`snubridge.converters.registry`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from snubridge.errors import SpecError

logger = logging.getLogger(__name__)

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

LAYER_KIND_ENTRY_POINT_GROUP = "snubridge.layer_kinds"
# The same rule as the converter registry's keys, so one name serves both.
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Extension parameters: identifier keys, and strings from a character set that
# cannot break out of a file attribute, a log line or generated code.
PARAM_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PARAM_STRING_PATTERN = re.compile(r"^[A-Za-z0-9_.:+\-]{0,128}$")
MAX_PARAMS = 64
ParamValue = float | int | str


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
        raise SpecError(
            f"{where}: decay must be a number, received {decay!r}."
        ) from None
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
        raise SpecError(
            f"{field} must be a positive finite number, received {value!r}."
        )


def check_name(name: Any) -> str:
    """Return ``name`` if it is a safe layer name, else raise :class:`SpecError`."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SpecError(
            f"Invalid layer name {name!r}: names may hold letters, digits, '_', '.' "
            "and '-' (at most 128 characters, not starting with '.' or '-'). "
            "Rename the layer."
        )
    return name


def _finite_array(
    value: Any, field: str, layer: str, ndim: int | None = None
) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SpecError(
            f"Layer {layer!r}: {field} is not numeric ({value!r})."
        ) from None
    if ndim is not None and array.ndim != ndim:
        raise SpecError(
            f"Layer {layer!r}: {field} must have {ndim} dimensions, "
            f"received shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise SpecError(
            f"Layer {layer!r}: {field} holds a non-finite value "
            f"({float(array[tuple(bad)])} at index {tuple(int(i) for i in bad)}); "
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
    height: int,
    width: int,
    kernel_hw: tuple[int, int],
    strides: tuple[int, int],
    padding: str,
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
        params: Parameters of an extension kind (see :class:`LayerKind`),
            name to a finite number or a short string; empty for the
            built-in kinds.
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
    params: dict[str, ParamValue] = dataclasses.field(default_factory=dict)

    @property
    def reset(self) -> str:
        """Reset rule: ``"zero"`` after a spike, ``"scale"`` by ``1 - y`` for sSNU."""
        return "zero" if self.output == "step" else "scale"

    @property
    def is_spiking(self) -> bool:
        """True for layers whose outputs are spikes (SNU layers with a step output)."""
        if self.kind in LAYER_KINDS:
            return self.kind in SPIKING_KINDS and self.output == "step"
        return get_layer_kind(self.kind).is_spiking(self)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-step output shape, without batch and time axes."""
        if self.kind not in LAYER_KINDS:
            return get_layer_kind(self.kind).layer_output_shape(self)
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
        """Check every field and return ``self``; raise :class:`SpecError` on a fault.

        A kind outside :data:`LAYER_KINDS` must be a registered extension kind
        (entry points are loaded the first time one is missing); its
        :class:`LayerKind` validates the layer.
        """
        check_name(self.name)
        name = self.name
        self.params = check_params(self.params, f"Layer {name!r}")
        if isinstance(self.kind, str) and self.kind.strip().lower() in LAYER_KINDS:
            self.kind = self.kind.strip().lower()
            if self.params:
                raise SpecError(
                    f"Layer {name!r}: the built-in kind {self.kind!r} takes no params, "
                    f"received {sorted(self.params)}; remove them or use an extension "
                    "kind that reads them."
                )
            return self.validate_as(self.kind)
        extension = get_layer_kind(self.kind, where=f"Layer {name!r}")
        self.kind = extension.kind
        self._check_input_shape()
        if extension.validate is not None:
            extension.validate(self)
        shape = self.output_shape
        if not shape or any(n < 1 for n in shape):
            raise SpecError(
                f"Layer {name!r} of kind {self.kind!r}: output shape {shape} is empty; "
                "check input_shape and the kind's parameters."
            )
        return self

    def _check_input_shape(self) -> None:
        self.input_shape = tuple(int(n) for n in self.input_shape)
        if not self.input_shape or any(n <= 0 for n in self.input_shape):
            raise SpecError(
                f"Layer {self.name!r}: input_shape must be positive sizes, "
                f"received {self.input_shape}."
            )

    def validate_as(self, kind: str) -> LayerSpec:
        """Check the common fields as the built-in ``kind`` requires; return ``self``.

        :meth:`validate` calls this for built-in layers. An extension kind whose
        layer has the fields of a built-in one (for example a dense SNU with an
        extra parameter) calls it from its ``validate`` hook.

        Raises:
            SpecError: ``kind`` is not one of :data:`LAYER_KINDS`, or a field
                does not fit it.
        """
        check_name(self.name)
        name = self.name
        _choice(kind, LAYER_KINDS, "kind", name)
        self._check_input_shape()
        if kind == "flatten":
            return self
        _choice(self.decay_mode, DECAY_MODES, "decay_mode", name)
        check_decay(self.decay, f"Layer {name!r}")
        self.decay = float(self.decay)
        if self.decay_mode != "direct":
            if self.tau is None:
                raise SpecError(
                    f"Layer {name!r}: decay_mode={self.decay_mode!r} needs tau in "
                    "seconds."
                )
            self.tau = float(self.tau)
        conv = kind == "snu_conv2d"
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
        if kind == "readout":
            _choice(self.readout_mode, READOUT_MODES, "readout_mode", name)
            _choice(
                self.readout_activation, READOUT_ACTIVATIONS, "readout_activation", name
            )
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
        if kind == "snu_recurrent":
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
                raise SpecError(
                    f"Two layers are named {layer.name!r}; names must be unique."
                )
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
            f"No layer named {name!r}; layers are "
            f"{', '.join(layer.name for layer in self.layers)}."
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


# Extension layer kinds ---------------------------------------------------------

#: ``output_shape(layer)`` returns the per-step output shape of a layer.
OutputShapeFunction = Callable[[LayerSpec], Sequence[int]]
#: ``simulate(layer, inputs[, matmul=...])`` returns ``(outputs, states)``.
SimulateFunction = Callable[..., tuple[np.ndarray, "np.ndarray | None"]]
_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$")


def normalise_layer_kind(kind: Any) -> str:
    """Return ``kind`` stripped and lower-cased; raise unless it is a valid kind name.

    Raises:
        SpecError: ``kind`` is not a string of a letter followed by at most 63
            letters, digits or underscores.
    """
    if not isinstance(kind, str):
        raise SpecError(
            f"A layer kind must be a string, received {kind!r} ({type(kind).__name__})."
        )
    key = kind.strip().lower()
    if not KIND_PATTERN.match(key):
        raise SpecError(
            f"Invalid layer kind {kind!r}: use a letter followed by letters, digits "
            "or '_' (at most 64 characters), for example 'snu_dense_delayed'."
        )
    return key


def check_params(params: Any, where: str) -> dict[str, ParamValue]:
    """Return a validated copy of the extension parameters ``params``.

    Keys must be identifiers of at most 64 characters, and values finite
    numbers (``int`` within the int64 range, or ``float``) or strings of at
    most 128 letters, digits and ``_ . : + -``. Booleans, ``None``, lists and
    nested mappings are rejected, so every value stores as a plain HDF5 or JSON
    scalar. Numpy scalars become Python numbers.

    Raises:
        SpecError: ``params`` is not a mapping, or a key or value is invalid.
    """
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise SpecError(
            f"{where}: params must be a dict of name to number or string, received "
            f"{type(params).__name__}."
        )
    if len(params) > MAX_PARAMS:
        raise SpecError(
            f"{where}: params holds {len(params)} entries, more than the {MAX_PARAMS} "
            "allowed; group related values into fewer parameters."
        )
    checked: dict[str, ParamValue] = {}
    for key, value in params.items():
        if not isinstance(key, str) or not PARAM_NAME_PATTERN.match(key):
            raise SpecError(
                f"{where}: invalid params key {key!r}; use an identifier of letters, "
                "digits and '_' (at most 64 characters, not starting with a digit)."
            )
        checked[key] = _check_param_value(key, value, where)
    return checked


def _check_param_value(key: str, value: Any, where: str) -> ParamValue:
    if isinstance(value, bool | np.bool_):
        raise SpecError(
            f"{where}: params[{key!r}]={value!r} is a boolean; store 0 or 1 instead."
        )
    if isinstance(value, int | np.integer):
        number = int(value)
        if not -(2**63) <= number < 2**63:
            raise SpecError(
                f"{where}: params[{key!r}]={number} is outside the int64 range."
            )
        return number
    if isinstance(value, float | np.floating):
        number = float(value)
        if not math.isfinite(number):
            raise SpecError(
                f"{where}: params[{key!r}]={number!r} is not finite; give a finite "
                "number."
            )
        return number
    if isinstance(value, str):
        if not PARAM_STRING_PATTERN.match(value):
            raise SpecError(
                f"{where}: params[{key!r}]={value!r} is not a safe string; use at most "
                "128 letters, digits and '_', '.', ':', '+', '-'."
            )
        return value
    raise SpecError(
        f"{where}: params[{key!r}] must be a finite number or a short string, "
        f"received {value!r} ({type(value).__name__}); nested objects are not stored."
    )


def _check_callable(field: str, value: Any, kind: str, allow_path: bool) -> None:
    if value is None:
        return
    if allow_path and isinstance(value, str):
        if not _IMPORT_PATH.match(value):
            raise SpecError(
                f"Layer kind {kind!r}: {field}={value!r} is not an import path; use "
                "'package.module:name'."
            )
        return
    if not callable(value):
        raise SpecError(
            f"Layer kind {kind!r}: {field} must be callable"
            + (" or an import path 'package.module:name'" if allow_path else "")
            + f", received {value!r} ({type(value).__name__})."
        )


def _accepts_matmul(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return any(
        parameter.name == "matmul" or parameter.kind is inspect.Parameter.VAR_KEYWORD
        for parameter in parameters
    )


def _import_object(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """An extension layer kind: how every back end reads its :class:`LayerSpec`.

    The Keras fields may be given as import paths (``"package.module:name"``),
    resolved by :meth:`keras_hooks` when :mod:`snubridge.keras_io` first needs
    them, so that validating a spec never imports TensorFlow.

    Attributes:
        kind: Kind name, stripped and lower-cased; a letter followed by at most
            63 letters, digits or ``_``, and not one of :data:`LAYER_KINDS`.
        output_shape: ``output_shape(layer)``, the per-step output shape
            (no batch or time axis) of a layer of this kind.
        simulate: ``simulate(layer, inputs)`` for :func:`snubridge.reference.simulate`:
            ``inputs`` is ``(samples, steps, *layer.input_shape)`` in the
            simulation dtype, and it returns ``(outputs, states)``: outputs
            ``(samples, steps, *output_shape)`` and membrane states
            ``(samples, steps, units)`` or ``None``. When it takes a ``matmul``
            keyword it also receives the matrix-product hook of the simulation.
            ``None`` makes the reference simulator reject the kind.
        spiking: Whether outputs are spikes (0 or 1): a bool, or
            ``spiking(layer)`` returning one.
        validate: ``validate(layer)``, raising :class:`SpecError` on a bad
            field or parameter; it may normalise fields in place. It runs after
            the name, ``input_shape`` and ``params`` checks.
            :meth:`LayerSpec.validate_as` checks the fields as a built-in kind.
        keras_layer: Keras layer class that :func:`snubridge.keras_io.spec_from_model`
            maps to this kind, or its import path.
        to_spec: ``to_spec(keras_layer, input_shape)`` returning the
            :class:`LayerSpec` of a Keras layer, or its import path.
        from_spec: ``from_spec(layer, dtype, dt)`` returning an unbuilt Keras
            layer for :func:`snubridge.keras_io.model_from_spec`, or its import
            path. After the layer is built, the spec's ``kernel``, ``bias``,
            ``threshold`` and ``recurrent_kernel`` (those that are not None)
            are assigned to the layer's weights of the same names; a weight
            the layer lacks raises :class:`SpecError`.
    """

    kind: str
    output_shape: OutputShapeFunction
    simulate: SimulateFunction | None = None
    spiking: bool | Callable[[LayerSpec], bool] = True
    validate: Callable[[LayerSpec], Any] | None = None
    keras_layer: type | str | None = None
    to_spec: Callable[..., LayerSpec] | str | None = None
    from_spec: Callable[..., Any] | str | None = None
    simulate_accepts_matmul: bool = dataclasses.field(init=False, default=False)
    _keras_cache: list = dataclasses.field(
        init=False, default_factory=list, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        kind = normalise_layer_kind(self.kind)
        object.__setattr__(self, "kind", kind)
        if kind in LAYER_KINDS:
            raise SpecError(
                f"{kind!r} is a built-in layer kind and cannot be redefined; choose "
                "another name for the extension kind."
            )
        if self.output_shape is None:
            raise SpecError(f"Layer kind {kind!r}: output_shape is required.")
        _check_callable("output_shape", self.output_shape, kind, allow_path=False)
        _check_callable("simulate", self.simulate, kind, allow_path=False)
        _check_callable("validate", self.validate, kind, allow_path=False)
        if not isinstance(self.spiking, bool):
            _check_callable("spiking", self.spiking, kind, allow_path=False)
        keras_fields = {
            "keras_layer": self.keras_layer,
            "to_spec": self.to_spec,
            "from_spec": self.from_spec,
        }
        given = [field for field, value in keras_fields.items() if value is not None]
        if given and len(given) != len(keras_fields):
            missing = [field for field in keras_fields if field not in given]
            raise SpecError(
                f"Layer kind {kind!r}: the Keras mapping needs keras_layer, to_spec "
                f"and from_spec together; missing {', '.join(missing)}."
            )
        if isinstance(self.keras_layer, str):
            _check_callable("keras_layer", self.keras_layer, kind, allow_path=True)
        elif self.keras_layer is not None and not inspect.isclass(self.keras_layer):
            raise SpecError(
                f"Layer kind {kind!r}: keras_layer must be a Keras layer class or an "
                f"import path, received {self.keras_layer!r}."
            )
        _check_callable("to_spec", self.to_spec, kind, allow_path=True)
        _check_callable("from_spec", self.from_spec, kind, allow_path=True)
        if self.simulate is not None:
            object.__setattr__(
                self, "simulate_accepts_matmul", _accepts_matmul(self.simulate)
            )

    def layer_output_shape(self, layer: LayerSpec) -> tuple[int, ...]:
        """Return ``output_shape(layer)`` as a tuple of ints."""
        try:
            return tuple(int(n) for n in self.output_shape(layer))
        except SpecError:
            raise
        except (TypeError, ValueError, AttributeError, IndexError) as error:
            raise SpecError(
                f"Layer {layer.name!r}: output_shape of kind {self.kind!r} failed "
                f"({type(error).__name__}: {error}); check the layer's fields."
            ) from None

    def is_spiking(self, layer: LayerSpec) -> bool:
        """Return whether ``layer`` of this kind emits spikes."""
        if isinstance(self.spiking, bool):
            return self.spiking
        return bool(self.spiking(layer))

    def keras_hooks(self) -> tuple[type, Callable[..., LayerSpec], Callable[..., Any]]:
        """Return ``(keras_layer, to_spec, from_spec)``, importing path strings once.

        Raises:
            SpecError: the kind has no Keras mapping, or an import path does
                not resolve to a class and two callables.
        """
        if self.keras_layer is None:
            raise SpecError(
                f"Layer kind {self.kind!r} has no Keras layer; register it with "
                "keras_layer, to_spec and from_spec to build or read Keras models."
            )
        if self._keras_cache:
            return self._keras_cache[0]
        resolved = []
        for field in ("keras_layer", "to_spec", "from_spec"):
            value = getattr(self, field)
            if isinstance(value, str):
                try:
                    value = _import_object(value)
                except (ImportError, AttributeError) as error:
                    raise SpecError(
                        f"Layer kind {self.kind!r}: {field}={getattr(self, field)!r} "
                        f"cannot be imported ({type(error).__name__}: {error})."
                    ) from None
            resolved.append(value)
        if not inspect.isclass(resolved[0]):
            raise SpecError(
                f"Layer kind {self.kind!r}: keras_layer resolves to {resolved[0]!r}, "
                "not a class."
            )
        for field, value in zip(("to_spec", "from_spec"), resolved[1:], strict=True):
            _check_callable(field, value, self.kind, allow_path=False)
        hooks = (resolved[0], resolved[1], resolved[2])
        self._keras_cache.append(hooks)
        return hooks


class LayerKindRegistry:
    """Extension kind name to :class:`LayerKind`, with guarded registration.

    Args:
        entry_point_group: Entry-point group loaded the first time a kind is
            missing, or ``None`` to load no entry points.
    """

    def __init__(self, entry_point_group: str | None = LAYER_KIND_ENTRY_POINT_GROUP):
        self._kinds: dict[str, LayerKind] = {}
        self._entry_point_group = entry_point_group
        self._loaded = entry_point_group is None
        self._loading = False
        self._lock = threading.RLock()
        #: Entry points that failed to load: kind name to the error message.
        self.failed_entry_points: dict[str, str] = {}

    def register(self, layer_kind: LayerKind, *, replace: bool = False) -> LayerKind:
        """Add ``layer_kind``; raise :class:`SpecError` if its name is taken.

        Registering the same object twice is allowed, so a module that
        registers its kind on import can also name it in an entry point.
        """
        if not isinstance(layer_kind, LayerKind):
            raise SpecError(
                f"Expected a snubridge.spec.LayerKind, received {layer_kind!r} "
                f"({type(layer_kind).__name__})."
            )
        with self._lock:
            existing = self._kinds.get(layer_kind.kind)
            if existing is not None and existing is not layer_kind and not replace:
                raise SpecError(
                    f"Layer kind {layer_kind.kind!r} is already registered "
                    f"({_describe(existing)}); pass replace=True to replace it."
                )
            self._kinds[layer_kind.kind] = layer_kind
        logger.debug("Registered layer kind %r", layer_kind.kind)
        return layer_kind

    def unregister(self, kind: str) -> None:
        """Remove the extension kind ``kind``; raise :class:`SpecError` if absent."""
        key = normalise_layer_kind(kind)
        with self._lock:
            if key not in self._kinds:
                raise SpecError(self.missing_message(key))
            del self._kinds[key]

    def get(self, kind: Any, where: str = "") -> LayerKind:
        """Return the :class:`LayerKind` of ``kind``; load entry points once if absent.

        Raises:
            SpecError: ``kind`` is invalid, built in, or not registered; the
                message lists the built-in and registered kinds and how to
                register one.
        """
        prefix = f"{where}: " if where else ""
        try:
            key = normalise_layer_kind(kind)
        except SpecError as error:
            raise SpecError(
                f"{prefix}kind={kind!r} is not supported. {error}"
            ) from None
        with self._lock:
            if key not in self._kinds and not self._loaded:
                self._load_once()
            if key in self._kinds:
                return self._kinds[key]
        raise SpecError(prefix + self.missing_message(key, given=kind))

    def registered_kinds(self) -> tuple[str, ...]:
        """Return the registered extension kinds, sorted, after loading entry points."""
        with self._lock:
            if not self._loaded:
                self._load_once()
            return tuple(sorted(self._kinds))

    def layer_kinds(self) -> tuple[LayerKind, ...]:
        """Return the registered :class:`LayerKind` objects, sorted by name."""
        names = self.registered_kinds()
        with self._lock:
            return tuple(self._kinds[name] for name in names if name in self._kinds)

    def missing_message(self, key: str, given: Any = None) -> str:
        """Return the error text for an unknown kind ``key``."""
        with self._lock:
            registered = ", ".join(sorted(self._kinds)) or "none"
            failure = self.failed_entry_points.get(key)
        message = (
            f"kind={given if given is not None else key!r} is not a known layer kind. "
            f"Built-in kinds: {', '.join(LAYER_KINDS)}; registered extension kinds: "
            f"{registered}."
        )
        if failure:
            message += f" The entry point {key!r} failed to load: {failure}."
        return (
            message + " Register a kind with snubridge.spec.register_layer_kind(kind, "
            "output_shape=..., simulate=...), or from another package through an "
            f"entry point in the group {LAYER_KIND_ENTRY_POINT_GROUP!r} whose name is "
            "the kind and whose value is a snubridge.spec.LayerKind."
        )

    def _load_once(self) -> None:
        if self._loading:
            return
        self._loading = True
        try:
            self.load_entry_points(self._entry_point_group)
            self._loaded = True
        finally:
            self._loading = False

    def load_entry_points(
        self, group: str | None = LAYER_KIND_ENTRY_POINT_GROUP
    ) -> list[str]:
        """Register the kinds declared in entry-point ``group``; return their names.

        An entry point whose value is a :class:`LayerKind`, or a callable with
        no arguments returning one, is registered under its ``kind``, which must
        equal the entry point name. A name that is already registered to
        another object is kept and the entry point skipped with a warning. An
        entry point that fails to load is skipped with a warning and
        remembered in :attr:`failed_entry_points`.
        """
        if group is None:
            return []
        added = []
        for entry_point in importlib.metadata.entry_points(group=group):
            name = entry_point.name.strip().lower()
            try:
                value = entry_point.load()
                if not isinstance(value, LayerKind) and callable(value):
                    value = value()
                if not isinstance(value, LayerKind):
                    raise SpecError(
                        f"expected a snubridge.spec.LayerKind, received "
                        f"{type(value).__name__}"
                    )
                if value.kind != name:
                    raise SpecError(
                        f"the entry point is named {name!r} but defines kind "
                        f"{value.kind!r}; use the same name"
                    )
                with self._lock:
                    existing = self._kinds.get(name)
                    if existing is not None and existing is not value:
                        logger.warning(
                            "Entry point %r (%s) skipped: layer kind %r is already "
                            "registered.",
                            entry_point.name,
                            entry_point.value,
                            name,
                        )
                        continue
                    self._kinds[name] = value
            except Exception as error:  # a broken plug-in must not stop the others
                self.failed_entry_points[name] = f"{type(error).__name__}: {error}"
                logger.warning(
                    "Entry point %r (%s) of group %r failed to load: %s",
                    entry_point.name,
                    entry_point.value,
                    group,
                    error,
                )
                continue
            added.append(name)
        if added:
            logger.info("Loaded layer kinds %s from group %r", added, group)
        return added


def _describe(layer_kind: LayerKind) -> str:
    shape = layer_kind.output_shape
    module = getattr(shape, "__module__", None) or "unknown module"
    return f"output_shape from {module}"


#: The registry that :func:`register_layer_kind` and :func:`get_layer_kind` use.
LAYER_KIND_REGISTRY = LayerKindRegistry()


def register_layer_kind(
    kind: str | LayerKind,
    *,
    output_shape: OutputShapeFunction | None = None,
    simulate: SimulateFunction | None = None,
    spiking: bool | Callable[[LayerSpec], bool] = True,
    validate: Callable[[LayerSpec], Any] | None = None,
    keras_layer: type | str | None = None,
    to_spec: Callable[..., LayerSpec] | str | None = None,
    from_spec: Callable[..., Any] | str | None = None,
    replace: bool = False,
) -> LayerKind:
    """Register an extension layer kind in the default registry and return it.

    Pass either a :class:`LayerKind`, or a kind name with the fields of one
    (described there). Specs of this kind then validate, save to and load from
    parameter files, and run in :func:`snubridge.reference.simulate`; a
    converter for it registers separately in
    :mod:`snubridge.converters.registry`.

    Args:
        kind: Kind name (stripped and lower-cased) or a :class:`LayerKind`.
        output_shape, simulate, spiking, validate, keras_layer, to_spec,
            from_spec: The fields of :class:`LayerKind`; leave them out when
            ``kind`` is a :class:`LayerKind`.
        replace: Replace a kind already registered under the same name.

    Raises:
        SpecError: invalid or built-in name, a name already taken without
            ``replace``, or a field of the wrong type.
    """
    fields = dict(
        output_shape=output_shape,
        simulate=simulate,
        validate=validate,
        keras_layer=keras_layer,
        to_spec=to_spec,
        from_spec=from_spec,
    )
    if isinstance(kind, LayerKind):
        extra = [name for name, value in fields.items() if value is not None]
        if extra or spiking is not True:
            raise SpecError(
                f"register_layer_kind received a LayerKind and also "
                f"{', '.join(extra) or 'spiking'}; set those fields on the LayerKind."
            )
        layer_kind = kind
    else:
        layer_kind = LayerKind(kind, spiking=spiking, **fields)
    return LAYER_KIND_REGISTRY.register(layer_kind, replace=replace)


def unregister_layer_kind(kind: str) -> None:
    """Remove an extension kind from the default registry."""
    LAYER_KIND_REGISTRY.unregister(kind)


def get_layer_kind(kind: str, where: str = "") -> LayerKind:
    """Return the registered :class:`LayerKind` of ``kind``.

    Entry points of :data:`LAYER_KIND_ENTRY_POINT_GROUP` are loaded the first
    time a kind is missing. ``where`` prefixes the error message.

    Raises:
        SpecError: ``kind`` is not registered; the message lists the built-in
            and registered kinds and how to register one.
    """
    return LAYER_KIND_REGISTRY.get(kind, where)


def registered_layer_kinds() -> tuple[str, ...]:
    """Return the registered extension kinds, entry points included."""
    return LAYER_KIND_REGISTRY.registered_kinds()

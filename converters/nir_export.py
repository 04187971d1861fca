"""Export a :class:`~snubridge.spec.NetworkSpec` to a NIR graph.

NIR (the Neuromorphic Intermediate Representation) describes neurons in
continuous time and leaves the time step to each simulator. An SNU layer with
decay ``l`` per step of length ``dt`` becomes a NIR ``LIF`` node::

    tau dv/dt = (v_leak - v) + r I,   z = v > v_threshold,   v <- v_reset on z

with ``v_leak = 0``, ``v_reset = 0``, ``v_threshold = theta`` and ``tau`` chosen
so that discretising at ``dt`` gives back ``l``: ``l = exp(-dt/tau)`` (exact
integration of the leak, input held over the step) or ``l = 1 - dt/tau``
(forward Euler). One discretised step is then
``v_t = l v_{t-1} + c I_t`` with the input scale

    c = r (1 - exp(-dt/tau))   (exact)        c = r dt / tau   (Euler)

and the exporter picks ``r`` so that ``c = 1``, which is the SNU's own update.
A layer with ``l = 1`` becomes an ``IF`` node (``dv/dt = r I``, ``c = r dt``).
The weights go into ``Affine`` or ``Linear`` nodes in NIR's ``(out, in)``
order, convolutions into ``Conv2d`` nodes in ``(c_out, c_in, kh, kw)`` order,
and every per-step shape of three axes is written channels first,
``(C, H, W)``, as NIR and PyTorch do.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import nir
import numpy as np

from snubridge.errors import ConversionError, SnubridgeError
from snubridge.spec import LayerSpec, NetworkSpec, decay_from_tau, tau_from_decay

logger = logging.getLogger(__name__)

DISCRETISATIONS = ("exact", "euler")
RELU_POLICIES = ("reject", "drop")

# Float steps tried around a first guess of tau or r when searching for the
# value that reproduces the decay or the unit input scale bit for bit.
_MAX_NUDGE_STEPS = 64


def check_discretisation(mode: str) -> str:
    """Return ``mode`` if it names a discretisation, else raise ConversionError."""
    if mode not in DISCRETISATIONS:
        raise ConversionError(
            f"Unknown discretisation {mode!r}; expected 'exact' "
            "(l = exp(-dt/tau)) or 'euler' (l = 1 - dt/tau)."
        )
    return mode


def input_scale(tau: np.ndarray, r: np.ndarray, dt: float, mode: str) -> np.ndarray:
    """Return the input scale ``c`` of one discretised LIF step.

    One step of ``tau dv/dt = -v + r I`` with ``I`` held over the step is
    ``v_t = l v_{t-1} + c I_t`` with ``c = r (1 - exp(-dt/tau))`` (exact) or
    ``c = r dt / tau`` (Euler). ``tau`` and ``dt`` are in seconds; ``r`` is
    dimensionless here because SNU states and currents are.
    """
    tau = np.asarray(tau, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if mode == "exact":
        return r * -np.expm1(-dt / tau)
    return r * dt / tau


def integrator_scale(r: np.ndarray, dt: float) -> np.ndarray:
    """Return the input scale ``c = r dt`` of one step of ``dv/dt = r I`` (IF, I)."""
    return np.asarray(r, dtype=np.float64) * dt


def _nudge(start: float, error: Callable[[float], float]) -> float:
    """Return the float near ``start`` where ``error`` is zero, or the closest found.

    ``error`` must increase with its argument. The search walks one float
    step at a time towards the sign change, at most ``_MAX_NUDGE_STEPS`` steps.
    """
    best, best_error = start, error(start)
    value = start
    for _ in range(_MAX_NUDGE_STEPS):
        current = error(value)
        if abs(current) < abs(best_error):
            best, best_error = value, current
        if current == 0:
            return value
        value = float(np.nextafter(value, -math.inf if current > 0 else math.inf))
    return best


def tau_for_decay(
    decay: float, dt: float, mode: str, first_guess: float | None = None
) -> float:
    """Return a time constant in seconds that discretises back to ``decay`` exactly.

    Starts from ``first_guess`` (the layer's own ``tau``) or from
    :func:`snubridge.spec.tau_from_decay`, then moves ``tau`` by single float
    steps until :func:`snubridge.spec.decay_from_tau` returns ``decay`` bit for
    bit, so that a reader applying the same formula recovers the same decay.
    """
    if decay == 1.0:
        return math.inf
    start = first_guess if first_guess is not None else tau_from_decay(decay, dt, mode)
    if mode == "euler":
        start = max(start, dt)
    return _nudge(start, lambda tau: decay_from_tau(tau, dt, mode) - decay)


def resistance_for_unit_scale(tau: float, dt: float, mode: str) -> float:
    """Return ``r`` whose input scale :func:`input_scale` is exactly 1.

    ``tau = inf`` stands for an integrator (``IF``), whose scale is ``r dt``.
    """
    if math.isinf(tau):
        return _nudge(1.0 / dt, lambda r: float(integrator_scale(r, dt)) - 1.0)
    if mode == "exact":
        start = 1.0 / -math.expm1(-dt / tau)
    else:
        start = tau / dt
    return _nudge(start, lambda r: float(input_scale(tau, r, dt, mode)) - 1.0)


def nir_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return the NIR form of a per-step shape: ``(H, W, C)`` becomes ``(C, H, W)``."""
    if len(shape) == 3:
        height, width, channels = shape
        return (channels, height, width)
    return tuple(shape)


def flatten_permutation(shape_hwc: tuple[int, int, int]) -> np.ndarray:
    """Return ``p`` with ``p[k]`` the channels-first index of Keras flat index ``k``.

    Keras flattens ``(H, W, C)`` row-major, NIR and PyTorch flatten
    ``(C, H, W)``. A NIR weight matrix ``W_nir`` (columns in ``C, H, W`` order)
    and a Keras kernel (rows in ``H, W, C`` order) describe the same layer when
    ``kernel = W_nir[:, p].T``.
    """
    height, width, channels = shape_hwc
    size = height * width * channels
    return (
        np.arange(size).reshape(channels, height, width).transpose(1, 2, 0).reshape(-1)
    )


def _conv_padding(layer: LayerSpec) -> tuple[int, int] | str:
    """Return the NIR padding of a Keras-style convolution, or raise ConversionError.

    ``"valid"`` is no padding. Keras ``"same"`` pads ``P = max((out - 1) s + k -
    in, 0)`` rows in total and puts the odd one at the bottom (and right). An
    even ``P`` in both axes is symmetric integer padding ``P / 2``. An odd ``P``
    with stride 1 is the string ``"same"``, which PyTorch splits the same way;
    with a larger stride it has no NIR form.
    """
    if layer.padding == "valid":
        return (0, 0)
    height, width, _ = layer.input_shape
    out_h, out_w, _ = layer.output_shape
    totals = []
    for size, out, kernel, stride in zip(
        (height, width),
        (out_h, out_w),
        layer.kernel.shape[:2],
        layer.strides,
        strict=True,
    ):
        totals.append(max((out - 1) * stride + kernel - size, 0))
    if all(total % 2 == 0 for total in totals):
        return (totals[0] // 2, totals[1] // 2)
    if tuple(layer.strides) == (1, 1):
        return "same"
    raise ConversionError(
        f"Layer {layer.name!r}: padding='same' with strides {tuple(layer.strides)} "
        f"pads {totals[0]} rows and {totals[1]} columns, an odd number that NIR's "
        "symmetric Conv2d padding cannot express; use padding='valid', stride 1, "
        "or an input size that gives even padding."
    )


class _GraphBuilder:
    """Collects nodes and edges of a chain, in order."""

    def __init__(self) -> None:
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.last: str | None = None

    def append(self, name: str, node: nir.NIRNode) -> None:
        if name in self.nodes:
            raise ConversionError(
                f"Two NIR nodes would be named {name!r}; rename a layer."
            )
        self.nodes[name] = node
        if self.last is not None:
            self.edges.append((self.last, name))
        self.last = name


def _check_spiking_layer(layer: LayerSpec, relu: str) -> None:
    if layer.output != "step":
        raise ConversionError(
            f"Layer {layer.name!r}: soft SNU layers (output='sigmoid') emit rates, not "
            "spikes, and NIR has no neuron with a sigmoid output; retrain with "
            "output='step' to export."
        )
    if layer.lateral_inhibition:
        raise ConversionError(
            f"Layer {layer.name!r}: lateral inhibition (winner-take-all per sample) "
            "has no NIR node; export a network without it."
        )
    if layer.activation == "relu":
        if relu == "reject":
            raise ConversionError(
                f"Layer {layer.name!r}: activation='relu' clips the membrane at 0, and "
                "NIR's LIF has no clip, so other simulators would compute different "
                "spikes. Train with activation='identity', or pass relu='drop' "
                "(--relu drop on the command line) to export the layer without the "
                "clip."
            )
        logger.warning(
            "Layer %r: exporting without its ReLU membrane clip (relu='drop'); "
            "spikes differ whenever the membrane would go below 0.",
            layer.name,
        )


def _synapse_node(
    layer: LayerSpec, permutation: np.ndarray | None
) -> tuple[str, nir.NIRNode]:
    """Return the name suffix and the NIR node of a layer's input weights."""
    if layer.kind == "snu_conv2d":
        height, width, _ = layer.input_shape
        kh, kw, _, n_out = layer.kernel.shape
        if kh != kw:
            # nir 1.0.8 computes a Conv2d's output shape from the kernel height
            # alone, so its own type check rejects the file on reading.
            raise ConversionError(
                f"Layer {layer.name!r}: the kernel is {kh}x{kw}; NIR files (nir "
                f"{nir.version}) type-check only square Conv2d kernels. Use a square "
                "kernel to export."
            )
        bias = layer.bias if layer.bias is not None else np.zeros(n_out)
        node = nir.Conv2d(
            input_shape=(height, width),
            weight=np.ascontiguousarray(layer.kernel.transpose(3, 2, 0, 1)),
            stride=tuple(int(s) for s in layer.strides),
            padding=_conv_padding(layer),
            dilation=(1, 1),
            groups=1,
            bias=np.asarray(bias, dtype=np.float64),
        )
        return "conv", node
    weight = np.ascontiguousarray(layer.kernel.T)
    if permutation is not None:
        reordered = np.empty_like(weight)
        reordered[:, permutation] = weight
        weight = reordered
    if layer.bias is None:
        return "linear", nir.Linear(weight=weight)
    return "affine", nir.Affine(weight=weight, bias=np.asarray(layer.bias, np.float64))


def _layer_mode(layer: LayerSpec, default: str) -> str:
    return layer.decay_mode if layer.decay_mode in DISCRETISATIONS else default


def _neuron_node(
    layer: LayerSpec, shape: tuple[int, ...], dt: float, mode: str
) -> nir.NIRNode:
    """Return the LIF or IF node of an SNU layer with per-step NIR shape ``shape``."""
    threshold = np.asarray(layer.threshold, dtype=np.float64)
    if layer.kind == "snu_conv2d":
        threshold = threshold[:, None, None]
    threshold = np.ascontiguousarray(np.broadcast_to(threshold, shape))
    zeros = np.zeros(shape)
    hint = layer.tau if layer.decay_mode == mode else None
    tau = tau_for_decay(layer.decay, dt, mode, hint)
    r = resistance_for_unit_scale(tau, dt, mode)
    metadata = {"discretisation": mode, "dt": dt}
    if layer.activation == "relu":
        metadata["dropped_activation"] = "relu"
    if math.isinf(tau):
        return nir.IF(
            r=np.full(shape, r), v_threshold=threshold, v_reset=zeros, metadata=metadata
        )
    return nir.LIF(
        tau=np.full(shape, tau),
        r=np.full(shape, r),
        v_leak=zeros,
        v_threshold=threshold,
        v_reset=zeros.copy(),
        metadata=metadata,
    )


def _readout_nodes(
    layer: LayerSpec, dt: float, mode: str
) -> tuple[nir.NIRNode | None, dict[str, str]]:
    """Return the leaky-integrator node of a readout (None if per step) and notes."""
    notes = {}
    if layer.readout_mode in ("mean", "leaky_last"):
        notes["time_reduction"] = "mean" if layer.readout_mode == "mean" else "last"
    if layer.readout_activation != "linear":
        notes["activation"] = layer.readout_activation
    if notes:
        logger.info(
            "Readout %r: the NIR graph contains the per-step values; the %s after them "
            "is recorded in the node metadata only.",
            layer.name,
            " and ".join(f"{key} {value!r}" for key, value in notes.items()),
        )
    if layer.readout_mode not in ("leaky", "leaky_last"):
        return None, notes

    units = (layer.units,)
    tau = tau_for_decay(
        layer.decay, dt, mode, layer.tau if layer.decay_mode == mode else None
    )
    r = resistance_for_unit_scale(tau, dt, mode)
    metadata = {"discretisation": mode, "dt": dt, **notes}
    if math.isinf(tau):
        return nir.I(r=np.full(units, r), metadata=metadata), notes
    node = nir.LI(
        tau=np.full(units, tau),
        r=np.full(units, r),
        v_leak=np.zeros(units),
        metadata=metadata,
    )
    return node, notes


def _recurrent_subgraph(
    layer: LayerSpec, neuron: nir.NIRNode, units: int
) -> nir.NIRGraph:
    """Return a recurrent layer's subgraph ``input -> lif <-> w_rec -> output``."""
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([units])),
            "lif": neuron,
            "w_rec": nir.Linear(weight=np.ascontiguousarray(layer.recurrent_kernel.T)),
            "output": nir.Output(output_type=np.array([units])),
        },
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
        metadata={"snubridge_kind": "snu_recurrent"},
    )


def to_nir_graph(
    spec: NetworkSpec,
    *,
    dt: float | None = None,
    discretisation: str = "exact",
    relu: str = "reject",
) -> nir.NIRGraph:
    """Translate a network spec into a NIR graph.

    Args:
        spec: The network; it is validated first.
        dt: Time step in seconds at which the continuous NIR model must
            reproduce the spec's decays; defaults to ``spec.dt``.
        discretisation: ``"exact"`` or ``"euler"``, used for layers whose decay
            is given directly (``decay_mode="direct"``). Layers that record
            ``"exact"`` or ``"euler"`` keep their own.
        relu: ``"reject"`` (default) raises ConversionError for layers with
            ``activation="relu"``. ``"drop"`` exports them without the clip
            and logs a warning, because NIR's LIF cannot clip the membrane.

    Returns:
        A type-checked ``nir.NIRGraph``. Its metadata and each neuron node's
        metadata record ``dt`` and the discretisation; readers must not need
        them.

    Raises:
        ConversionError: a layer has no exact NIR form (sSNU output, lateral
            inhibition, ReLU under ``relu="reject"``, a non-square kernel, odd
            "same" padding with a stride above 1).
    """
    check_discretisation(discretisation)
    if relu not in RELU_POLICIES:
        raise ConversionError(
            f"relu={relu!r} is not supported; expected 'reject' or 'drop'."
        )
    try:
        spec.validate()
    except SnubridgeError as error:
        raise ConversionError(f"Cannot export an invalid spec: {error}") from None
    try:
        step = float(spec.dt if dt is None else dt)
    except (TypeError, ValueError):
        step = math.nan
    if not (math.isfinite(step) and step > 0):
        raise ConversionError(
            f"dt must be a positive number of seconds, received {dt!r}."
        )

    builder = _GraphBuilder()
    builder.append("input", nir.Input(input_type=np.array(nir_shape(spec.input_shape))))
    permutation: np.ndarray | None = None
    modes: set[str] = set()
    for layer in spec.layers:
        if layer.kind == "flatten":
            shape = tuple(layer.input_shape)
            node = nir.Flatten(
                input_type={"input": np.array(nir_shape(shape))},
                start_dim=0,
                end_dim=-1,
            )
            builder.append(layer.name, node)
            permutation = flatten_permutation(shape) if len(shape) == 3 else None
            continue
        if layer.kind != "readout":
            _check_spiking_layer(layer, relu)
        suffix, synapse = _synapse_node(layer, permutation)
        permutation = None
        mode = _layer_mode(layer, discretisation)
        try:
            if layer.kind == "readout":
                integrator, notes = _readout_nodes(layer, step, mode)
                if integrator is None:
                    synapse.metadata = dict(notes)
                    builder.append(layer.name, synapse)
                else:
                    modes.add(mode)
                    builder.append(f"{layer.name}.{suffix}", synapse)
                    builder.append(layer.name, integrator)
                continue
            out_shape = nir_shape(layer.output_shape)
            neuron = _neuron_node(layer, out_shape, step, mode)
        except SnubridgeError as error:
            raise ConversionError(f"Layer {layer.name!r}: {error}") from None
        modes.add(mode)
        builder.append(f"{layer.name}.{suffix}", synapse)
        if layer.kind == "snu_recurrent":
            builder.append(layer.name, _recurrent_subgraph(layer, neuron, layer.units))
        else:
            builder.append(layer.name, neuron)
    builder.append(
        "output", nir.Output(output_type=np.array(nir_shape(spec.output_shape)))
    )

    metadata = {
        "source": "snubridge",
        "network_name": spec.name,
        "dt": step,
        "discretisation": modes.pop() if len(modes) == 1 else "mixed",
        "precision": spec.precision,
    }
    try:
        graph = nir.NIRGraph(
            nodes=builder.nodes, edges=builder.edges, metadata=metadata
        )
    except (ValueError, AssertionError) as error:
        raise ConversionError(f"NIR rejected the exported graph: {error}") from None
    logger.debug(
        "Exported %d layers to NIR (%d nodes, dt=%g s)",
        len(spec.layers),
        len(graph.nodes),
        step,
    )
    return graph

"""Import a NIR graph as a :class:`~snubridge.spec.NetworkSpec`.

The reader accepts a chain of NIR nodes from one ``Input`` to one ``Output``.
An SNU layer is ``Affine``, ``Linear`` or ``Conv2d`` weights followed by an
``LIF`` or ``IF`` neuron. A ``Flatten`` may sit between layers. The chain may
end in a readout: weights alone, or weights followed by an ``LI`` or ``I``
integrator. Subgraphs are inlined first. A ``Linear`` or ``Affine`` node whose
only input and only output is the same neuron is that neuron's recurrent
weights, at the top level or inside a subgraph. ``Identity`` nodes are skipped.

Given ``dt`` and a discretisation, a neuron with time constant ``tau`` gets the
decay ``l = exp(-dt/tau)`` (exact) or ``l = 1 - dt/tau`` (Euler). Its input
scale ``c`` (see :func:`converters.nir_export.input_scale`) multiplies the
columns of the incoming weights and the bias, so the SNU state equals the NIR
membrane potential ``v`` at every step. Metadata is never read for dynamics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import nir
import numpy as np

from snubridge.errors import ConversionError, SnubridgeError
from snubridge.spec import READOUT_MODES, LayerSpec, NetworkSpec, decay_from_tau

from .nir_export import (
    check_discretisation,
    flatten_permutation,
    input_scale,
    integrator_scale,
    nir_shape,
)

logger = logging.getLogger(__name__)

# An input scale within this many machine epsilons (of the dtype the file
# stores tau and r in) of 1 is taken as exactly 1: it is the rounding left by
# computing r = tau / dt or r = 1 / (1 - exp(-dt/tau)) in that dtype.
UNIT_SCALE_EPSILONS = 16

_SYNAPSES = (nir.Affine, nir.Linear, nir.Conv2d)
_SPIKING = (nir.LIF, nir.IF)
_INTEGRATORS = (nir.LI, nir.I)
_NEURONS = _SPIKING + _INTEGRATORS
_REASONS = {
    "CubaLIF": "it has a synaptic current with its own time constant tau_syn, and an "
    "SNU has one state per neuron",
    "CubaLI": "it has a synaptic current with its own time constant tau_syn, and an "
    "SNU readout has one state per unit",
    "Threshold": "a bare threshold without a membrane has no SNU layer",
    "Delay": "SNU layers pass spikes on within the same step, without delays",
    "Scale": "elementwise scaling between layers is not part of an SNU chain",
    "Conv1d": "snubridge has 2-D convolutions only",
    "SumPool2d": "snubridge has no pooling layer",
    "AvgPool2d": "snubridge has no pooling layer",
}
_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclasses.dataclass
class _FlatGraph:
    """A NIR graph with subgraphs inlined; ``group`` maps inlined names to subgraphs."""

    nodes: dict[str, nir.NIRNode]
    edges: list[tuple[str, str]]
    group: dict[str, str]


def _node_error(name: str, node: Any, reason: str) -> ConversionError:
    return ConversionError(f"NIR node {name!r} ({type(node).__name__}): {reason}")


def _known_node_types() -> set[str]:
    names = set(nir.ir.__all__) - {"NIRNode", "str2NIRNode", "dict2NIRNode"}
    return names


def _scan_node_types(
    group: h5py.Group, where: str, found: list[tuple[str, str]]
) -> None:
    """Collect ``(path, type)`` of every node group under an HDF5 NIR graph group."""
    if "type" in group and isinstance(group["type"], h5py.Dataset):
        kind = group["type"][()]
        kind = kind.decode("utf-8") if isinstance(kind, bytes) else str(kind)
        found.append((where, kind))
    if "nodes" in group and isinstance(group["nodes"], h5py.Group):
        for key, child in group["nodes"].items():
            if isinstance(child, h5py.Group):
                _scan_node_types(child, f"{where}/{key}" if where else key, found)


# Fields that files from older nir versions may lack, with the value used then.
# nir's own readers already default v_reset to 0 and a Flatten's input_type to
# unknown. nir's type inference fills in the shapes left unknown here.
_OPTIONAL_FIELDS = {
    "Conv2d": {"input_shape": None, "dilation": 1, "groups": 1},
    "Conv1d": {"input_shape": None, "dilation": 1, "groups": 1},
}


def _fill_optional_fields(node: dict[str, Any]) -> None:
    for field, default in _OPTIONAL_FIELDS.get(node.get("type"), {}).items():
        if field not in node:
            logger.info(
                "NIR %s node has no %s; using %r.", node["type"], field, default
            )
            node[field] = default
    for child in node.get("nodes", {}).values():
        if isinstance(child, dict):
            _fill_optional_fields(child)


def load_nir_graph(path: str | os.PathLike) -> nir.NIRGraph:
    """Read a ``.nir`` file into a ``nir.NIRGraph``; failures raise ConversionError.

    The file is decoded as ``nir.read`` does (nir 1.0.8), with two additions:
    node types that the installed ``nir`` does not define are named, and the
    optional fields in ``_OPTIONAL_FIELDS`` get their defaults when missing.
    """
    source = Path(path)
    if not source.is_file():
        raise ConversionError(f"NIR file {str(source)!r} does not exist.")
    try:
        with h5py.File(source, "r") as handle:
            if "node" not in handle or not isinstance(handle["node"], h5py.Group):
                raise ConversionError(
                    f"{str(source)!r} is an HDF5 file but not a NIR graph "
                    "(no 'node' group)."
                )
            found: list[tuple[str, str]] = []
            _scan_node_types(handle["node"], "", found)
            data = nir.serialization.hdf2dict(handle["node"])
    except OSError as error:
        raise ConversionError(
            f"{str(source)!r} is not a readable HDF5 file ({error}); it may be "
            "truncated."
        ) from None
    known = _known_node_types()
    for where, kind in found:
        if kind not in known:
            raise ConversionError(
                f"NIR node {where or '<root>'!r} in {str(source)!r} has type {kind!r}, "
                f"which nir {nir.version} does not define; upgrade nir or remove "
                "the node."
            )
    _fill_optional_fields(data)
    try:
        graph = nir.dict2NIRNode({**data, "type_check": True})
    except (AssertionError, KeyError, ValueError, TypeError) as error:
        raise ConversionError(
            f"nir could not decode {str(source)!r}: {error!r}"
        ) from None
    if not isinstance(graph, nir.NIRGraph):
        raise ConversionError(
            f"{str(source)!r} contains a single {type(graph).__name__} node, not a "
            "NIRGraph."
        )
    return graph


def _inline(graph: nir.NIRGraph, prefix: str = "") -> _FlatGraph:
    """Return the nodes and edges of ``graph`` with every subgraph inlined.

    A subgraph ``S`` with one ``Input`` and one ``Output`` is replaced by its
    inner nodes, named ``S.<inner>``: edges into ``S`` go to the successors of
    its ``Input``, edges out of ``S`` leave from the predecessors of its
    ``Output``.
    """
    nodes: dict[str, nir.NIRNode] = {}
    group: dict[str, str] = {}
    entry: dict[str, list[str]] = {}
    exit_: dict[str, list[str]] = {}
    inner_edges: list[tuple[str, str]] = []
    for name, node in graph.nodes.items():
        full = f"{prefix}{name}"
        if not isinstance(node, nir.NIRGraph):
            nodes[full] = node
            continue
        inner = _inline(node, prefix=f"{full}.")
        inputs = [
            key for key, value in inner.nodes.items() if isinstance(value, nir.Input)
        ]
        outputs = [
            key for key, value in inner.nodes.items() if isinstance(value, nir.Output)
        ]
        if len(inputs) != 1 or len(outputs) != 1:
            raise _node_error(
                full,
                node,
                f"a subgraph needs one Input and one Output, found {len(inputs)} and "
                f"{len(outputs)}.",
            )
        entry[full] = [b for a, b in inner.edges if a == inputs[0]]
        exit_[full] = [a for a, b in inner.edges if b == outputs[0]]
        for key, value in inner.nodes.items():
            if key not in (inputs[0], outputs[0]):
                nodes[key] = value
                group[key] = inner.group.get(key, full)
        inner_edges += [
            (a, b) for a, b in inner.edges if a != inputs[0] and b != outputs[0]
        ]
    edges = list(inner_edges)
    for source, target in graph.edges:
        sources = exit_.get(f"{prefix}{source}", [f"{prefix}{source}"])
        targets = entry.get(f"{prefix}{target}", [f"{prefix}{target}"])
        edges += [(a, b) for a in sources for b in targets]
    return _FlatGraph(nodes=nodes, edges=edges, group=group)


def _skip_identities(flat: _FlatGraph) -> None:
    # nir 1.0.8 defines Identity in nir.ir.graph without exporting it.
    identity = getattr(nir.ir.graph, "Identity", None)
    if identity is None:
        return
    for name in [key for key, node in flat.nodes.items() if isinstance(node, identity)]:
        sources = [a for a, b in flat.edges if b == name]
        targets = [b for a, b in flat.edges if a == name]
        flat.edges = [(a, b) for a, b in flat.edges if name not in (a, b)]
        flat.edges += [(a, b) for a in sources for b in targets]
        del flat.nodes[name]


def _chain(flat: _FlatGraph) -> tuple[list[str], dict[str, str]]:
    """Return the node names from Input to Output and each neuron's recurrent node."""
    successors: dict[str, list[str]] = {name: [] for name in flat.nodes}
    predecessors: dict[str, list[str]] = {name: [] for name in flat.nodes}
    for source, target in flat.edges:
        if source not in flat.nodes or target not in flat.nodes:
            missing = source if source not in flat.nodes else target
            raise ConversionError(
                f"NIR edge ({source!r}, {target!r}) names the missing node {missing!r}."
            )
        successors[source].append(target)
        predecessors[target].append(source)
    recurrent: dict[str, str] = {}
    for name, node in flat.nodes.items():
        if isinstance(node, (nir.Linear, nir.Affine)):
            pre, post = predecessors[name], successors[name]
            if (
                len(pre) == 1
                and pre == post
                and isinstance(flat.nodes[pre[0]], _SPIKING)
            ):
                if pre[0] in recurrent:
                    raise _node_error(
                        pre[0], flat.nodes[pre[0]], "it has two recurrent weight nodes."
                    )
                recurrent[pre[0]] = name
    loops = set(recurrent.values())

    def forward(name: str, links: dict[str, list[str]]) -> list[str]:
        return [other for other in links[name] if other not in loops]

    inputs = [name for name, node in flat.nodes.items() if isinstance(node, nir.Input)]
    outputs = [
        name for name, node in flat.nodes.items() if isinstance(node, nir.Output)
    ]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConversionError(
            "snubridge reads NIR graphs with one Input and one Output node, found "
            f"{len(inputs)} inputs ({inputs}) and {len(outputs)} outputs ({outputs})."
        )
    order = [inputs[0]]
    while not isinstance(flat.nodes[order[-1]], nir.Output):
        name = order[-1]
        following = forward(name, successors)
        if len(following) != 1:
            raise _node_error(
                name,
                flat.nodes[name],
                f"it feeds {len(following)} nodes ({following}); snubridge reads "
                "chains of layers only.",
            )
        target = following[0]
        if len(forward(target, predecessors)) != 1:
            raise _node_error(
                target,
                flat.nodes[target],
                f"it receives {len(forward(target, predecessors))} inputs; snubridge "
                "reads chains of layers only.",
            )
        if target in order:
            raise _node_error(target, flat.nodes[target], "it closes a loop of layers.")
        order.append(target)
    unused = sorted(set(flat.nodes) - set(order) - loops)
    if unused:
        raise ConversionError(
            f"NIR nodes {unused} are not on the path from {inputs[0]!r} to "
            f"{outputs[0]!r}; remove them or connect them."
        )
    return order, recurrent


def _parameter(node: Any, field: str, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Return a neuron parameter broadcast to the neuron shape ``shape``."""
    value = getattr(node, field, None)
    if value is None:
        raise _node_error(name, node, f"the field {field!r} is missing.")
    array = np.asarray(value, dtype=np.float64)
    try:
        array = np.broadcast_to(array, shape)
    except ValueError:
        raise _node_error(
            name,
            node,
            f"{field} has shape {array.shape}, which does not fit the {shape} "
            "neurons it drives.",
        ) from None
    if np.any(np.isnan(array)):
        raise _node_error(name, node, f"{field} contains NaN.")
    return array


def _per_channel(array: np.ndarray, field: str, name: str, node: Any) -> np.ndarray:
    """Return one value per channel of a ``(C, H, W)`` parameter, or raise."""
    flat = array.reshape(array.shape[0], -1)
    if np.any(flat != flat[:, :1]):
        raise _node_error(
            name,
            node,
            f"{field} varies across positions of a channel; snubridge convolutions "
            "share "
            "it per channel.",
        )
    return flat[:, 0].copy()


def _single_value(array: np.ndarray, field: str, name: str, node: Any) -> float:
    values = np.unique(array)
    if values.size != 1:
        raise _node_error(
            name,
            node,
            f"{field} takes {values.size} different values; an SNU layer has one "
            f"decay, so {field} must be the same for all its neurons.",
        )
    return float(values[0])


def _snap_unit(scale: np.ndarray, node: Any) -> np.ndarray:
    """Set input scales within rounding of 1 to exactly 1 (see UNIT_SCALE_EPSILONS)."""
    dtypes = [
        np.asarray(getattr(node, f)).dtype for f in ("tau", "r") if hasattr(node, f)
    ]
    floats = [d for d in dtypes if np.issubdtype(d, np.floating)]
    eps = max((np.finfo(d).eps for d in floats), default=np.finfo(np.float64).eps)
    return np.where(np.abs(scale - 1.0) <= UNIT_SCALE_EPSILONS * eps, 1.0, scale)


def _dynamics(
    node: Any, name: str, shape: tuple[int, ...], dt: float, mode: str, conv: bool
) -> tuple[float, str, float | None, np.ndarray]:
    """Return ``(decay, decay_mode, tau, c)`` of a LIF, IF, LI or I node.

    ``c`` is one input scale per neuron (per channel for convolutions).
    """
    r = _parameter(node, "r", name, shape)
    if isinstance(node, (nir.LIF, nir.LI)):
        v_leak = _parameter(node, "v_leak", name, shape)
        if np.any(v_leak != 0):
            raise _node_error(
                name,
                node,
                "v_leak is not 0. SNU states rest at 0, and the membrane's starting "
                "value for v_leak != 0 is not fixed by NIR, so no bias reproduces it.",
            )
        tau_array = _parameter(node, "tau", name, shape)
        tau = _single_value(tau_array, "tau", name, node)
        if not (math.isfinite(tau) and tau > 0):
            raise _node_error(
                name, node, f"tau must be positive and finite, found {tau!r}."
            )
        try:
            decay = decay_from_tau(tau, dt, mode)
        except SnubridgeError as error:
            raise _node_error(name, node, str(error)) from None
        scale = input_scale(tau_array, r, dt, mode)
        decay_mode, tau_value = mode, tau
    else:
        scale = integrator_scale(r, dt)
        decay, decay_mode, tau_value = 1.0, "direct", None
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise _node_error(name, node, "r must be positive and finite for every neuron.")
    scale = _snap_unit(scale, node)
    if conv:
        scale = _per_channel(scale, "the input scale r", name, node)
    return decay, decay_mode, tau_value, scale.reshape(-1)


def _spiking_fields(
    node: Any, name: str, shape: tuple[int, ...], conv: bool
) -> np.ndarray:
    """Return the threshold of a LIF or IF node after checking its reset."""
    if getattr(node, "v_reset", None) is None:
        logger.info("NIR node %r has no v_reset; using the NIR default 0.", name)
    else:
        reset = _parameter(node, "v_reset", name, shape)
        if np.any(reset != 0):
            raise _node_error(
                name,
                node,
                "v_reset is not 0; the SNU resets to 0 and other reset values have no "
                "exact equivalent.",
            )
    threshold = _parameter(node, "v_threshold", name, shape)
    if conv:
        return _per_channel(threshold, "v_threshold", name, node)
    return threshold.reshape(-1).copy()


def _layer_name(raw: str, taken: set[str]) -> str:
    name = _NAME_CHARACTERS.sub("_", raw)[:120] or "layer"
    if name[0] in ".-":
        name = f"n{name}"
    candidate, index = name, 2
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    taken.add(candidate)
    return candidate


@dataclasses.dataclass
class _Synapse:
    """Weights read from a NIR node, already in Keras order."""

    kernel: np.ndarray
    bias: np.ndarray | None
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"


def _conv_padding(node: nir.Conv2d, name: str, shape: tuple[int, int, int]) -> str:
    """Return the spec padding that equals a NIR Conv2d padding, or raise."""
    height, width, _ = shape
    kernel = node.weight.shape[2:]
    stride = tuple(int(s) for s in np.broadcast_to(np.asarray(node.stride), (2,)))
    padding = node.padding
    if isinstance(padding, str):
        if padding == "valid":
            return "valid"
        if stride != (1, 1):
            raise _node_error(
                name,
                node,
                f"padding='same' with stride {stride} is not defined in NIR.",
            )
        return "same"
    pads = tuple(int(p) for p in np.broadcast_to(np.asarray(padding), (2,)))
    if pads == (0, 0):
        return "valid"
    for size, k, s, pad in zip((height, width), kernel, stride, pads, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        if total != 2 * pad or (size + 2 * pad - k) // s + 1 != out:
            raise _node_error(
                name,
                node,
                f"padding {pads} is neither 'valid' nor Keras 'same' for input "
                f"{(height, width)}, kernel {tuple(kernel)} and stride {stride}.",
            )
    return "same"


def _synapse(
    node: Any, name: str, shape: tuple[int, ...], permutation: np.ndarray | None
) -> _Synapse:
    """Return the weights of an Affine, Linear or Conv2d node for input ``shape``."""
    weight = np.asarray(node.weight, dtype=np.float64)
    bias = getattr(node, "bias", None)
    if isinstance(node, nir.Conv2d):
        if len(shape) != 3:
            raise _node_error(
                name, node, f"a Conv2d needs (C, H, W) input, received {shape}."
            )
        if weight.ndim != 4 or weight.shape[1] != shape[2]:
            raise _node_error(
                name,
                node,
                f"weight shape {weight.shape} does not take {shape[2]} input channels.",
            )
        if int(node.groups) != 1:
            raise _node_error(
                name, node, f"groups={node.groups}; only groups=1 is supported."
            )
        if np.any(np.asarray(node.dilation) != 1):
            raise _node_error(
                name, node, f"dilation={node.dilation}; only 1 is supported."
            )
        stride = tuple(int(s) for s in np.broadcast_to(np.asarray(node.stride), (2,)))
        padding = _conv_padding(node, name, shape)
        bias = None if bias is None else np.asarray(bias, np.float64).reshape(-1)
        if bias is not None and not np.any(bias):
            bias = None
        return _Synapse(weight.transpose(2, 3, 1, 0).copy(), bias, stride, padding)
    if len(shape) != 1:
        raise _node_error(
            name,
            node,
            f"dense weights need flat input, received shape {shape}; "
            "add a Flatten node before it.",
        )
    if weight.ndim != 2 or weight.shape[1] != shape[0]:
        raise _node_error(
            name,
            node,
            f"weight shape {weight.shape} does not take {shape[0]} inputs "
            "(NIR weights are (out, in)).",
        )
    if permutation is not None:
        weight = weight[:, permutation]
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    return _Synapse(np.ascontiguousarray(weight.T), bias)


def _scaled(synapse: _Synapse, scale: np.ndarray) -> _Synapse:
    if np.all(scale == 1.0):
        return synapse
    bias = None if synapse.bias is None else synapse.bias * scale
    return dataclasses.replace(synapse, kernel=synapse.kernel * scale, bias=bias)


def _modes_for(
    discretisation: str | Mapping[str, str],
) -> tuple[str, Mapping[str, str]]:
    if isinstance(discretisation, str):
        return check_discretisation(discretisation), {}
    overrides = {
        key: check_discretisation(value) for key, value in discretisation.items()
    }
    return overrides.pop("*", "exact"), overrides


def _log_metadata_differences(graph: nir.NIRGraph, dt: float, mode: str) -> None:
    metadata = getattr(graph, "metadata", None) or {}
    stored_dt = metadata.get("dt")
    stored_mode = metadata.get("discretisation")
    if isinstance(stored_mode, bytes):
        stored_mode = stored_mode.decode("utf-8")
    try:
        if stored_dt is not None and not math.isclose(
            float(stored_dt), dt, rel_tol=1e-12
        ):
            logger.warning(
                "The NIR file was written for dt=%g s, reading it with dt=%g s.",
                float(stored_dt),
                dt,
            )
    except (TypeError, ValueError):
        pass
    if stored_mode in ("exact", "euler") and stored_mode != mode:
        logger.warning(
            "The NIR file was written with discretisation %r, reading it with %r.",
            stored_mode,
            mode,
        )


def _input_shape(name: str, node: nir.Input) -> tuple[int, ...]:
    """Return the spec input shape of an Input node, channels last."""
    raw = tuple(int(n) for n in np.asarray(node.input_type["input"]).reshape(-1))
    if len(raw) == 3:
        return (raw[1], raw[2], raw[0])
    if len(raw) in (1, 2):
        return raw
    raise _node_error(name, node, f"input shape {raw} is not supported.")


def _unsupported(name: str, node: Any) -> ConversionError:
    reason = _REASONS.get(type(node).__name__, "snubridge has no equivalent layer")
    return _node_error(name, node, f"not supported, because {reason}.")


class _ChainReader:
    """Turns the inlined chain of NIR nodes into spec layers, front to back."""

    def __init__(
        self,
        flat: _FlatGraph,
        recurrent: dict[str, str],
        dt: float,
        modes: tuple[str, Mapping[str, str]],
        readout: tuple[str | None, str],
    ) -> None:
        self.flat = flat
        self.recurrent = recurrent
        self.dt = dt
        self.default_mode, self.overrides = modes
        self.readout_mode, self.readout_activation = readout
        self.layers: list[LayerSpec] = []
        self.taken: set[str] = set()
        self.permutation: np.ndarray | None = None
        self.shape: tuple[int, ...] = ()

    def read(self, body: list[str], input_shape: tuple[int, ...]) -> list[LayerSpec]:
        """Return the layers for the node names ``body`` (Input and Output excluded)."""
        self.shape = input_shape
        index = 0
        while index < len(body):
            key = body[index]
            node = self.flat.nodes[key]
            if isinstance(node, nir.Flatten):
                self._flatten(key)
                index += 1
                continue
            synapse_key: str | None = None
            neuron_key: str | None = key
            if isinstance(node, _SYNAPSES):
                synapse_key = key
                index += 1
                following = self.flat.nodes[body[index]] if index < len(body) else None
                neuron_key = body[index] if isinstance(following, _NEURONS) else None
            elif not isinstance(node, _NEURONS):
                raise _unsupported(key, node)
            neuron = self.flat.nodes[neuron_key] if neuron_key is not None else None
            if neuron is None or isinstance(neuron, _INTEGRATORS):
                rest = body[index + 1 :] if neuron is not None else body[index:]
                self._readout(synapse_key, neuron_key, rest)
                break
            self._spiking(synapse_key, neuron_key)
            index += 1
        if self.readout_mode is not None and not (
            self.layers and self.layers[-1].kind == "readout"
        ):
            raise ConversionError(
                f"readout_mode={self.readout_mode!r} was given but the NIR graph ends "
                "in a spiking layer, not a readout."
            )
        if not self.layers:
            raise ConversionError(
                "The NIR graph contains no layers between Input and Output."
            )
        return self.layers

    def _flatten(self, key: str) -> None:
        node = self.flat.nodes[key]
        nir_order = nir_shape(self.shape)
        start, end = int(node.start_dim), int(node.end_dim)
        flattened = nir.ir.utils.calc_flatten_output(nir_order, start, end)
        if len(flattened) != 1:
            raise _node_error(
                key,
                node,
                f"start_dim={start} and end_dim={end} flatten {nir_order} to "
                f"{tuple(int(n) for n in flattened)}; snubridge flattens whole frames "
                "only (start_dim=0, end_dim=-1 without the batch axis).",
            )
        # Flattening a flat shape changes nothing and gets no layer.
        if len(self.shape) == 1:
            return
        name = _layer_name(key, self.taken)
        self.layers.append(LayerSpec(name, "flatten", input_shape=self.shape))
        self.permutation = (
            flatten_permutation(self.shape) if len(self.shape) == 3 else None
        )
        self.shape = (int(np.prod(self.shape)),)

    def _weights(self, synapse_key: str | None, neuron_key: str | None) -> _Synapse:
        """Return the weights into a layer; an identity without a weight node."""
        if synapse_key is not None:
            node = self.flat.nodes[synapse_key]
            synapse = _synapse(node, synapse_key, self.shape, self.permutation)
        elif len(self.shape) == 1:
            synapse = _Synapse(np.eye(self.shape[0]), None)
        else:
            raise _node_error(
                neuron_key,
                self.flat.nodes[neuron_key],
                "a neuron without weights before it needs flat input.",
            )
        self.permutation = None
        return synapse

    def _output_shapes(
        self, synapse: _Synapse
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Return the layer's output shape in spec order and in NIR order."""
        conv = synapse.kernel.ndim == 4
        probe = LayerSpec(
            "probe",
            "snu_conv2d" if conv else "readout",
            kernel=synapse.kernel,
            strides=synapse.strides,
            padding=synapse.padding,
            input_shape=self.shape,
        )
        out = probe.output_shape
        return out, ((out[2], out[0], out[1]) if conv else out)

    def _name_and_mode(self, raw_name: str) -> tuple[str, str]:
        """Return the layer name and its discretisation.

        A neuron that is the only spiking node of an inlined subgraph is named
        after the subgraph, as snubridge's recurrent export and snnTorch's
        ``RLeaky`` export name it.
        """
        group = self.flat.group.get(raw_name)
        if group is not None:
            members = [key for key, value in self.flat.group.items() if value == group]
            neurons = [k for k in members if isinstance(self.flat.nodes[k], _SPIKING)]
            if neurons == [raw_name]:
                raw_name = group
        name = _layer_name(raw_name, self.taken)
        mode = self.overrides.get(name, self.overrides.get(raw_name, self.default_mode))
        return name, mode

    def _readout(
        self, synapse_key: str | None, neuron_key: str | None, rest: list[str]
    ) -> None:
        """Append the final readout: weights alone, or weights and an LI or I node."""
        if rest:
            node_after = self.flat.nodes[rest[0]]
            if not isinstance(node_after, (*_SYNAPSES, nir.Flatten, *_NEURONS)):
                raise _unsupported(rest[0], node_after)
            raise _node_error(
                rest[0],
                node_after,
                "it follows a readout (weights without a spiking neuron, or a "
                "leaky integrator), which must be the last layer.",
            )
        synapse = self._weights(synapse_key, neuron_key)
        if synapse.kernel.ndim == 4:
            node = self.flat.nodes[synapse_key]
            raise _node_error(synapse_key, node, "a readout must be dense.")
        input_shape = self.shape
        _, neuron_shape = self._output_shapes(synapse)
        raw_name = neuron_key if neuron_key is not None else synapse_key
        name, mode = self._name_and_mode(raw_name)
        if neuron_key is None:
            decay, decay_mode, tau = 1.0, "direct", None
            readout_mode = self.readout_mode or "per_step"
            allowed = ("per_step", "mean")
        else:
            neuron = self.flat.nodes[neuron_key]
            decay, decay_mode, tau, scale = _dynamics(
                neuron, neuron_key, neuron_shape, self.dt, mode, conv=False
            )
            synapse = _scaled(synapse, scale)
            readout_mode = self.readout_mode or "leaky"
            allowed = ("leaky", "leaky_last")
        if readout_mode not in allowed:
            raise ConversionError(
                f"readout_mode={readout_mode!r} does not fit the NIR readout "
                f"{raw_name!r}; expected one of {allowed} (all modes: {READOUT_MODES})."
            )
        self.layers.append(
            LayerSpec(
                name,
                "readout",
                kernel=synapse.kernel,
                bias=synapse.bias,
                decay=decay,
                decay_mode=decay_mode,
                tau=tau,
                readout_mode=readout_mode,
                readout_activation=self.readout_activation,
                input_shape=input_shape,
            )
        )

    def _recurrent_weights(
        self, neuron_key: str, units: int, synapse: _Synapse
    ) -> tuple[np.ndarray, _Synapse]:
        """Return the recurrent kernel ``(pre, post)`` and the weights with its bias."""
        loop_key = self.recurrent[neuron_key]
        loop = self.flat.nodes[loop_key]
        if synapse.kernel.ndim == 4:
            raise _node_error(
                loop_key, loop, "recurrent convolutions are not supported."
            )
        loop_weight = np.asarray(loop.weight, dtype=np.float64)
        if loop_weight.shape != (units, units):
            raise _node_error(
                loop_key,
                loop,
                f"recurrent weight shape {loop_weight.shape} does not match the "
                f"{units} neurons of {neuron_key!r}.",
            )
        loop_bias = getattr(loop, "bias", None)
        if loop_bias is not None and np.any(loop_bias):
            bias = synapse.bias if synapse.bias is not None else np.zeros(units)
            extra = np.asarray(loop_bias, dtype=np.float64).reshape(-1)
            synapse = dataclasses.replace(synapse, bias=bias + extra)
            logger.info(
                "NIR node %r: the recurrent bias is added to the input bias.", loop_key
            )
        return np.ascontiguousarray(loop_weight.T), synapse

    def _spiking(self, synapse_key: str | None, neuron_key: str) -> None:
        """Append an SNU layer: weights (or none) and a LIF or IF node."""
        neuron = self.flat.nodes[neuron_key]
        synapse = self._weights(synapse_key, neuron_key)
        conv = synapse.kernel.ndim == 4
        input_shape = self.shape
        out_shape, neuron_shape = self._output_shapes(synapse)
        name, mode = self._name_and_mode(neuron_key)
        decay, decay_mode, tau, scale = _dynamics(
            neuron, neuron_key, neuron_shape, self.dt, mode, conv
        )
        threshold = _spiking_fields(neuron, neuron_key, neuron_shape, conv)

        recurrent_kernel = None
        kind = "snu_conv2d" if conv else "snu_dense"
        if neuron_key in self.recurrent:
            recurrent_kernel, synapse = self._recurrent_weights(
                neuron_key, out_shape[0], synapse
            )
            # Columns are postsynaptic neurons, which carry the input scale.
            recurrent_kernel = recurrent_kernel * scale
            kind = "snu_recurrent"
        synapse = _scaled(synapse, scale)
        self.layers.append(
            LayerSpec(
                name,
                kind,
                kernel=synapse.kernel,
                threshold=threshold,
                bias=synapse.bias,
                recurrent_kernel=recurrent_kernel,
                decay=decay,
                decay_mode=decay_mode,
                tau=tau,
                activation="identity",
                output="step",
                strides=synapse.strides,
                padding=synapse.padding,
                input_shape=input_shape,
            )
        )
        self.shape = out_shape


def graph_to_spec(
    graph: nir.NIRGraph,
    *,
    dt: float,
    discretisation: str | Mapping[str, str] = "exact",
    readout_mode: str | None = None,
    readout_activation: str = "linear",
    name: str = "nir_network",
) -> NetworkSpec:
    """Translate a NIR graph into a network spec; see :func:`read_nir`."""
    try:
        step = float(dt)
    except (TypeError, ValueError):
        raise ConversionError(
            f"dt must be a number of seconds, received {dt!r}."
        ) from None
    if not (math.isfinite(step) and step > 0):
        raise ConversionError(
            f"dt must be a positive number of seconds, received {dt!r}."
        )

    modes = _modes_for(discretisation)
    _log_metadata_differences(graph, step, modes[0])
    flat = _inline(graph)
    _skip_identities(flat)
    order, recurrent = _chain(flat)
    input_shape = _input_shape(order[0], flat.nodes[order[0]])
    reader = _ChainReader(
        flat, recurrent, step, modes, (readout_mode, readout_activation)
    )
    layers = reader.read(order[1:-1], input_shape)
    spec = NetworkSpec(
        layers=layers,
        input_shape=input_shape,
        dt=step,
        precision="float64",
        name=name,
        metadata={"source_format": "nir", "nir_discretisation": modes[0]},
    )
    try:
        return spec.validate()
    except SnubridgeError as error:
        raise ConversionError(
            f"The NIR graph gives an invalid network: {error}"
        ) from None


def read_nir(
    path_or_graph: str | os.PathLike | nir.NIRGraph,
    *,
    dt: float,
    discretisation: str | Mapping[str, str] = "exact",
    readout_mode: str | None = None,
    readout_activation: str = "linear",
) -> NetworkSpec:
    """Read a NIR file or graph as a network spec with time step ``dt``.

    Args:
        path_or_graph: A ``.nir`` file or a ``nir.NIRGraph``.
        dt: Time step in seconds at which to discretise the continuous model.
        discretisation: ``"exact"`` (``l = exp(-dt/tau)``) or ``"euler"``
            (``l = 1 - dt/tau``), or a mapping from layer name to either, with
            the key ``"*"`` for the rest. The file's metadata is not used.
        readout_mode: Time reduction of a final readout, ``"mean"`` after
            weights alone or ``"leaky_last"`` after an LI or I node. By
            default every step is returned (``"per_step"`` or ``"leaky"``).
        readout_activation: ``"linear"``, ``"softmax"`` or ``"sigmoid"``
            for the readout.

    Returns:
        A validated float64 spec whose SNU layers have ``activation="identity"``.

    Raises:
        ConversionError: the file is missing or not NIR, or a node has no
            exact SNU equivalent; the message names the node and the reason.
    """
    if isinstance(path_or_graph, nir.NIRGraph):
        graph, name = path_or_graph, "nir_network"
    elif isinstance(path_or_graph, nir.NIRNode):
        raise ConversionError(
            "read_nir needs a NIRGraph or a path, received a "
            f"{type(path_or_graph).__name__}."
        )
    else:
        graph = load_nir_graph(path_or_graph)
        stem = _NAME_CHARACTERS.sub("_", Path(path_or_graph).stem) or "nir_network"
        name = stem if stem[0] not in ".-" else f"n{stem}"
    spec = graph_to_spec(
        graph,
        dt=dt,
        discretisation=discretisation,
        readout_mode=readout_mode,
        readout_activation=readout_activation,
        name=name[:128],
    )
    logger.info(
        "Read NIR graph as %d layers (dt=%g s, discretisation %s)",
        len(spec.layers),
        spec.dt,
        spec.metadata["nir_discretisation"],
    )
    return spec

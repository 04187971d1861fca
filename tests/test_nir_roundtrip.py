"""NIR export and import checked against a second NIR simulator and by round trips.

``run_nir_graph`` below is an independent numpy simulator of a NIR graph,
written from the NIR node definitions of nir 1.0.8. It works channels first
``(C, H, W)`` and convolves with PyTorch's cross-correlation convention by
explicit loops. It flattens in ``C, H, W`` order and integrates each neuron's
ODE ``tau dv/dt = (v_leak - v) + r I`` step by step, exactly or by forward
Euler. It shares no code with snubridge, so a transposed kernel, a wrong
flatten order or a wrong input scale in the converter shows up as different
spikes.
"""

from __future__ import annotations

import math

import nir
import numpy as np
import pytest

from snubridge.converters.nir_io import read_nir, to_nir_graph, write_nir
from snubridge.errors import ConversionError
from snubridge.reference import simulate
from snubridge.spec import LayerSpec, NetworkSpec


def _conv_chw(frame: np.ndarray, node: nir.Conv2d) -> np.ndarray:
    """Cross-correlate one ``(C, H, W)`` frame as torch.nn.Conv2d does."""
    weight = np.asarray(node.weight, dtype=np.float64)
    c_out, c_in, kh, kw = weight.shape
    sh, sw = (int(s) for s in np.broadcast_to(np.asarray(node.stride), (2,)))
    if isinstance(node.padding, str) and node.padding == "same":
        top, left = (kh - 1) // 2, (kw - 1) // 2
        bottom, right = kh - 1 - top, kw - 1 - left
    elif isinstance(node.padding, str):
        top = left = bottom = right = 0
    else:
        top, left = (int(p) for p in np.broadcast_to(np.asarray(node.padding), (2,)))
        bottom, right = top, left
    padded = np.pad(frame, ((0, 0), (top, bottom), (left, right)))
    out_h = (padded.shape[1] - kh) // sh + 1
    out_w = (padded.shape[2] - kw) // sw + 1
    result = np.zeros((c_out, out_h, out_w))
    for o in range(c_out):
        for y in range(out_h):
            for x in range(out_w):
                patch = padded[:, y * sh : y * sh + kh, x * sw : x * sw + kw]
                result[o, y, x] = np.sum(patch * weight[o]) + node.bias[o]
    return result


def _linear_map(node: nir.NIRNode, value: np.ndarray) -> np.ndarray:
    if isinstance(node, nir.Conv2d):
        return np.stack([_conv_chw(frame, node) for frame in value])
    out = value @ np.asarray(node.weight, dtype=np.float64).T
    if isinstance(node, nir.Affine):
        out = out + node.bias
    return out


def _inline(graph: nir.NIRGraph) -> tuple[dict, list]:
    nodes, edges = {}, []
    entries, exits = {}, {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            inner_nodes, inner_edges = _inline(node)
            start = next(k for k, v in inner_nodes.items() if isinstance(v, nir.Input))
            end = next(k for k, v in inner_nodes.items() if isinstance(v, nir.Output))
            entries[name] = [f"{name}/{b}" for a, b in inner_edges if a == start]
            exits[name] = [f"{name}/{a}" for a, b in inner_edges if b == end]
            for key, value in inner_nodes.items():
                if key not in (start, end):
                    nodes[f"{name}/{key}"] = value
            edges += [
                (f"{name}/{a}", f"{name}/{b}")
                for a, b in inner_edges
                if a != start and b != end
            ]
        else:
            nodes[name] = node
    for a, b in graph.edges:
        edges += [(x, y) for x in exits.get(a, [a]) for y in entries.get(b, [b])]
    return nodes, edges


def run_nir_graph(
    graph: nir.NIRGraph, inputs: np.ndarray, dt: float, mode: str
) -> dict:
    """Simulate ``graph`` on ``inputs`` ``(samples, steps, *nir_input_shape)``.

    Every node outputs once per step in topological order; an edge that closes
    a loop carries the value of the previous step. Returns node name to output
    ``(samples, steps, ...)``.
    """
    nodes, edges = _inline(graph)
    start = next(k for k, v in nodes.items() if isinstance(v, nir.Input))
    order, seen, back = [start], {start}, set()
    while len(order) < len(nodes):
        for name in nodes:
            if name in seen:
                continue
            sources = [a for a, b in edges if b == name]
            if all(s in seen for s in sources):
                order.append(name)
                seen.add(name)
                break
        else:
            # A loop: take the first node fed by a visited node, the rest of
            # its inputs come from the previous step.
            name = next(
                n
                for n in nodes
                if n not in seen and any(a in seen for a, b in edges if b == n)
            )
            back |= {(a, name) for a, b in edges if b == name and a not in seen}
            order.append(name)
            seen.add(name)
    samples, steps = inputs.shape[:2]
    outputs = {name: [] for name in nodes}
    previous: dict[str, np.ndarray] = {}
    membranes: dict[str, np.ndarray] = {}
    for t in range(steps):
        current: dict[str, np.ndarray] = {}
        for name in order:
            node = nodes[name]
            if isinstance(node, nir.Input):
                current[name] = inputs[:, t]
                continue
            parts = []
            for a, b in edges:
                if b != name:
                    continue
                if (a, b) in back:
                    if a in previous:
                        parts.append(previous[a])
                else:
                    parts.append(current[a])
            value = sum(parts[1:], parts[0])
            if isinstance(node, (nir.Affine, nir.Linear, nir.Conv2d)):
                out = _linear_map(node, value)
            elif isinstance(node, nir.Flatten):
                out = value.reshape(samples, -1)
            elif isinstance(node, nir.Output):
                out = value
            elif isinstance(node, (nir.LIF, nir.IF, nir.LI)):
                v = membranes.get(name, np.zeros_like(value))
                if isinstance(node, nir.IF):
                    v = v + dt * node.r * value
                elif mode == "euler":
                    v = v + dt / node.tau * ((node.v_leak - v) + node.r * value)
                else:
                    decay = np.exp(-dt / node.tau)
                    v = (
                        node.v_leak
                        + (v - node.v_leak) * decay
                        + (1 - decay) * node.r * value
                    )
                if isinstance(node, nir.LI):
                    out = v
                else:
                    out = (v > node.v_threshold).astype(np.float64)
                    v = np.where(out > 0, node.v_reset, v)
                membranes[name] = v
            else:
                raise AssertionError(f"reference simulator lacks {type(node).__name__}")
            current[name] = out
        for name, value in current.items():
            outputs[name].append(value)
        previous = current
    return {
        name: np.stack(values, axis=1) for name, values in outputs.items() if values
    }


def _hwc_to_chw(values: np.ndarray) -> np.ndarray:
    return np.moveaxis(values, -1, -3) if values.ndim == 5 else values


def _chw_flat_to_hwc(values: np.ndarray, shape_chw: tuple[int, int, int]) -> np.ndarray:
    samples, steps = values.shape[:2]
    return np.moveaxis(values.reshape(samples, steps, *shape_chw), 2, -1).reshape(
        samples, steps, -1
    )


def dense_spec(rng: np.random.Generator, decay_mode: str = "direct") -> NetworkSpec:
    extra = {} if decay_mode == "direct" else {"decay_mode": decay_mode, "tau": 0.02}
    decay = 0.9 if decay_mode == "direct" else None
    layers = [
        LayerSpec(
            "hidden",
            "snu_dense",
            kernel=rng.normal(0.0, 0.6, (10, 8)),
            bias=rng.normal(0.0, 0.1, 8),
            threshold=rng.uniform(0.5, 1.2, 8),
            decay=decay or 0.0,
            activation="identity",
            input_shape=(10,),
            **extra,
        ),
        LayerSpec(
            "second",
            "snu_dense",
            kernel=rng.normal(0.0, 0.8, (8, 5)),
            threshold=rng.uniform(0.3, 0.9, 5),
            decay=0.75,
            activation="identity",
            input_shape=(8,),
        ),
        LayerSpec(
            "out",
            "readout",
            kernel=rng.normal(0.0, 1.0, (5, 3)),
            bias=rng.normal(0.0, 1.0, 3),
            readout_mode="per_step",
            input_shape=(5,),
        ),
    ]
    if decay is None:
        from snubridge.spec import decay_from_tau

        layers[0].decay = decay_from_tau(0.02, 1e-3, decay_mode)
    return NetworkSpec(layers=layers, input_shape=(10,), dt=1e-3).validate()


def recurrent_spec(rng: np.random.Generator) -> NetworkSpec:
    layers = [
        LayerSpec(
            "rec",
            "snu_recurrent",
            kernel=rng.normal(0.0, 0.7, (6, 7)),
            recurrent_kernel=rng.normal(0.0, 0.6, (7, 7)),
            bias=rng.normal(0.0, 0.1, 7),
            threshold=rng.uniform(0.4, 1.0, 7),
            decay=0.85,
            activation="identity",
            input_shape=(6,),
        ),
        LayerSpec(
            "out",
            "readout",
            kernel=rng.normal(0.0, 1.0, (7, 2)),
            decay=0.8,
            readout_mode="leaky",
            input_shape=(7,),
        ),
    ]
    return NetworkSpec(layers=layers, input_shape=(6,), dt=1e-3).validate()


def conv_spec(
    rng: np.random.Generator,
    kernel_hw: tuple[int, int] = (3, 3),
    strides: tuple[int, int] = (1, 1),
    padding: str = "valid",
    input_hw: tuple[int, int] = (6, 5),
) -> NetworkSpec:
    conv = LayerSpec(
        "conv",
        "snu_conv2d",
        kernel=rng.normal(0.0, 0.7, (*kernel_hw, 2, 3)),
        bias=rng.normal(0.0, 0.1, 3),
        threshold=rng.uniform(0.4, 1.0, 3),
        decay=0.8,
        activation="identity",
        strides=strides,
        padding=padding,
        input_shape=(*input_hw, 2),
    ).validate()
    flat_shape = conv.output_shape
    layers = [
        conv,
        LayerSpec("flat", "flatten", input_shape=flat_shape),
        LayerSpec(
            "dense",
            "snu_dense",
            kernel=rng.normal(0.0, 0.5, (int(np.prod(flat_shape)), 4)),
            threshold=rng.uniform(0.5, 1.0, 4),
            decay=0.7,
            activation="identity",
            input_shape=(int(np.prod(flat_shape)),),
        ),
    ]
    return NetworkSpec(layers=layers, input_shape=(*input_hw, 2), dt=1e-3).validate()


def _inputs(rng: np.random.Generator, spec: NetworkSpec, steps: int = 25) -> np.ndarray:
    return (rng.random((6, steps, *spec.input_shape)) < 0.4).astype(np.float64)


@pytest.mark.parametrize("mode", ["exact", "euler"])
def test_dense_export_matches_reference(mode):
    rng = np.random.default_rng(11)
    spec = dense_spec(rng)
    inputs = _inputs(rng, spec)
    ours = simulate(spec, inputs)
    graph = to_nir_graph(spec, discretisation=mode)
    theirs = run_nir_graph(graph, inputs, spec.dt, mode)
    assert ours.outputs["hidden"].any()
    np.testing.assert_array_equal(ours.outputs["hidden"], theirs["hidden"])
    np.testing.assert_array_equal(ours.outputs["second"], theirs["second"])
    np.testing.assert_allclose(
        ours.outputs["out"], theirs["out"], rtol=1e-12, atol=1e-12
    )


def test_recurrent_export_matches_reference():
    rng = np.random.default_rng(12)
    spec = recurrent_spec(rng)
    inputs = _inputs(rng, spec)
    ours = simulate(spec, inputs)
    theirs = run_nir_graph(to_nir_graph(spec), inputs, spec.dt, "exact")
    assert 0 < ours.outputs["rec"].mean() < 0.9
    np.testing.assert_array_equal(ours.outputs["rec"], theirs["rec/lif"])
    np.testing.assert_allclose(
        ours.outputs["out"], theirs["out"], rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize(
    ("kernel_hw", "strides", "padding", "input_hw"),
    [
        ((3, 3), (1, 1), "valid", (6, 5)),
        ((3, 3), (1, 1), "same", (5, 4)),
        ((2, 2), (1, 1), "same", (5, 6)),
        ((3, 3), (2, 2), "same", (7, 7)),
        ((3, 3), (2, 1), "valid", (7, 5)),
    ],
)
def test_conv_flatten_export_matches_reference(kernel_hw, strides, padding, input_hw):
    rng = np.random.default_rng(13)
    spec = conv_spec(rng, kernel_hw, strides, padding, input_hw)
    inputs = _inputs(rng, spec, steps=12)
    ours = simulate(spec, inputs)
    theirs = run_nir_graph(to_nir_graph(spec), _hwc_to_chw(inputs), spec.dt, "exact")
    conv_out = spec.layers[0].output_shape
    chw = (conv_out[2], conv_out[0], conv_out[1])
    their_conv = _chw_flat_to_hwc(theirs["conv"], chw)
    assert ours.spikes["conv"].any()
    np.testing.assert_array_equal(ours.spikes["conv"], their_conv)
    assert ours.outputs["dense"].any()
    np.testing.assert_array_equal(ours.outputs["dense"], theirs["dense"])


def _handmade_conv_graph(
    rng: np.random.Generator, padding: tuple[int, int] = (1, 1)
) -> nir.NIRGraph:
    """A channels-first NIR graph built without snubridge: conv, flatten, dense."""
    weight = rng.normal(0.0, 0.7, (3, 2, 3, 3))
    conv_out = (3, 4 + 2 * padding[0], 3 + 2 * padding[1])
    n_flat = int(np.prod(conv_out))
    tau, dt = 0.004, 1e-3
    scale = -math.expm1(-dt / tau)

    def lif(shape, threshold, r):
        return nir.LIF(
            tau=np.full(shape, tau),
            r=np.full(shape, r),
            v_leak=np.zeros(shape),
            v_threshold=threshold,
            v_reset=np.zeros(shape),
        )

    nodes = {
        "in": nir.Input(input_type=np.array([2, 6, 5])),
        "c": nir.Conv2d(
            input_shape=(6, 5),
            weight=weight,
            stride=1,
            padding=padding,
            dilation=1,
            groups=1,
            bias=rng.normal(0.0, 0.1, 3),
        ),
        "lif0": lif(
            conv_out,
            np.broadcast_to(np.array([0.5, 0.8, 0.6])[:, None, None], conv_out).copy(),
            1.7 / scale,
        ),
        "fl": nir.Flatten(input_type={"input": np.array(conv_out)}, start_dim=0),
        "fc": nir.Affine(weight=rng.normal(0.0, 0.4, (4, n_flat)), bias=np.zeros(4)),
        "lif1": lif((4,), rng.uniform(0.5, 1.0, 4), 0.9 / scale),
        "out": nir.Output(output_type=np.array([4])),
    }
    edges = [
        ("in", "c"),
        ("c", "lif0"),
        ("lif0", "fl"),
        ("fl", "fc"),
        ("fc", "lif1"),
        ("lif1", "out"),
    ]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def test_import_channels_first_conv_matches_reference():
    rng = np.random.default_rng(14)
    graph = _handmade_conv_graph(rng)
    spec = read_nir(graph, dt=1e-3)
    assert spec.input_shape == (6, 5, 2)
    assert spec.layers[0].padding == "same"
    inputs_chw = (rng.random((6, 15, 2, 6, 5)) < 0.4).astype(np.float64)
    theirs = run_nir_graph(graph, inputs_chw, 1e-3, "exact")
    ours = simulate(spec, np.moveaxis(inputs_chw, 2, -1))
    assert ours.spikes["lif0"].any()
    np.testing.assert_array_equal(
        ours.spikes["lif0"], _chw_flat_to_hwc(theirs["lif0"], (3, 6, 5))
    )
    assert ours.outputs["lif1"].any()
    np.testing.assert_array_equal(ours.outputs["lif1"], theirs["lif1"])


def _assert_same_layers(first: NetworkSpec, second: NetworkSpec) -> None:
    assert [layer.name for layer in first.layers] == [
        layer.name for layer in second.layers
    ]
    for a, b in zip(first.layers, second.layers, strict=True):
        assert a.kind == b.kind
        assert a.input_shape == b.input_shape
        if a.kind == "flatten":
            continue
        np.testing.assert_array_equal(a.kernel, b.kernel)
        assert a.decay == b.decay
        if a.bias is not None:
            np.testing.assert_array_equal(a.bias, b.bias)
        if a.kind != "readout":
            np.testing.assert_array_equal(a.threshold, b.threshold)
            assert (a.strides, a.padding) == (b.strides, b.padding)
        if a.kind == "snu_recurrent":
            np.testing.assert_array_equal(a.recurrent_kernel, b.recurrent_kernel)


@pytest.mark.parametrize("mode", ["exact", "euler"])
@pytest.mark.parametrize("build", [dense_spec, recurrent_spec, conv_spec])
def test_spec_file_spec_round_trip_exact(tmp_path, build, mode):
    rng = np.random.default_rng(15)
    spec = build(rng)
    path = write_nir(spec, tmp_path / "net.nir", discretisation=mode)
    back = read_nir(path, dt=spec.dt, discretisation=mode)
    _assert_same_layers(spec, back)
    inputs = _inputs(rng, spec)
    first, second = simulate(spec, inputs), simulate(back, inputs)
    for name in first.outputs:
        np.testing.assert_array_equal(first.outputs[name], second.outputs[name])


@pytest.mark.parametrize("mode", ["exact", "euler"])
def test_round_trip_keeps_recorded_decay_mode(tmp_path, mode):
    rng = np.random.default_rng(16)
    spec = dense_spec(rng, decay_mode=mode)
    path = write_nir(spec, tmp_path / "net.nir")
    back = read_nir(path, dt=spec.dt, discretisation={"hidden": mode, "*": "exact"})
    assert back.layers[0].decay_mode == mode
    assert back.layers[0].decay == spec.layers[0].decay
    assert back.layers[0].tau == pytest.approx(0.02, rel=1e-12)
    assert back.layers[1].decay == spec.layers[1].decay


def test_import_rejects_mixed_padding():
    graph = _handmade_conv_graph(np.random.default_rng(17), padding=(1, 0))
    with pytest.raises(ConversionError, match=r"'c' \(Conv2d\).*padding \(1, 0\)"):
        read_nir(graph, dt=1e-3)

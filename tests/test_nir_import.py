"""NIR import: the continuous-to-discrete mapping, defaults and refusals."""

from __future__ import annotations

import logging
import math

import h5py
import nir
import numpy as np
import pytest

from snubridge.converters.nir_io import input_scale, read_nir, write_nir
from snubridge.errors import ConversionError
from snubridge.reference import simulate
from snubridge.spec import LayerSpec, NetworkSpec

DT = 1e-3


def _lif(n=3, tau=0.01, r=None, **overrides) -> nir.LIF:
    fields = dict(
        tau=np.full(n, tau),
        r=np.full(n, tau / DT) if r is None else np.asarray(r, dtype=np.float64),
        v_leak=np.zeros(n),
        v_threshold=np.linspace(0.5, 1.0, n),
        v_reset=np.zeros(n),
    )
    fields.update(overrides)
    return nir.LIF(**fields)


def _graph(neuron: nir.NIRNode, weight=None, n_in=2) -> nir.NIRGraph:
    n = neuron.output_type["output"][0]
    if weight is None:
        weight = np.arange(1.0, 1.0 + n * n_in).reshape(n, n_in) / 4
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([n_in])),
            "w": nir.Affine(weight=np.asarray(weight, float), bias=np.zeros(n)),
            "lif": neuron,
            "output": nir.Output(output_type=np.array([n])),
        },
        edges=[("input", "w"), ("w", "lif"), ("lif", "output")],
    )


def test_exact_and_euler_decay_formulas():
    graph = _graph(_lif(tau=0.004))
    exact = read_nir(graph, dt=DT, discretisation="exact").layers[0]
    euler = read_nir(graph, dt=DT, discretisation="euler").layers[0]
    assert exact.decay == pytest.approx(math.exp(-0.25), rel=1e-15)
    assert euler.decay == pytest.approx(0.75, rel=1e-15)
    assert (exact.decay_mode, euler.decay_mode) == ("exact", "euler")
    assert exact.tau == euler.tau == 0.004
    assert exact.activation == "identity"


def test_single_neuron_trace_matches_hand_computation():
    tau, r = 0.005, 3.0
    graph = _graph(
        _lif(n=1, tau=tau, r=[r], v_threshold=np.array([0.9])), weight=[[0.6]], n_in=1
    )
    spec = read_nir(graph, dt=DT, discretisation="exact")
    drive = np.array([1, 1, 0, 1, 1, 1, 0, 0, 1, 1], dtype=np.float64)
    result = simulate(spec, drive.reshape(1, -1, 1))
    decay = math.exp(-DT / tau)
    v, trace, spikes = 0.0, [], []
    for x in drive:
        v = decay * v + (1 - decay) * r * 0.6 * x
        trace.append(v)
        spikes.append(float(v > 0.9))
        if v > 0.9:
            v = 0.0
    np.testing.assert_allclose(result.states["lif"][0, :, 0], trace, rtol=1e-14)
    np.testing.assert_array_equal(result.outputs["lif"][0, :, 0], spikes)
    assert 0 < sum(spikes) < len(spikes)


def test_input_scale_folds_into_weights_per_neuron():
    tau = 0.01
    r = np.array([1.0, 2.0, 0.5]) * tau / DT
    graph = _graph(_lif(tau=tau, r=r))
    layer = read_nir(graph, dt=DT, discretisation="euler").layers[0]
    weight = graph.nodes["w"].weight
    np.testing.assert_allclose(
        layer.kernel, weight.T * np.array([1.0, 2.0, 0.5]), rtol=1e-14
    )
    np.testing.assert_array_equal(layer.threshold, np.linspace(0.5, 1.0, 3))


def test_unit_scale_in_float32_is_snapped_to_one():
    tau = np.float32(1e-4) / (np.float32(1) - np.full(3, 0.9, np.float32))
    r = tau / np.float32(1e-4)
    graph = _graph(_lif(tau=tau, r=r))
    assert graph.nodes["lif"].tau.dtype == np.float32
    assert np.all(input_scale(tau, r, 1e-4, "euler") != 1.0)
    layer = read_nir(graph, dt=1e-4, discretisation="euler").layers[0]
    np.testing.assert_array_equal(layer.kernel, graph.nodes["w"].weight.T)


def test_if_node_has_no_leak():
    node = nir.IF(r=np.full(2, 1 / DT), v_threshold=np.array([0.3, 0.6]))
    layer = read_nir(_graph(node), dt=DT).layers[0]
    assert layer.decay == 1.0
    np.testing.assert_allclose(
        layer.kernel, _graph(node).nodes["w"].weight.T, rtol=1e-15
    )


def test_top_level_recurrent_loop():
    rec = np.array([[0.0, 0.5, -0.2], [0.3, 0.0, 0.1], [-0.4, 0.2, 0.0]])
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([2])),
            "w": nir.Linear(weight=np.array([[1.0, 0.2], [0.3, 0.8], [0.5, 0.5]])),
            "lif": _lif(),
            "w_rec": nir.Linear(weight=rec),
            "output": nir.Output(output_type=np.array([3])),
        },
        edges=[
            ("input", "w"),
            ("w", "lif"),
            ("lif", "w_rec"),
            ("w_rec", "lif"),
            ("lif", "output"),
        ],
    )
    layer = read_nir(graph, dt=DT, discretisation="euler").layers[0]
    assert layer.kind == "snu_recurrent"
    # NIR w_rec[post, pre]; the spec's recurrent kernel is [pre, post].
    assert layer.recurrent_kernel[0, 1] == rec[1, 0]
    assert layer.recurrent_kernel[2, 0] == rec[0, 2]


def test_missing_v_reset_defaults_to_zero(tmp_path):
    path = tmp_path / "old.nir"
    nir.write(path, _graph(_lif()))
    with h5py.File(path, "r+") as handle:
        del handle["node/nodes/lif/v_reset"]
    spec = read_nir(path, dt=DT)
    np.testing.assert_array_equal(spec.layers[0].threshold, np.linspace(0.5, 1.0, 3))


def test_metadata_is_not_used_for_dynamics(tmp_path, caplog):
    layer = LayerSpec(
        "h",
        "snu_dense",
        kernel=np.eye(2),
        threshold=np.ones(2),
        decay=0.5,
        activation="identity",
        input_shape=(2,),
    )
    spec = NetworkSpec(layers=[layer], input_shape=(2,), dt=DT).validate()
    path = write_nir(spec, tmp_path / "net.nir", discretisation="euler")
    tau = DT / 0.5
    with caplog.at_level(logging.WARNING):
        back = read_nir(path, dt=2 * DT, discretisation="exact")
    assert back.layers[0].decay == pytest.approx(math.exp(-2 * DT / tau), rel=1e-14)
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "dt=0.001" in messages
    assert "'euler'" in messages


def _expect_rejected(graph, pattern):
    with pytest.raises(ConversionError, match=pattern):
        read_nir(graph, dt=DT)


def test_cuba_lif_rejected():
    node = nir.CubaLIF(
        tau_syn=np.full(3, 0.005),
        tau_mem=np.full(3, 0.01),
        r=np.full(3, 10.0),
        v_leak=np.zeros(3),
        v_threshold=np.ones(3),
    )
    _expect_rejected(_graph(node), r"'lif' \(CubaLIF\).*tau_syn")


def test_nonzero_v_leak_rejected():
    _expect_rejected(
        _graph(_lif(v_leak=np.array([0.0, 0.1, 0.0]))), r"'lif' \(LIF\).*v_leak"
    )


def test_nonzero_v_reset_rejected():
    _expect_rejected(_graph(_lif(v_reset=np.full(3, -0.2))), r"'lif' \(LIF\).*v_reset")


def test_per_neuron_tau_rejected():
    _expect_rejected(
        _graph(_lif(tau=np.array([0.01, 0.02, 0.01]))), r"'lif'.*tau takes 2"
    )


def test_euler_with_tau_below_dt_rejected():
    graph = _graph(_lif(tau=0.0005))
    with pytest.raises(ConversionError, match=r"'lif'.*tau >= dt"):
        read_nir(graph, dt=DT, discretisation="euler")


def test_threshold_node_rejected():
    graph = _graph(_lif())
    graph = nir.NIRGraph(
        nodes={**graph.nodes, "thr": nir.Threshold(threshold=np.ones(3))},
        edges=[("input", "w"), ("w", "thr"), ("thr", "lif"), ("lif", "output")],
    )
    _expect_rejected(graph, r"'thr' \(Threshold\)")


def test_branching_graph_rejected():
    graph = _graph(_lif())
    nodes = {**graph.nodes, "w2": nir.Linear(weight=np.ones((3, 2)))}
    edges = [*graph.edges, ("input", "w2"), ("w2", "lif")]
    _expect_rejected(nir.NIRGraph(nodes=nodes, edges=edges), r"'input'.*feeds 2 nodes")


def test_unknown_node_type_in_file_rejected(tmp_path):
    path = tmp_path / "future.nir"
    nir.write(path, _graph(_lif()))
    with h5py.File(path, "r+") as handle:
        del handle["node/nodes/lif/type"]
        handle["node/nodes/lif"].create_dataset(
            "type", data="AdExNeuron", dtype=h5py.string_dtype()
        )
    with pytest.raises(ConversionError, match=r"'lif'.*'AdExNeuron'"):
        read_nir(path, dt=DT)


def test_missing_and_foreign_files_rejected(tmp_path):
    with pytest.raises(ConversionError, match="does not exist"):
        read_nir(tmp_path / "absent.nir", dt=DT)
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = np.ones(3)
    with pytest.raises(ConversionError, match="not a NIR graph"):
        read_nir(foreign, dt=DT)
    text = tmp_path / "text.nir"
    text.write_text("not hdf5")
    with pytest.raises(ConversionError, match="not a readable HDF5"):
        read_nir(text, dt=DT)


def test_invalid_dt_rejected():
    with pytest.raises(ConversionError, match="dt must be a positive"):
        read_nir(_graph(_lif()), dt=0.0)


def test_readout_modes():
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([2])),
            "w": nir.Linear(weight=np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])),
            "lif": _lif(),
            "ro": nir.Affine(
                weight=np.array([[1.0, -1.0, 0.5]]), bias=np.array([0.25])
            ),
            "output": nir.Output(output_type=np.array([1])),
        },
        edges=[("input", "w"), ("w", "lif"), ("lif", "ro"), ("ro", "output")],
    )
    per_step = read_nir(graph, dt=DT).layers[-1]
    assert (per_step.kind, per_step.readout_mode) == ("readout", "per_step")
    np.testing.assert_array_equal(per_step.kernel, [[1.0], [-1.0], [0.5]])
    mean = read_nir(graph, dt=DT, readout_mode="mean", readout_activation="sigmoid")
    assert (mean.layers[-1].readout_mode, mean.layers[-1].readout_activation) == (
        "mean",
        "sigmoid",
    )
    with pytest.raises(ConversionError, match="readout_mode='leaky'"):
        read_nir(graph, dt=DT, readout_mode="leaky")


def test_conv_without_input_shape_reads(tmp_path):
    layer = LayerSpec(
        "conv",
        "snu_conv2d",
        kernel=np.arange(18.0).reshape(3, 3, 1, 2) / 10,
        threshold=np.array([0.5, 1.5]),
        decay=0.9,
        activation="identity",
        input_shape=(5, 4, 1),
    )
    spec = NetworkSpec(layers=[layer], input_shape=(5, 4, 1), dt=DT).validate()
    path = write_nir(spec, tmp_path / "conv.nir")
    with h5py.File(path, "r+") as handle:
        del handle["node/nodes/conv.conv/input_shape"]
    back = read_nir(path, dt=DT)
    np.testing.assert_array_equal(back.layers[0].kernel, layer.kernel)
    assert back.layers[0].output_shape == (3, 2, 2)


def test_partial_flatten_rejected():
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([2, 3, 4])),
            "flat": nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=1),
            "output": nir.Output(output_type=np.array([2, 12])),
        },
        edges=[("input", "flat"), ("flat", "output")],
    )
    _expect_rejected(graph, r"'flat' \(Flatten\).*start_dim=1")

"""NIR export: node parameters against the stated formulas, refusals, file writing."""

from __future__ import annotations

import logging
import math
import os

import nir
import numpy as np
import pytest

import snubridge.converters.nir_io as nir_io
from snubridge.converters.nir_io import to_nir_graph, write_nir
from snubridge.errors import ConversionError
from snubridge.spec import LayerSpec, NetworkSpec

DT = 1e-3


def _dense(name="hidden", **overrides) -> LayerSpec:
    rng = np.random.default_rng(0)
    fields = dict(
        kernel=rng.normal(size=(4, 3)),
        bias=np.array([0.1, -0.2, 0.3]),
        threshold=np.array([0.5, 0.7, 0.9]),
        decay=0.8,
        activation="identity",
        input_shape=(4,),
    )
    fields.update(overrides)
    return LayerSpec(name, "snu_dense", **fields)


def _spec(*layers: LayerSpec, input_shape=(4,)) -> NetworkSpec:
    return NetworkSpec(layers=list(layers), input_shape=input_shape, dt=DT).validate()


def test_dense_weights_are_out_by_in():
    layer = _dense()
    graph = to_nir_graph(_spec(layer))
    affine = graph.nodes["hidden.affine"]
    assert isinstance(affine, nir.Affine)
    assert affine.weight.shape == (3, 4)
    for out in range(3):
        for inp in range(4):
            assert affine.weight[out, inp] == layer.kernel[inp, out]
    np.testing.assert_array_equal(affine.bias, layer.bias)


def test_dense_without_bias_is_linear():
    graph = to_nir_graph(_spec(_dense(bias=None)))
    assert isinstance(graph.nodes["hidden.linear"], nir.Linear)


def test_lif_exact_parameters():
    lif = to_nir_graph(_spec(_dense()), discretisation="exact").nodes["hidden"]
    assert isinstance(lif, nir.LIF)
    tau = float(lif.tau[0])
    assert math.exp(-DT / tau) == 0.8
    assert float(lif.r[0]) * (1 - math.exp(-DT / tau)) == pytest.approx(1.0, rel=1e-15)
    np.testing.assert_array_equal(lif.v_threshold, [0.5, 0.7, 0.9])
    np.testing.assert_array_equal(lif.v_leak, np.zeros(3))
    np.testing.assert_array_equal(lif.v_reset, np.zeros(3))


def test_lif_euler_parameters():
    lif = to_nir_graph(_spec(_dense()), discretisation="euler").nodes["hidden"]
    tau = float(lif.tau[0])
    assert 1 - DT / tau == 0.8
    assert tau == pytest.approx(DT / 0.2, rel=1e-14)
    assert float(lif.r[0]) * DT / tau == pytest.approx(1.0, rel=1e-15)


def test_layer_with_recorded_tau_keeps_it():
    from snubridge.spec import decay_from_tau

    layer = _dense(
        decay=decay_from_tau(0.015, DT, "euler"), decay_mode="euler", tau=0.015
    )
    lif = to_nir_graph(_spec(layer), discretisation="exact").nodes["hidden"]
    assert float(lif.tau[0]) == pytest.approx(0.015, rel=1e-12)
    assert lif.metadata["discretisation"] == "euler"


def test_no_leak_becomes_if():
    node = to_nir_graph(_spec(_dense(decay=1.0))).nodes["hidden"]
    assert isinstance(node, nir.IF)
    assert float(node.r[0]) * DT == pytest.approx(1.0, rel=1e-15)


def test_conv_weight_layout_and_threshold_broadcast():
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 2, 4))
    layer = LayerSpec(
        "conv",
        "snu_conv2d",
        kernel=kernel,
        threshold=np.array([0.2, 0.4, 0.6, 0.8]),
        decay=0.9,
        activation="identity",
        strides=(2, 1),
        input_shape=(7, 5, 2),
    )
    graph = to_nir_graph(_spec(layer, input_shape=(7, 5, 2)))
    conv = graph.nodes["conv.conv"]
    assert conv.weight.shape == (4, 2, 3, 3)
    assert conv.weight[3, 1, 2, 0] == kernel[2, 0, 1, 3]
    assert conv.weight[1, 0, 0, 2] == kernel[0, 2, 0, 1]
    assert tuple(conv.stride) == (2, 1)
    np.testing.assert_array_equal(conv.bias, np.zeros(4))
    np.testing.assert_array_equal(graph.nodes["input"].input_type["input"], [2, 7, 5])
    lif = graph.nodes["conv"]
    assert lif.v_threshold.shape == (4, 3, 3)
    np.testing.assert_array_equal(lif.v_threshold[:, 1, 2], [0.2, 0.4, 0.6, 0.8])


def test_flatten_reorders_next_kernel_rows():
    shape = (2, 3, 2)  # (H, W, C)
    kernel = np.arange(12 * 2, dtype=np.float64).reshape(12, 2)
    spec = _spec(
        LayerSpec("flat", "flatten", input_shape=shape),
        LayerSpec(
            "out", "readout", kernel=kernel, input_shape=(12,), readout_mode="per_step"
        ),
        input_shape=shape,
    )
    weight = to_nir_graph(spec).nodes["out"].weight
    for h in range(2):
        for w in range(3):
            for c in range(2):
                keras_row = (h * 3 + w) * 2 + c
                nir_column = (c * 2 + h) * 3 + w
                np.testing.assert_array_equal(weight[:, nir_column], kernel[keras_row])


def test_metadata_records_dt_and_discretisation():
    graph = to_nir_graph(_spec(_dense()), dt=2e-3, discretisation="euler")
    assert graph.metadata["dt"] == 2e-3
    assert graph.metadata["discretisation"] == "euler"
    assert graph.nodes["hidden"].metadata["discretisation"] == "euler"
    assert 1 - 2e-3 / float(graph.nodes["hidden"].tau[0]) == 0.8


def test_readout_reduction_recorded_in_metadata(caplog):
    readout = LayerSpec(
        "out",
        "readout",
        kernel=np.ones((3, 2)),
        readout_mode="mean",
        readout_activation="softmax",
        input_shape=(3,),
    )
    with caplog.at_level(logging.INFO, logger="converters.nir_export"):
        graph = to_nir_graph(_spec(_dense(), readout))
    node = graph.nodes["out"]
    assert isinstance(node, nir.Linear)
    assert node.metadata == {"time_reduction": "mean", "activation": "softmax"}


def test_leaky_readout_becomes_li():
    readout = LayerSpec(
        "out",
        "readout",
        kernel=np.ones((3, 2)),
        decay=0.6,
        readout_mode="leaky",
        input_shape=(3,),
    )
    node = to_nir_graph(_spec(_dense(), readout)).nodes["out"]
    assert isinstance(node, nir.LI)
    assert math.exp(-DT / float(node.tau[0])) == 0.6


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"output": "sigmoid"}, "soft SNU"),
        ({"lateral_inhibition": True}, "lateral inhibition"),
        ({"activation": "relu"}, "relu"),
    ],
)
def test_layers_without_nir_form_rejected(overrides, reason):
    with pytest.raises(ConversionError, match=f"'hidden'.*{reason}"):
        to_nir_graph(_spec(_dense(**overrides)))


def test_relu_drop_exports_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        graph = to_nir_graph(_spec(_dense(activation="relu")), relu="drop")
    assert isinstance(graph.nodes["hidden"], nir.LIF)
    assert graph.nodes["hidden"].metadata["dropped_activation"] == "relu"
    assert any(record.levelno == logging.WARNING for record in caplog.records)


def test_non_square_kernel_rejected():
    layer = LayerSpec(
        "conv",
        "snu_conv2d",
        kernel=np.ones((3, 2, 1, 2)),
        threshold=np.ones(2),
        activation="identity",
        input_shape=(5, 5, 1),
    )
    with pytest.raises(ConversionError, match="3x2"):
        to_nir_graph(_spec(layer, input_shape=(5, 5, 1)))


def test_odd_same_padding_with_stride_rejected():
    layer = LayerSpec(
        "conv",
        "snu_conv2d",
        kernel=np.ones((2, 2, 1, 2)),
        threshold=np.ones(2),
        activation="identity",
        strides=(2, 2),
        padding="same",
        input_shape=(5, 5, 1),
    )
    with pytest.raises(ConversionError, match="odd number"):
        to_nir_graph(_spec(layer, input_shape=(5, 5, 1)))


def test_unknown_discretisation_rejected():
    with pytest.raises(ConversionError, match="'midpoint'"):
        to_nir_graph(_spec(_dense()), discretisation="midpoint")


def test_write_nir_file_reads_with_nir(tmp_path):
    path = write_nir(_spec(_dense()), tmp_path / "sub" / "net.nir")
    assert path == tmp_path / "sub" / "net.nir"
    graph = nir.read(path)
    assert isinstance(graph.nodes["hidden"], nir.LIF)
    assert os.listdir(path.parent) == ["net.nir"]


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = write_nir(_spec(_dense()), tmp_path / "net.nir")
    before = path.read_bytes()

    def broken_write(filename, graph):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nir_io.nir, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_nir(_spec(_dense(decay=0.5)), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["net.nir"]

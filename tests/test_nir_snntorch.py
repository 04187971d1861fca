"""NIR files from snnTorch's own exporter, and ours run in snnTorch.

snnTorch (1.0.0) writes ``Leaky(beta)`` as a NIR LIF with ``dt = 1e-4`` s,
``tau = dt / (1 - beta)`` and ``r = tau / dt``, which is forward Euler with an
input scale of 1, so these files are read with ``dt=1e-4`` and
``discretisation="euler"``. snnTorch emits its spikes as float32 whatever
the module dtype, so its simulations here run in float32; the snubridge side
runs in float64.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest

torch = pytest.importorskip("torch")
snn = pytest.importorskip("snntorch")
export_nir = pytest.importorskip("snntorch.export_nir")
import_nir = pytest.importorskip("snntorch.import_nir")

from snubridge.converters.nir_io import read_nir, to_nir_graph  # noqa: E402
from snubridge.reference import simulate  # noqa: E402
from snubridge.spec import LayerSpec, NetworkSpec  # noqa: E402

SNNTORCH_DT = 1e-4


def _leaky(n, beta, thresholds, **extra):
    return snn.Leaky(
        beta=torch.full((n,), beta),
        threshold=torch.tensor(thresholds, dtype=torch.float32),
        reset_mechanism="zero",
        init_hidden=True,
        **extra,
    )


def _run_sequential(net, inputs: np.ndarray) -> list[np.ndarray]:
    """Run snnTorch layer by layer; return the spikes of every spiking module."""
    for module in net:
        if isinstance(module, snn.SpikingNeuron):
            module.mem = torch.zeros(0)
            if hasattr(module, "spk"):
                module.spk = torch.zeros(0)
    records: list[list[torch.Tensor]] = []
    values = torch.tensor(inputs, dtype=torch.float32)
    with torch.no_grad():
        for step in range(inputs.shape[1]):
            value = values[:, step]
            spikes = []
            for module in net:
                value = module(value)
                if isinstance(value, tuple):
                    value = value[0]
                if isinstance(module, snn.SpikingNeuron):
                    spikes.append(value)
            records.append(spikes)
    return [
        torch.stack([record[i] for record in records], dim=1).numpy()
        for i in range(len(records[0]))
    ]


def test_snntorch_leaky_export_agrees(tmp_path):
    torch.manual_seed(7)
    first, second = torch.nn.Linear(12, 9), torch.nn.Linear(9, 5)
    with torch.no_grad():
        first.weight.mul_(2.5)
        second.weight.mul_(2.0)
    net = torch.nn.Sequential(
        first,
        _leaky(9, 0.8, np.linspace(0.5, 1.0, 9)),
        second,
        _leaky(5, 0.6, np.linspace(0.3, 0.6, 5), output=True),
    )
    graph = export_nir.export_to_nir(net, torch.zeros(1, 12), ignore_dims=[0])
    nir.write(tmp_path / "leaky.nir", graph)
    spec = read_nir(tmp_path / "leaky.nir", dt=SNNTORCH_DT, discretisation="euler")
    assert [layer.kind for layer in spec.layers] == ["snu_dense", "snu_dense"]
    inputs = (np.random.default_rng(1).random((64, 50, 12)) < 0.3).astype(np.float64)
    ours = simulate(spec, inputs)
    theirs = _run_sequential(net, inputs)
    hidden, output = ours.outputs["1"], ours.outputs["3"]
    assert 0.05 < hidden.mean() < 0.9
    assert 0.05 < output.mean() < 0.9
    np.testing.assert_array_equal(hidden, theirs[0])
    np.testing.assert_array_equal(output, theirs[1])


def _rleaky_run(reset_delay: bool) -> tuple[np.ndarray, np.ndarray]:
    """Export ``Linear -> RLeaky``; return snubridge's and snnTorch's spikes."""
    torch.manual_seed(5)
    feed = torch.nn.Linear(6, 7)
    recurrent = snn.RLeaky(
        beta=0.85,
        linear_features=7,
        threshold=0.6,
        reset_mechanism="zero",
        reset_delay=reset_delay,
        init_hidden=True,
    )
    with torch.no_grad():
        feed.weight.mul_(3.0)
        recurrent.recurrent.weight.mul_(2.0)
    net = torch.nn.Sequential(feed, recurrent)
    graph = export_nir.export_to_nir(net, torch.zeros(1, 6), ignore_dims=[0])
    spec = read_nir(graph, dt=SNNTORCH_DT, discretisation="euler")
    assert [layer.kind for layer in spec.layers] == ["snu_recurrent"]
    inputs = (np.random.default_rng(2).random((16, 40, 6)) < 0.4).astype(np.float64)
    ours = simulate(spec, inputs).outputs[spec.layers[0].name]
    return ours, _run_sequential(net, inputs)[0]


def test_snntorch_rleaky_export_agrees_without_reset_delay():
    ours, theirs = _rleaky_run(reset_delay=False)
    assert 0.05 < ours.mean() < 0.9
    np.testing.assert_array_equal(ours, theirs)


def test_snntorch_rleaky_reset_delay_differs():
    # With reset_delay=True, RLeaky's zero reset also drops the input of the
    # step after a spike, which a NIR LIF keeps.
    ours, theirs = _rleaky_run(reset_delay=True)
    assert np.count_nonzero(ours != theirs) > 0


def test_snntorch_conv_export_agrees(tmp_path):
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    dense = torch.nn.Linear(90, 4)
    with torch.no_grad():
        conv.weight.mul_(2.0)
        dense.weight.mul_(3.0)
    shape = (3, 6, 5)
    conv_neurons = snn.Leaky(
        beta=torch.full(shape, 0.8),
        threshold=torch.full(shape, 0.6),
        reset_mechanism="zero",
        init_hidden=True,
    )
    net = torch.nn.Sequential(
        conv,
        conv_neurons,
        torch.nn.Flatten(),
        dense,
        _leaky(4, 0.7, [0.4, 0.5, 0.6, 0.7], output=True),
    )
    graph = export_nir.export_to_nir(net, torch.zeros(1, 2, 6, 5), ignore_dims=[0])
    nir.write(tmp_path / "conv.nir", graph)
    spec = read_nir(tmp_path / "conv.nir", dt=SNNTORCH_DT, discretisation="euler")
    assert [layer.kind for layer in spec.layers] == [
        "snu_conv2d",
        "flatten",
        "snu_dense",
    ]
    assert spec.input_shape == (6, 5, 2)
    inputs_chw = (np.random.default_rng(0).random((8, 20, 2, 6, 5)) < 0.4).astype(
        np.float64
    )
    ours = simulate(spec, np.moveaxis(inputs_chw, 2, -1))
    theirs = _run_sequential(net, inputs_chw)
    conv_spikes = np.moveaxis(ours.outputs["1"], -1, 2)
    assert 0.05 < conv_spikes.mean() < 0.9
    np.testing.assert_array_equal(conv_spikes, theirs[0])
    assert 0.05 < ours.outputs["4"].mean() < 0.9
    np.testing.assert_array_equal(ours.outputs["4"], theirs[1])


def _uniform_threshold_spec(rng: np.random.Generator) -> NetworkSpec:
    """Conv, flatten and dense: snnTorch's importer needs one threshold per layer."""
    layers = [
        LayerSpec(
            "conv",
            "snu_conv2d",
            kernel=rng.normal(0.0, 0.7, (3, 3, 2, 3)),
            bias=rng.normal(0.0, 0.1, 3),
            threshold=np.full(3, 0.7),
            decay=0.8,
            activation="identity",
            padding="same",
            input_shape=(6, 5, 2),
        ),
        LayerSpec("flat", "flatten", input_shape=(6, 5, 3)),
        LayerSpec(
            "dense",
            "snu_dense",
            kernel=rng.normal(0.0, 0.5, (90, 4)),
            threshold=np.full(4, 0.6),
            decay=0.7,
            activation="identity",
            input_shape=(90,),
        ),
    ]
    return NetworkSpec(layers=layers, input_shape=(6, 5, 2), dt=SNNTORCH_DT).validate()


def test_our_conv_export_runs_in_snntorch():
    rng = np.random.default_rng(3)
    spec = _uniform_threshold_spec(rng)
    graph = to_nir_graph(spec, discretisation="euler")
    inputs = (rng.random((4, 12, 6, 5, 2)) < 0.4).astype(np.float64)
    ours = simulate(spec, inputs)
    # snnTorch maps NIR's batch-free Flatten(start_dim=0) to torch's
    # Flatten(0), which would merge the batch axis, so each sample runs alone.
    theirs = np.zeros_like(ours.outputs["dense"])
    frames = torch.tensor(np.moveaxis(inputs, -1, 2), dtype=torch.float32)
    with torch.no_grad():
        for sample in range(inputs.shape[0]):
            net = import_nir.import_from_nir(graph)
            for step in range(inputs.shape[1]):
                out, _ = net(frames[sample, step])
                theirs[sample, step] = out.numpy()
    assert 0.05 < ours.outputs["dense"].mean() < 0.9
    np.testing.assert_array_equal(ours.outputs["dense"], theirs)

"""Brian2 export: spike-for-spike identity with the numpy SNU reference.

References are independent of the exporter: the closed-form solution of a
leaky integrator driven every step, rasters written by hand from the
documented schedule, and :func:`snubridge.reference.simulate`.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from snubridge.converters import brian2_export
from snubridge.converters.brian2_export import (
    ConvertedLayer,
    FlattenConverter,
    run_brian2,
    to_brian2,
)
from snubridge.converters.registry import LayerConverter
from snubridge.errors import ConversionError, SnubridgeError
from snubridge.params_file import save_params
from snubridge.reference import simulate
from snubridge.spec import LayerSpec, NetworkSpec, decay_from_tau, tau_from_decay

DT = 1e-3
EPS = np.finfo(np.float64).eps


def assert_same_spikes(result, reference) -> None:
    for name, spikes in reference.spikes.items():
        assert name in result.spikes, name
        np.testing.assert_array_equal(result.spikes[name], spikes, err_msg=name)


def assert_close_states(result, reference, factor: float = 64.0) -> None:
    for name, expected in reference.states.items():
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(
            result.states[name],
            expected,
            rtol=0,
            atol=factor * EPS * scale,
            err_msg=name,
        )


def dense(name, n_in, n_out, rng, **fields) -> LayerSpec:
    fields.setdefault("threshold", rng.uniform(0.4, 1.2, n_out))
    fields.setdefault("decay", float(rng.uniform(0.5, 0.95)))
    fields.setdefault("kernel", rng.normal(0.0, 0.6, (n_in, n_out)))
    fields.setdefault("bias", rng.normal(0.0, 0.1, n_out))
    return LayerSpec(name, "snu_dense", input_shape=(n_in,), **fields)


def bernoulli(rng, shape, rate=0.3) -> np.ndarray:
    return (rng.random(shape) < rate).astype(np.float64)


# Single neuron against the closed-form leaky integrator ----------------------------


@pytest.mark.parametrize("mode", ["exact", "euler"])
def test_single_neuron_analytic_trace(mode):
    # Driven by weight w at every step and never firing, the membrane is the
    # geometric sum v_n = w (1 - l^(n+1)) / (1 - l), l the decay per step.
    tau, weight, steps = 4.7e-3, 0.3, 40
    layer = LayerSpec(
        "lif",
        "snu_dense",
        kernel=np.array([[weight]]),
        threshold=np.array([1e6]),
        decay=decay_from_tau(tau, DT, mode),
        decay_mode=mode,
        tau=tau,
        input_shape=(1,),
    )
    spec = NetworkSpec([layer], input_shape=(1,), dt=DT, precision="float64").validate()
    result = run_brian2(spec, np.ones((1, steps, 1)), record_states=True)
    leak = math.exp(-DT / tau) if mode == "exact" else 1.0 - DT / tau
    n = np.arange(steps)
    expected = weight * (1.0 - leak ** (n + 1)) / (1.0 - leak)
    np.testing.assert_allclose(result.states["lif"][0, :, 0], expected, rtol=1e-12)
    assert result.spikes["lif"].sum() == 0


@pytest.mark.parametrize("mode", ["exact", "euler"])
def test_single_neuron_analytic_spike_times(mode):
    # With threshold theta the first spike comes at the first n with
    # v_n > theta, n* = floor(ln(1 - theta (1 - l) / w) / ln(l)); the reset
    # restarts the sum, so the neuron then fires every n* + 1 steps.
    tau, weight, theta, steps = 9.3e-3, 0.37, 1.6, 60
    leak = math.exp(-DT / tau) if mode == "exact" else 1.0 - DT / tau
    first = math.floor(math.log(1.0 - theta * (1.0 - leak) / weight) / math.log(leak))
    # The crossing is not within rounding of the threshold.
    margin = weight * (1 - leak ** (first + 1)) / (1 - leak) - theta
    assert margin > 1e-6
    layer = LayerSpec(
        "lif",
        "snu_dense",
        kernel=np.array([[weight]]),
        threshold=np.array([theta]),
        decay=decay_from_tau(tau, DT, mode),
        decay_mode=mode,
        tau=tau,
        input_shape=(1,),
    )
    spec = NetworkSpec([layer], input_shape=(1,), dt=DT, precision="float64").validate()
    result = run_brian2(spec, np.ones((1, steps, 1)), record_states=True)
    spike_steps = np.flatnonzero(result.spikes["lif"][0, :, 0])
    expected_steps = np.arange(first, steps, first + 1)
    np.testing.assert_array_equal(spike_steps, expected_steps)
    phase = np.arange(steps) % (first + 1)
    expected_trace = weight * (1.0 - leak ** (phase + 1)) / (1.0 - leak)
    np.testing.assert_allclose(
        result.states["lif"][0, :, 0], expected_trace, rtol=1e-12
    )


@pytest.mark.parametrize("mode", ["exact", "euler"])
def test_decay_tau_round_trip(mode):
    for decay in (0.5, 0.75, 0.9, 0.99, 0.3, 1.0 - 2.0**-20):
        tau = tau_from_decay(decay, DT, mode)
        again = decay_from_tau(tau, DT, mode)
        assert abs(again - decay) <= 2 * EPS, (decay, again)
    assert tau_from_decay(1.0, DT, mode) == math.inf
    assert decay_from_tau(math.inf, DT, mode) == 1.0


# Known scheduling case, expected rasters written by hand ----------------------------


def test_schedule_hand_written_case():
    # Input spikes at steps 0, 1, 2 into neuron A (w = 1.5, theta = 1, l = 0.5):
    # A crosses with its single input, so it fires in the same steps 0, 1, 2
    # (no synaptic latency), and each reset leaves the next step's input intact.
    # A drives B (w = 0.75, theta = 1, l = 0.5): 0.75, 1.125 (fires), then
    # after the reset 0.75, 0.375, 0.1875, 0.09375.
    layer_a = LayerSpec(
        "a",
        "snu_dense",
        kernel=np.array([[1.5]]),
        threshold=np.array([1.0]),
        decay=0.5,
        input_shape=(1,),
    )
    layer_b = LayerSpec(
        "b",
        "snu_dense",
        kernel=np.array([[0.75]]),
        threshold=np.array([1.0]),
        decay=0.5,
        input_shape=(1,),
    )
    spec = NetworkSpec([layer_a, layer_b], (1,), dt=DT, precision="float64").validate()
    inputs = np.zeros((1, 6, 1))
    inputs[0, [0, 1, 2], 0] = 1.0

    result = run_brian2(spec, inputs, record_states=True)

    np.testing.assert_array_equal(result.spikes["a"][0, :, 0], [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(result.states["a"][0, :, 0], [1.5, 1.5, 1.5, 0, 0, 0])
    np.testing.assert_array_equal(result.spikes["b"][0, :, 0], [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(
        result.states["b"][0, :, 0], [0.75, 1.125, 0.75, 0.375, 0.1875, 0.09375]
    )


def test_schedule_recurrent_one_step_later():
    # One input spike at step 0 (w = 1.5) fires the neuron at step 0; its
    # self-connection H = 0.75 arrives at step 1 only: 0.75, then it decays.
    layer = LayerSpec(
        "r",
        "snu_recurrent",
        kernel=np.array([[1.5]]),
        recurrent_kernel=np.array([[0.75]]),
        threshold=np.array([1.0]),
        decay=0.5,
        input_shape=(1,),
    )
    spec = NetworkSpec([layer], (1,), dt=DT, precision="float64").validate()
    inputs = np.zeros((1, 4, 1))
    inputs[0, 0, 0] = 1.0
    result = run_brian2(spec, inputs, record_states=True)
    np.testing.assert_array_equal(result.spikes["r"][0, :, 0], [1, 0, 0, 0])
    np.testing.assert_array_equal(
        result.states["r"][0, :, 0], [1.5, 0.75, 0.375, 0.1875]
    )


# Random networks against snubridge.reference.simulate ------------------------------


def test_dense_three_layers_match_reference():
    rng = np.random.default_rng(11)
    layers = [
        dense("d0", 24, 20, rng),
        dense("d1", 20, 16, rng, decay_mode="exact", tau=3.1e-3),
        dense("d2", 16, 12, rng, decay_mode="euler", tau=6.0e-3, activation="identity"),
        LayerSpec(
            "out",
            "readout",
            kernel=rng.normal(0, 0.5, (12, 5)),
            bias=rng.normal(0, 0.1, 5),
            readout_mode="per_step",
            input_shape=(12,),
        ),
    ]
    for layer in layers[1:3]:
        layer.decay = decay_from_tau(layer.tau, DT, layer.decay_mode)
    spec = NetworkSpec(layers, (24,), dt=DT, precision="float64").validate()
    inputs = bernoulli(rng, (5, 40, 24))
    reference = simulate(spec, inputs)
    result = run_brian2(spec, inputs, record_states=True)
    for name in ("d0", "d1", "d2"):
        assert reference.spikes[name].sum() > 20, name
        assert reference.spikes[name].mean() < 0.8, name
    assert_same_spikes(result, reference)
    assert_close_states(result, reference)
    assert result.outputs["out"].shape == reference.outputs["out"].shape


def test_recurrent_matches_reference():
    rng = np.random.default_rng(12)
    recurrent = LayerSpec(
        "rec",
        "snu_recurrent",
        kernel=rng.normal(0, 0.6, (15, 18)),
        recurrent_kernel=rng.normal(0, 0.5, (18, 18)),
        bias=rng.normal(0, 0.1, 18),
        threshold=rng.uniform(0.4, 1.0, 18),
        decay=0.85,
        input_shape=(15,),
    )
    readout = LayerSpec(
        "out",
        "readout",
        kernel=rng.normal(0, 0.5, (18, 4)),
        readout_mode="leaky",
        decay=0.8,
        readout_activation="sigmoid",
        input_shape=(18,),
    )
    spec = NetworkSpec(
        [dense("in", 10, 15, rng), recurrent, readout],
        (10,),
        dt=DT,
        precision="float64",
    ).validate()
    inputs = bernoulli(rng, (4, 50, 10))
    reference = simulate(spec, inputs)
    result = run_brian2(spec, inputs, record_states=True)
    assert reference.spikes["rec"].sum() > 50
    assert_same_spikes(result, reference)
    assert_close_states(result, reference)
    np.testing.assert_allclose(
        result.outputs["out"], reference.outputs["out"], rtol=0, atol=1e-13
    )


def test_recurrent_kernel_not_transposed():
    # H[i, j] is the weight from neuron i to neuron j, so neuron 1 fires at
    # step 1. With H transposed, no neuron would fire at step 1.
    layer = LayerSpec(
        "rec",
        "snu_recurrent",
        kernel=np.array([[2.0, 0.0]]),
        recurrent_kernel=np.array([[0.0, 1.5], [0.0, 0.0]]),
        threshold=np.array([1.0, 1.0]),
        decay=0.5,
        input_shape=(1,),
    )
    spec = NetworkSpec([layer], (1,), dt=DT, precision="float64").validate()
    inputs = np.zeros((1, 3, 1))
    inputs[0, 0, 0] = 1.0
    result = run_brian2(spec, inputs)
    np.testing.assert_array_equal(result.spikes["rec"][0], [[1, 0], [0, 1], [0, 0]])


@pytest.mark.parametrize(
    ("strides", "padding"), [((1, 1), "valid"), ((2, 1), "same"), ((1, 3), "same")]
)
def test_convolution_matches_reference(strides, padding):
    rng = np.random.default_rng(13)
    kernel = rng.normal(0, 0.7, (3, 2, 2, 4))  # asymmetric in height and width
    conv = LayerSpec(
        "conv",
        "snu_conv2d",
        kernel=kernel,
        threshold=rng.uniform(0.3, 0.9, 4),
        bias=rng.normal(0, 0.1, 4),
        decay=0.7,
        strides=strides,
        padding=padding,
        input_shape=(7, 8, 2),
    )
    conv2 = LayerSpec(
        "conv2",
        "snu_conv2d",
        kernel=rng.normal(0, 0.7, (2, 3, 4, 3)),
        threshold=rng.uniform(0.3, 0.9, 3),
        decay=0.6,
        padding="same",
        input_shape=conv.output_shape,
    )
    flatten = LayerSpec("flat", "flatten", input_shape=conv2.output_shape)
    n_flat = int(np.prod(conv2.output_shape))
    readout = LayerSpec(
        "out",
        "readout",
        kernel=rng.normal(0, 0.3, (n_flat, 6)),
        readout_mode="mean",
        readout_activation="softmax",
        input_shape=(n_flat,),
    )
    spec = NetworkSpec(
        [conv, conv2, flatten, readout], (7, 8, 2), dt=DT, precision="float64"
    ).validate()
    inputs = bernoulli(rng, (3, 25, 7, 8, 2), rate=0.4)
    reference = simulate(spec, inputs)
    result = run_brian2(spec, inputs, record_states=True)
    assert reference.spikes["conv"].sum() > 30
    assert reference.spikes["conv2"].sum() > 30
    assert_same_spikes(result, reference)
    assert_close_states(result, reference)
    assert result.outputs["flat"].shape == reference.outputs["flat"].shape
    np.testing.assert_allclose(
        result.outputs["out"], reference.outputs["out"], rtol=0, atol=1e-13
    )


def test_convolution_kernel_orientation():
    # A single tap at kernel[0, 1] (row 0, column 1) maps input (r, c) to
    # output (r, c - 1) under 'valid' padding. A transposed or flipped kernel
    # would make other neurons fire.
    kernel = np.zeros((2, 2, 1, 1))
    kernel[0, 1, 0, 0] = 2.0
    conv = LayerSpec(
        "conv",
        "snu_conv2d",
        kernel=kernel,
        threshold=np.array([1.0]),
        decay=0.5,
        input_shape=(3, 3, 1),
    )
    spec = NetworkSpec([conv], (3, 3, 1), dt=DT, precision="float64").validate()
    inputs = np.zeros((1, 1, 3, 3, 1))
    inputs[0, 0, 1, 2, 0] = 1.0
    spikes = run_brian2(spec, inputs).outputs["conv"][0, 0, :, :, 0]
    np.testing.assert_array_equal(spikes, [[0, 0], [0, 1]])


def test_exact_threshold_does_not_fire():
    # Dyadic weights, biases and decays make every partial sum exact in
    # binary floating point, so many states land exactly on the threshold,
    # where "strictly above" must not fire, on both sides and in any order.
    rng = np.random.default_rng(14)
    kernel1 = rng.integers(-2, 5, (12, 10)) / 4.0
    kernel2 = rng.integers(-2, 5, (10, 8)) / 4.0
    layer1 = LayerSpec(
        "q1",
        "snu_dense",
        kernel=kernel1,
        threshold=np.full(10, 1.0),
        bias=rng.integers(-1, 2, 10) / 8.0,
        decay=0.5,
        input_shape=(12,),
    )
    layer2 = LayerSpec(
        "q2",
        "snu_recurrent",
        kernel=kernel2,
        recurrent_kernel=rng.integers(-2, 3, (8, 8)) / 4.0,
        threshold=np.full(8, 0.75),
        decay=0.75,
        input_shape=(10,),
    )
    spec = NetworkSpec([layer1, layer2], (12,), dt=DT, precision="float64").validate()
    inputs = bernoulli(rng, (6, 30, 12), rate=0.25)
    reference = simulate(spec, inputs)
    result = run_brian2(spec, inputs, record_states=True)
    at_threshold = (reference.states["q1"] == 1.0).sum()
    at_threshold += (reference.states["q2"] == 0.75).sum()
    assert at_threshold > 20
    assert reference.spikes["q1"].sum() > 20
    assert_same_spikes(result, reference)
    for name in ("q1", "q2"):
        np.testing.assert_array_equal(result.states[name], reference.states[name])


def test_silence_and_saturation():
    rng = np.random.default_rng(15)
    quiet = dense("quiet", 6, 5, rng, bias=np.zeros(5))
    driven = LayerSpec(
        "driven",
        "snu_dense",
        kernel=np.full((5, 4), 3.0),
        bias=np.array([0.5, 0.0, 0.25, -0.25]),
        threshold=np.full(4, 0.4),
        decay=0.9,
        input_shape=(5,),
    )
    spec = NetworkSpec([quiet, driven], (6,), dt=DT, precision="float64").validate()
    silent = np.zeros((2, 10, 6))
    result = run_brian2(spec, silent)
    reference = simulate(spec, silent)
    assert result.spikes["quiet"].sum() == 0
    # Bias alone drives unit 0 every step (0.5 > 0.4) and unit 2 every other.
    np.testing.assert_array_equal(result.spikes["driven"][0, :4, 0], [1, 1, 1, 1])
    np.testing.assert_array_equal(result.spikes["driven"][0, :4, 2], [0, 1, 0, 1])
    assert_same_spikes(result, reference)
    saturating = LayerSpec(
        "sat",
        "snu_dense",
        kernel=np.full((6, 5), 2.0),
        threshold=np.full(5, 0.5),
        decay=0.9,
        input_shape=(6,),
    )
    spec = NetworkSpec([saturating], (6,), dt=DT, precision="float64").validate()
    full = np.ones((2, 10, 6))
    result = run_brian2(spec, full)
    assert result.spikes["sat"].min() == 1.0
    assert_same_spikes(result, simulate(spec, full))


@pytest.mark.parametrize("mode", ["per_step", "mean", "leaky", "leaky_last"])
def test_readout_modes_match_reference(mode):
    rng = np.random.default_rng(16)
    readout = LayerSpec(
        "out",
        "readout",
        kernel=rng.normal(0, 0.5, (9, 3)),
        bias=rng.normal(0, 0.2, 3),
        readout_mode=mode,
        decay=0.875,
        readout_activation="softmax",
        input_shape=(9,),
    )
    spec = NetworkSpec(
        [dense("hid", 7, 9, rng), readout], (7,), dt=DT, precision="float64"
    ).validate()
    inputs = bernoulli(rng, (3, 12, 7))
    reference = simulate(spec, inputs)
    result = run_brian2(spec, inputs)
    assert result.outputs["out"].shape == reference.outputs["out"].shape
    np.testing.assert_allclose(
        result.outputs["out"], reference.outputs["out"], rtol=0, atol=1e-13
    )
    np.testing.assert_allclose(
        result.states["out"], reference.states["out"], rtol=0, atol=1e-13
    )


def test_network_object_reruns():
    rng = np.random.default_rng(17)
    spec = NetworkSpec(
        [dense("a", 8, 6, rng), dense("b", 6, 5, rng)], (8,), dt=DT, precision="float64"
    ).validate()
    network = to_brian2(spec, 3, record_states=True)
    assert network.network is not None
    assert set(network.monitors) == {"a", "b"}
    for _ in range(2):
        inputs = bernoulli(rng, (3, 15, 8), rate=0.5)
        result = network.run(inputs)
        reference = simulate(spec, inputs)
        assert_same_spikes(result, reference)
        assert_close_states(result, reference)
        np.testing.assert_array_equal(network.spike_raster("b"), reference.spikes["b"])


def test_params_file_source(tmp_path):
    rng = np.random.default_rng(18)
    spec = NetworkSpec([dense("a", 5, 4, rng)], (5,), dt=DT, precision="float64")
    path = save_params(spec, tmp_path / "net.h5")
    inputs = bernoulli(rng, (2, 10, 5), rate=0.6)
    result = run_brian2(path, inputs)
    np.testing.assert_array_equal(
        result.spikes["a"], simulate(spec, inputs).spikes["a"]
    )


# Refusals and guards -------------------------------------------------------------


def test_ssnu_layer_rejected():
    rng = np.random.default_rng(19)
    spec = NetworkSpec(
        [dense("soft", 4, 3, rng, output="sigmoid")], (4,), dt=DT
    ).validate()
    with pytest.raises(ConversionError, match="sSNU"):
        to_brian2(spec, 1)


def test_lateral_inhibition_rejected():
    rng = np.random.default_rng(20)
    spec = NetworkSpec(
        [dense("wta", 4, 3, rng, lateral_inhibition=True)], (4,), dt=DT
    ).validate()
    with pytest.raises(ConversionError, match="lateral inhibition"):
        to_brian2(spec, 1)


def test_non_binary_inputs_rejected():
    rng = np.random.default_rng(21)
    spec = NetworkSpec([dense("a", 4, 3, rng)], (4,), dt=DT).validate()
    inputs = np.zeros((1, 5, 4))
    inputs[0, 2, 1] = 0.5
    with pytest.raises(ConversionError, match="0 and 1"):
        run_brian2(spec, inputs)


@pytest.mark.parametrize(
    "name", ["x = 0\nimport os", "__import__('os').system('true')", "v; v = 1", ""]
)
def test_crafted_layer_name_rejected(name):
    rng = np.random.default_rng(22)
    layer = dense("a", 4, 3, rng)
    layer.name = name
    spec = NetworkSpec([layer], (4,), dt=DT)
    with pytest.raises(SnubridgeError, match="Invalid layer name"):
        to_brian2(spec, 1)


def test_valid_odd_name_not_used_by_brian2():
    # Names that pass the spec's character set still never name Brian2 objects.
    rng = np.random.default_rng(23)
    spec = NetworkSpec(
        [dense("v.theta-1", 4, 3, rng), dense("__init__", 3, 2, rng)], (4,), dt=DT
    ).validate()
    network = to_brian2(spec, 2)
    names = {obj.name for obj in network.network.objects}
    assert "layer_0" in names
    assert "layer_1" in names
    assert not any("theta-1" in name or "__init__" in name for name in names)


def test_exclude_tail_and_middle():
    rng = np.random.default_rng(24)
    readout = LayerSpec(
        "out", "readout", kernel=rng.normal(0, 1, (3, 2)), input_shape=(3,)
    )
    spec = NetworkSpec(
        [dense("a", 4, 5, rng), dense("b", 5, 3, rng), readout], (4,), dt=DT
    ).validate()
    network = to_brian2(spec, 1, exclude=["out"])
    assert [layer.name for layer in network.layers] == ["a", "b"]
    with pytest.raises(ConversionError, match="only a tail"):
        to_brian2(spec, 1, exclude=["a"])
    with pytest.raises(ConversionError, match="do not exist"):
        to_brian2(spec, 1, exclude=["nope"])


class CountingFlatten(FlattenConverter):
    calls = 0

    def convert(self, layer, index, context) -> ConvertedLayer:
        type(self).calls += 1
        return super().convert(layer, index, context)


def test_mapping_and_layer_hook():
    rng = np.random.default_rng(25)
    conv = LayerSpec(
        "conv",
        "snu_conv2d",
        kernel=rng.normal(0, 1, (2, 2, 1, 2)),
        threshold=np.full(2, 0.5),
        input_shape=(3, 3, 1),
    )
    flat = LayerSpec("flat", "flatten", input_shape=(2, 2, 2))
    spec = NetworkSpec([conv, flat, dense("d", 8, 3, rng)], (3, 3, 1), dt=DT).validate()
    CountingFlatten.calls = 0
    to_brian2(spec, 1, mapping={" Flatten ": CountingFlatten})
    assert CountingFlatten.calls == 1
    seen = []

    def hook(layer, index, converter):
        seen.append((layer.name, index, type(converter).__name__))
        return CountingFlatten() if layer.kind == "flatten" else None

    to_brian2(spec, 1, layer_hook=hook)
    assert CountingFlatten.calls == 2
    assert seen == [
        ("conv", 0, "SNUConverter"),
        ("flat", 1, "FlattenConverter"),
        ("d", 2, "SNUConverter"),
    ]
    with pytest.raises(ConversionError, match="layer_hook returned"):
        to_brian2(spec, 1, layer_hook=lambda layer, index, converter: "nope")


def test_converter_must_return_converted_layer():
    class Broken(LayerConverter):
        def convert(self, layer, index, context):
            return None

    rng = np.random.default_rng(26)
    spec = NetworkSpec([dense("a", 3, 2, rng)], (3,), dt=DT).validate()
    with pytest.raises(ConversionError, match="expected a ConvertedLayer"):
        to_brian2(spec, 1, mapping={"snu_dense": Broken()})


def test_unavailable_target_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(brian2_export, "_compiler_available", lambda: (False, "no g++"))
    monkeypatch.setattr(brian2_export, "_warned_targets", set())
    with caplog.at_level(logging.WARNING, logger=brian2_export.__name__):
        assert brian2_export.resolve_target("cpp_standalone") == "numpy"
        assert brian2_export.resolve_target("cpp_standalone") == "numpy"
    warnings = [r for r in caplog.records if r.name == brian2_export.__name__]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    with pytest.raises(ConversionError, match="Unknown Brian2 target"):
        brian2_export.resolve_target("gpu")


def test_missing_gpu_device_falls_back(monkeypatch, caplog):
    monkeypatch.setattr(brian2_export, "_warned_targets", set())
    monkeypatch.setattr(
        brian2_export, "_device_package_available", lambda name: (False, "absent")
    )
    with caplog.at_level(logging.WARNING, logger=brian2_export.__name__):
        assert brian2_export.resolve_target("cuda_standalone") == "numpy"
        assert brian2_export.resolve_target("genn") == "numpy"
    messages = [r.getMessage() for r in caplog.records]
    assert any("cuda_standalone" in message for message in messages)
    assert any("genn" in message for message in messages)


def test_invalid_thread_count_rejected():
    spec, _ = _target_spec()
    with pytest.raises(ConversionError, match="threads must be a positive integer"):
        to_brian2(spec, 1, threads=0)


# Code-generation targets ------------------------------------------------------


def _target_spec():
    rng = np.random.default_rng(27)
    recurrent = LayerSpec(
        "rec",
        "snu_recurrent",
        kernel=rng.normal(0, 0.6, (8, 6)),
        recurrent_kernel=rng.normal(0, 0.5, (6, 6)),
        threshold=rng.uniform(0.4, 1, 6),
        decay=0.8,
        decay_mode="exact",
        tau=-DT / math.log(0.8),
        input_shape=(8,),
    )
    readout = LayerSpec(
        "out",
        "readout",
        kernel=rng.normal(0, 0.5, (6, 3)),
        readout_mode="leaky",
        decay=0.9,
        input_shape=(6,),
    )
    spec = NetworkSpec(
        [dense("a", 10, 8, rng), recurrent, readout], (10,), dt=DT, precision="float64"
    ).validate()
    return spec, bernoulli(rng, (3, 20, 10), rate=0.4)


def _assert_same_as_numpy(target):
    spec, inputs = _target_spec()
    expected = run_brian2(spec, inputs, record_states=True)
    result = run_brian2(spec, inputs, target=target, record_states=True)
    assert expected.spikes["rec"].sum() > 10
    for name in ("a", "rec"):
        np.testing.assert_array_equal(result.spikes[name], expected.spikes[name])
    assert_close_states(result, expected)
    np.testing.assert_allclose(
        result.outputs["out"], expected.outputs["out"], rtol=0, atol=1e-13
    )


# Both compile C code: a cold Cython cache took 140 s and a standalone build 80 s
# on the 2-core development machine, so they run with the slow tests.


@pytest.mark.slow
def test_cython_matches_numpy():
    available, reason = brian2_export._cython_available()
    if not available:
        pytest.skip(f"Cython target unavailable: {reason}")
    _assert_same_as_numpy("cython")


@pytest.mark.slow
@pytest.mark.standalone
def test_cpp_standalone_matches_numpy():
    available, reason = brian2_export._compiler_available()
    if not available:
        pytest.skip(f"cpp_standalone needs a C++ compiler: {reason}")
    import brian2

    _assert_same_as_numpy("cpp_standalone")
    assert type(brian2.get_device()).__name__ == "RuntimeDevice"


@pytest.mark.slow
@pytest.mark.standalone
def test_cpp_standalone_openmp_matches_numpy():
    available, reason = brian2_export._compiler_available()
    if not available:
        pytest.skip(f"cpp_standalone needs a C++ compiler: {reason}")
    import brian2

    spec, inputs = _target_spec()
    expected = run_brian2(spec, inputs)
    result = run_brian2(spec, inputs, target="cpp_standalone", threads=2)
    for name in ("a", "rec"):
        np.testing.assert_array_equal(result.spikes[name], expected.spikes[name])
    assert brian2.prefs.devices.cpp_standalone.openmp_threads == 0


def test_batches_through_one_network():
    rng = np.random.default_rng(28)
    recurrent = LayerSpec(
        "rec",
        "snu_recurrent",
        kernel=rng.normal(0, 0.6, (9, 6)),
        recurrent_kernel=rng.normal(0, 0.5, (6, 6)),
        threshold=rng.uniform(0.4, 1, 6),
        decay=0.8,
        input_shape=(9,),
    )
    readout = LayerSpec(
        "out",
        "readout",
        kernel=rng.normal(0, 0.5, (6, 3)),
        readout_mode="leaky_last",
        decay=0.9,
        input_shape=(6,),
    )
    spec = NetworkSpec(
        [dense("a", 7, 9, rng), recurrent, readout], (7,), dt=DT, precision="float64"
    ).validate()
    inputs = bernoulli(rng, (7, 15, 7), rate=0.4)
    reference = simulate(spec, inputs)
    result = run_brian2(spec, inputs, batch_size=3, record_states=True)
    assert result.spikes["rec"].shape == (7, 15, 6)
    assert_same_spikes(result, reference)
    assert_close_states(result, reference)
    np.testing.assert_allclose(
        result.outputs["out"], reference.outputs["out"], rtol=0, atol=1e-13
    )
    with pytest.raises(ConversionError, match="batch_size"):
        run_brian2(spec, inputs, batch_size=0)


def test_float32_differences_report_margins():
    # Weight 0.1 is not a dyadic number: ten float32 additions of 0.1 reach
    # 1.0000001 while float64 gives 0.9999999999999999, so with theta = 1 only
    # float32 fires at step 9 and the float64 margin is below 1e-15.
    layer = LayerSpec(
        "acc",
        "snu_dense",
        kernel=np.array([[0.1]]),
        threshold=np.array([1.0]),
        decay=1.0,
        input_shape=(1,),
    )
    spec = NetworkSpec([layer], (1,), dt=DT, precision="float32").validate()
    report = brian2_export.float32_differences(spec, np.ones((1, 12, 1)))
    assert report["acc"]["count"] >= 1
    np.testing.assert_array_equal(report["acc"]["positions"][0], [0, 9, 0])
    assert abs(report["acc"]["margins"][0]) < 1e-15
    brian2_spikes = run_brian2(spec, np.ones((1, 12, 1))).spikes["acc"]
    assert brian2_spikes[0, 9, 0] == 0.0


def test_keras_model_file_source(tmp_path):
    keras_io = pytest.importorskip("snubridge.keras_io")
    rng = np.random.default_rng(29)
    readout = LayerSpec(
        "out", "readout", kernel=rng.normal(0, 1, (5, 2)), input_shape=(5,)
    )
    spec = NetworkSpec(
        [dense("hid", 4, 5, rng), readout], (4,), dt=DT, precision="float64"
    ).validate()
    path = keras_io.save_model(keras_io.model_from_spec(spec), tmp_path / "m.keras")
    inputs = bernoulli(rng, (2, 10, 4), rate=0.5)
    result = run_brian2(path, inputs)
    np.testing.assert_array_equal(
        result.spikes["hid"], simulate(spec, inputs).spikes["hid"]
    )

"""Keras SNU layers against hand-computed traces and the numpy reference."""

from __future__ import annotations

import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from snubridge import keras_io, layers
from snubridge.errors import SpecError
from snubridge.layers.pseudo import spike
from snubridge.reference import simulate
from snubridge.spec import LayerSpec, NetworkSpec


def _dense_layer(**kwargs):
    layer = layers.SNUDense(1, dtype="float64", **kwargs)
    layer.build((None, 6, 1))
    layer.kernel.assign([[1.0]])
    return layer


def test_single_neuron_hand_trace():
    # Input currents 0.6 for 6 steps, decay 0.5, threshold 1 (strictly above fires):
    # s1 = 0.6; s2 = 0.6 + 0.3 = 0.9; s3 = 0.6 + 0.45 = 1.05 -> spike;
    # s4 = 0.6 (reset); s5 = 0.9; s6 = 1.05 -> spike.
    layer = _dense_layer(decay=0.5)
    inputs = np.full((1, 6, 1), 0.6)
    outputs, states = layer(inputs, return_states=True)
    np.testing.assert_allclose(
        states.numpy()[0, :, 0], [0.6, 0.9, 1.05, 0.6, 0.9, 1.05], rtol=0, atol=1e-15
    )
    assert outputs.numpy()[0, :, 0].tolist() == [0, 0, 1, 0, 0, 1]


def test_exact_threshold_does_not_fire():
    layer = _dense_layer(decay=0.5)
    inputs = np.zeros((1, 6, 1))
    inputs[0, 0, 0] = 1.0  # exactly theta = 1
    outputs = layer(inputs).numpy()
    assert outputs.sum() == 0


def test_relu_clips_membrane_and_identity_does_not():
    inputs = np.array([[-1.0], [0.5], [0.0], [0.0], [0.0], [0.0]])[None]
    relu = _dense_layer(decay=0.5, activation="relu")
    identity = _dense_layer(decay=0.5, activation="identity")
    _, relu_states = relu(inputs, return_states=True)
    _, identity_states = identity(inputs, return_states=True)
    np.testing.assert_allclose(relu_states.numpy()[0, :2, 0], [0.0, 0.5])
    np.testing.assert_allclose(identity_states.numpy()[0, :2, 0], [-1.0, 0.0])


def test_soft_snu_scales_state_by_one_minus_output():
    layer = layers.SSNUDense(1, decay=0.5, dtype="float64")
    layer.build((None, 2, 1))
    layer.kernel.assign([[1.0]])
    outputs, states = layer(np.full((1, 2, 1), 0.6), return_states=True)
    y1 = 1 / (1 + math.exp(-(0.6 - 1.0)))
    s2 = 0.6 + 0.5 * 0.6 * (1 - y1)
    np.testing.assert_allclose(states.numpy()[0, :, 0], [0.6, s2], atol=1e-15)
    np.testing.assert_allclose(outputs.numpy()[0, 1, 0], 1 / (1 + math.exp(1.0 - s2)))


@pytest.mark.parametrize(
    ("name", "slope", "formula"),
    [
        ("tanh", 1.0, lambda z, k: k * (1 - np.tanh(k * z) ** 2)),
        (
            "sigmoid",
            4.0,
            lambda z, k: k / (1 + np.exp(-k * z)) * (1 - 1 / (1 + np.exp(-k * z))),
        ),
        ("rectangle", 2.0, lambda z, k: np.where(np.abs(z) < 0.5 / k, k, 0.0)),
        ("straight_through", 1.0, lambda z, k: np.ones_like(z)),
    ],
)
def test_pseudo_derivative_formula(name, slope, formula):
    z = tf.constant(np.linspace(-1.3, 1.1, 25))
    with tf.GradientTape() as tape:
        tape.watch(z)
        y = spike(z, name, slope)
    gradient = tape.gradient(y, z).numpy()
    np.testing.assert_allclose(
        gradient, formula(z.numpy(), slope), rtol=1e-12, atol=1e-15
    )
    np.testing.assert_array_equal(y.numpy(), (z.numpy() > 0).astype(float))


def test_unknown_pseudo_derivative_rejected():
    with pytest.raises(SpecError, match="pseudo_derivative"):
        layers.SNUDense(3, pseudo_derivative="erf")


def test_decay_from_tau_exact_and_euler():
    exact = layers.SNUDense(2, tau=5e-3, dt=1e-3, decay_mode="exact")
    euler = layers.SNUDense(2, tau=5e-3, dt=1e-3, decay_mode="euler")
    assert exact.settings.decay == math.exp(-0.2)
    assert euler.settings.decay == pytest.approx(0.8, abs=1e-15)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"decay": 0.0},
        {"decay": 1.5},
        {"decay": float("nan")},
        {"tau": 5e-3, "dt": 1e-3},
        {"tau": 5e-3, "decay_mode": "exact"},
        {"tau": 5e-3, "dt": 1e-3, "decay_mode": "exact", "decay": 0.5},
        {"decay": 0.5, "decay_mode": "euler"},
    ],
)
def test_invalid_decay_arguments_rejected(kwargs):
    with pytest.raises(SpecError):
        layers.SNUDense(2, **kwargs)


def _copy_weights(source, target):
    for variable, other in zip(source.weights, target.weights, strict=True):
        assert variable.shape == other.shape
        other.assign(variable)


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("lateral", [False, True])
def test_sequence_layer_matches_cell(recurrent, lateral):
    rng = np.random.default_rng(7)
    inputs = tf.constant((rng.random((5, 12, 9)) < 0.4).astype("float64"))
    layer_class = layers.SNURecurrent if recurrent else layers.SNUDense
    fast = layer_class(
        6,
        decay=0.85,
        lateral_inhibition=lateral,
        dtype="float64",
        kernel_initializer=keras.initializers.RandomNormal(0.3, 0.6, seed=1),
    )
    cell = layers.SNUCell(
        6, recurrent=recurrent, decay=0.85, lateral_inhibition=lateral, dtype="float64"
    )
    rnn = keras.layers.RNN(cell, return_sequences=True, dtype="float64")
    fast.build(inputs.shape)
    rnn.build(inputs.shape)
    _copy_weights(fast, cell)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        fast_out = fast(inputs)
        cell_out = rnn(inputs)
        weights = tf.constant(rng.normal(size=(6,)))
        fast_loss = tf.reduce_sum(fast_out * weights)
        cell_loss = tf.reduce_sum(cell_out * weights)
    assert fast_out.numpy().sum() > 0
    np.testing.assert_array_equal(fast_out.numpy(), cell_out.numpy())
    for fast_var, cell_var in zip(
        fast.trainable_weights, cell.trainable_weights, strict=True
    ):
        fast_grad = tape.gradient(fast_loss, fast_var).numpy()
        cell_grad = tape.gradient(cell_loss, cell_var).numpy()
        assert np.abs(fast_grad).sum() > 0
        np.testing.assert_allclose(fast_grad, cell_grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        tape.gradient(fast_loss, inputs).numpy(),
        tape.gradient(cell_loss, inputs).numpy(),
        rtol=1e-12,
        atol=1e-12,
    )


def test_lateral_inhibition_is_per_sample():
    rng = np.random.default_rng(3)
    layer = layers.SNUDense(
        8,
        decay=0.9,
        lateral_inhibition=True,
        dtype="float64",
        kernel_initializer=keras.initializers.RandomUniform(0, 1, seed=2),
    )
    batch = (rng.random((6, 15, 10)) < 0.5).astype("float64")
    together = layer(batch).numpy()
    for index in range(len(batch)):
        alone = layer(batch[index : index + 1]).numpy()[0]
        np.testing.assert_array_equal(together[index], alone)
    assert together.sum(axis=2).max() == 1  # one winner per sample and step
    # A silent sample stays silent although its batch neighbours fire.
    batch[0] = 0
    assert layer(batch).numpy()[0].sum() == 0


def _asymmetric_network(precision="float64") -> NetworkSpec:
    rng = np.random.default_rng(11)
    return NetworkSpec(
        layers=[
            LayerSpec(
                "conv",
                "snu_conv2d",
                kernel=rng.normal(0.3, 0.8, (3, 2, 2, 3)),
                threshold=np.array([0.8, 1.0, 1.3]),
                decay=0.8,
                strides=(2, 1),
                padding="same",
                input_shape=(7, 6, 2),
            ),
            LayerSpec("flat", "flatten", input_shape=(4, 6, 3)),
            LayerSpec(
                "rec",
                "snu_recurrent",
                kernel=rng.normal(0.1, 0.5, (72, 9)),
                recurrent_kernel=rng.normal(0, 0.7, (9, 9)),
                threshold=rng.uniform(0.5, 1.5, 9),
                bias=rng.normal(0, 0.1, 9),
                decay=0.7,
                tau=-1e-3 / math.log(0.7),
                decay_mode="exact",
                input_shape=(72,),
            ),
            LayerSpec(
                "dense",
                "snu_dense",
                kernel=rng.normal(0.2, 0.6, (9, 5)),
                threshold=np.full(5, 0.9),
                decay=0.6,
                activation="identity",
                input_shape=(9,),
            ),
            LayerSpec(
                "out",
                "readout",
                kernel=rng.normal(0, 1, (5, 4)),
                bias=np.array([0.1, -0.2, 0.0, 0.3]),
                readout_mode="leaky_last",
                decay=0.9,
                readout_activation="softmax",
                input_shape=(5,),
            ),
        ],
        input_shape=(7, 6, 2),
        precision=precision,
    ).validate()


def test_keras_matches_numpy_reference_float64():
    spec = _asymmetric_network()
    rng = np.random.default_rng(5)
    inputs = (rng.random((6, 14, 7, 6, 2)) < 0.35).astype(float)
    expected = simulate(spec, inputs)
    model = keras_io.model_from_spec(spec, n_steps=14)
    result = keras_io.run_keras(model, inputs)
    for name in ("conv", "rec", "dense"):
        assert expected.outputs[name].sum() > 0, name
        np.testing.assert_array_equal(
            result.outputs[name], expected.outputs[name], err_msg=name
        )
        np.testing.assert_allclose(
            result.states[name], expected.states[name], atol=1e-12
        )
    np.testing.assert_allclose(
        result.outputs["out"], expected.outputs["out"], atol=1e-12
    )


def test_transposed_kernel_changes_raster():
    spec = _asymmetric_network()
    rng = np.random.default_rng(5)
    inputs = (rng.random((6, 14, 7, 6, 2)) < 0.35).astype(float)
    expected = simulate(spec, inputs)
    spec.layers[2].recurrent_kernel = spec.layers[2].recurrent_kernel.T.copy()
    model = keras_io.model_from_spec(spec, n_steps=14)
    result = keras_io.run_keras(model, inputs)
    assert not np.array_equal(result.outputs["rec"], expected.outputs["rec"])


def test_spec_round_trip_through_model():
    spec = _asymmetric_network()
    again = keras_io.spec_from_model(keras_io.model_from_spec(spec))
    assert [layer.kind for layer in again.layers] == [
        layer.kind for layer in spec.layers
    ]
    assert again.precision == "float64"
    for first, second in zip(spec.layers, again.layers, strict=True):
        for field in ("kernel", "threshold", "bias", "recurrent_kernel"):
            a, b = getattr(first, field), getattr(second, field)
            assert (a is None) == (b is None), (first.name, field)
            if a is not None:
                np.testing.assert_array_equal(a, b)
        assert first.decay == second.decay
        assert first.decay_mode == second.decay_mode


def test_unknown_keras_layer_rejected():
    inputs = keras.Input((5, 4))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    with pytest.raises(SpecError, match="no SNU equivalent.*SNUDense"):
        keras_io.spec_from_model(model)


ALL_LAYERS = [
    layers.SNUDense(
        4,
        tau=0.02,
        dt=1e-3,
        decay_mode="euler",
        pseudo_derivative="sigmoid",
        pseudo_derivative_slope=3.0,
        use_bias=True,
    ),
    layers.SNURecurrent(4, decay=0.7, lateral_inhibition=True),
    layers.SNUConv2D(3, (3, 2), strides=(1, 2), padding="same", decay=0.9),
    layers.SSNUDense(4, decay=0.6),
    layers.SSNURecurrent(4, decay=0.6),
    layers.SSNUConv2D(2, 3, decay=0.6),
    layers.SNUReadout(3, mode="leaky", activation="sigmoid", decay=0.95),
    layers.SNUCell(4, recurrent=True, decay=0.5),
    layers.SpikeFlatten(),
]


@pytest.mark.parametrize("layer", ALL_LAYERS, ids=lambda layer: type(layer).__name__)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    rebuilt = type(layer).from_config(config)
    assert rebuilt.get_config() == config
    registered = keras.saving.get_registered_name(type(layer))
    assert registered == f"snubridge>{type(layer).__name__}"


SAVED_MODEL_CHECK = """
import sys
import numpy as np
import keras
import snubridge.layers  # registers the layer classes; no custom_objects below
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
inputs = np.load(sys.argv[2])
np.save(sys.argv[3], model(inputs).numpy())
"""


def test_saved_model_loads_in_fresh_process(tmp_path):
    spec = _asymmetric_network()
    model = keras_io.model_from_spec(spec, n_steps=10)
    path = keras_io.save_model(model, tmp_path / "net.keras")
    rng = np.random.default_rng(2)
    inputs = (rng.random((3, 10, 7, 6, 2)) < 0.3).astype("float64")
    np.save(tmp_path / "inputs.npy", inputs)
    subprocess.run(
        [
            sys.executable,
            "-c",
            SAVED_MODEL_CHECK,
            str(path),
            str(tmp_path / "inputs.npy"),
            str(tmp_path / "out.npy"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), model(inputs).numpy())
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

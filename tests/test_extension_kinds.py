"""Extension layer kinds: registration, params, entry points and the example package.

The example package ``examples/custom_converter`` is installed with pip into a
temporary folder and put on ``sys.path``. Every test that looks up kinds or
converters uses fresh registries, so the process-wide registries and other
tests see no trace of the package.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from snubridge import load_params, save_params, spec
from snubridge.errors import ConversionError, SpecError
from snubridge.reference import simulate
from snubridge.spec import LayerKind, LayerKindRegistry, LayerSpec, NetworkSpec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_converter"
KIND = "snu_dense_delayed"


def _shape_of_kernel(layer):
    return (np.asarray(layer.kernel).shape[1],)


def _identity(layer, inputs):
    return inputs, None


@pytest.fixture
def kinds(monkeypatch):
    """An empty default kind registry that loads no entry points."""
    table = LayerKindRegistry(entry_point_group=None)
    monkeypatch.setattr(spec, "LAYER_KIND_REGISTRY", table)
    return table


def _write_dist_info(site: Path, name: str, entry_points: str) -> None:
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(entry_points)


# Registration guards --------------------------------------------------------


def test_kind_name_normalised(kinds):
    registered = spec.register_layer_kind("  SNU_Shift ", output_shape=_shape_of_kernel)
    assert registered.kind == "snu_shift"
    assert spec.registered_layer_kinds() == ("snu_shift",)
    assert spec.get_layer_kind("Snu_Shift") is registered


@pytest.mark.parametrize("name", ["", "1layer", "a-b", "x y", "a" * 65, 3])
def test_invalid_kind_name_rejected(kinds, name):
    with pytest.raises(SpecError, match="layer kind"):
        spec.register_layer_kind(name, output_shape=_shape_of_kernel)


@pytest.mark.parametrize("name", spec.LAYER_KINDS)
def test_builtin_kind_rejected(kinds, name):
    with pytest.raises(SpecError, match="built-in"):
        spec.register_layer_kind(name.upper(), output_shape=_shape_of_kernel)


def test_duplicate_kind_needs_replace(kinds):
    first = spec.register_layer_kind("snu_shift", output_shape=_shape_of_kernel)
    with pytest.raises(SpecError, match="already registered.*replace=True"):
        spec.register_layer_kind("snu_shift", output_shape=_shape_of_kernel)
    assert spec.get_layer_kind("snu_shift") is first
    second = spec.register_layer_kind(
        "snu_shift", output_shape=_shape_of_kernel, replace=True
    )
    assert spec.get_layer_kind("snu_shift") is second
    assert spec.register_layer_kind(second) is second


def test_unregister_kind(kinds):
    spec.register_layer_kind("snu_shift", output_shape=_shape_of_kernel)
    spec.unregister_layer_kind("snu_shift")
    assert spec.registered_layer_kinds() == ()
    with pytest.raises(SpecError, match="not a known layer kind"):
        spec.unregister_layer_kind("snu_shift")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"output_shape": None}, "output_shape is required"),
        ({"output_shape": (3,)}, "output_shape must be callable"),
        ({"simulate": "not callable"}, "simulate must be callable"),
        ({"validate": 1.5}, "validate must be callable"),
        ({"spiking": "yes"}, "spiking must be callable"),
        ({"keras_layer": "pkg.mod:Layer"}, "missing to_spec, from_spec"),
        (
            {"keras_layer": "no path", "to_spec": "a:b", "from_spec": "a:c"},
            "not an import path",
        ),
        (
            {"keras_layer": object(), "to_spec": "a:b", "from_spec": "a:c"},
            "keras_layer must be a Keras layer class",
        ),
    ],
)
def test_kind_fields_type_checked(kinds, fields, message):
    arguments = {"output_shape": _shape_of_kernel, **fields}
    with pytest.raises(SpecError, match=message):
        spec.register_layer_kind("snu_shift", **arguments)
    assert spec.registered_layer_kinds() == ()


def test_layer_kind_with_fields_rejected(kinds):
    layer_kind = LayerKind("snu_shift", output_shape=_shape_of_kernel)
    with pytest.raises(SpecError, match="set those fields on the LayerKind"):
        spec.register_layer_kind(layer_kind, simulate=_identity)


# Unknown kinds ----------------------------------------------------------------


def _dense_layer(kind: str, **fields) -> LayerSpec:
    return LayerSpec(
        "hidden",
        kind,
        kernel=np.array([[0.5, -0.25], [0.75, 1.0], [0.0, 0.125]]),
        threshold=np.array([1.0, 0.5]),
        decay=0.5,
        input_shape=(3,),
        **fields,
    )


def test_unregistered_kind_error_lists_kinds(kinds):
    spec.register_layer_kind("snu_shift", output_shape=_shape_of_kernel)
    with pytest.raises(SpecError) as caught:
        _dense_layer("lstm").validate()
    message = str(caught.value)
    assert "'hidden'" in message
    assert "kind='lstm'" in message
    for name in spec.LAYER_KINDS:
        assert name in message
    assert "registered extension kinds: snu_shift" in message
    assert "register_layer_kind" in message
    assert "'snubridge.layer_kinds'" in message


def test_entry_points_loaded_once(monkeypatch):
    calls = []

    def entry_points(group):
        calls.append(group)
        return []

    monkeypatch.setattr(spec.importlib.metadata, "entry_points", entry_points)
    table = LayerKindRegistry()
    monkeypatch.setattr(spec, "LAYER_KIND_REGISTRY", table)
    for _ in range(3):
        with pytest.raises(SpecError, match="not a known layer kind"):
            _dense_layer("snu_missing").validate()
    assert calls == ["snubridge.layer_kinds"]


def test_broken_entry_point_named_in_error(tmp_path, monkeypatch, caplog):
    _write_dist_info(
        tmp_path,
        "broken_kinds",
        "[snubridge.layer_kinds]\nsnu_broken = no_such_module_here:KIND\n"
        "snu_wrong = json:dumps\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(spec, "LAYER_KIND_REGISTRY", LayerKindRegistry())
    with caplog.at_level(logging.WARNING, logger="snubridge.spec"):
        with pytest.raises(SpecError, match="entry point 'snu_broken' failed"):
            _dense_layer("snu_broken").validate()
    warnings = [
        record
        for record in caplog.records
        if record.name == "snubridge.spec" and record.levelno == logging.WARNING
    ]
    assert len(warnings) == 2
    assert "snu_wrong" in spec.LAYER_KIND_REGISTRY.failed_entry_points


# Params -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"delay": True}, "boolean"),
        ({"delay": float("nan")}, "not finite"),
        ({"delay": float("inf")}, "not finite"),
        ({"delay": [1, 2]}, "nested objects"),
        ({"delay": {"steps": 2}}, "nested objects"),
        ({"delay": None}, "nested objects"),
        ({"2delay": 1}, "invalid params key"),
        ({"de lay": 1}, "invalid params key"),
        ({"mode": "a;b"}, "not a safe string"),
        ({"mode": "x" * 129}, "not a safe string"),
        ({"delay": 2**64}, "int64"),
        ({f"p{i}": i for i in range(65)}, "more than the 64"),
    ],
)
def test_invalid_params_rejected(params, message):
    with pytest.raises(SpecError, match=message):
        spec.check_params(params, "Layer 'hidden'")


def test_params_numpy_scalars_become_python():
    checked = spec.check_params(
        {"delay": np.int64(2), "gain": np.float32(0.5), "mode": "fast-1.0"}, "here"
    )
    assert checked == {"delay": 2, "gain": 0.5, "mode": "fast-1.0"}
    assert type(checked["delay"]) is int
    assert type(checked["gain"]) is float


def test_builtin_kind_rejects_params():
    with pytest.raises(SpecError, match="built-in kind 'snu_dense' takes no params"):
        _dense_layer("snu_dense", params={"delay": 1}).validate()


def test_builtin_kind_name_normalised():
    layer = _dense_layer(" SNU_Dense ").validate()
    assert layer.kind == "snu_dense"
    assert layer.params == {}


def _shift_kind() -> LayerKind:
    """A kind in the test: ``y_t = x_{t - shift} * scale``, not spiking."""

    def validate(layer):
        if not isinstance(layer.params.get("shift"), int):
            raise SpecError(f"Layer {layer.name!r}: params['shift'] must be an int.")

    def shifted(layer, inputs):
        shift = layer.params["shift"]
        outputs = np.zeros_like(inputs)
        outputs[:, shift:] = inputs[:, : inputs.shape[1] - shift]
        return outputs * layer.params["scale"], None

    return spec.register_layer_kind(
        "time_shift",
        output_shape=lambda layer: layer.input_shape,
        simulate=shifted,
        spiking=False,
        validate=validate,
    )


def _shift_network() -> NetworkSpec:
    return NetworkSpec(
        layers=[
            LayerSpec(
                "shift",
                "time_shift",
                input_shape=(3,),
                params={"shift": 1, "scale": 0.5, "note": "half"},
            )
        ],
        input_shape=(3,),
        precision="float64",
    ).validate()


def test_params_round_trip(kinds, tmp_path):
    _shift_kind()
    network = _shift_network()
    path = save_params(network, tmp_path / "shift.h5")
    again = load_params(path)
    assert again.layers[0].kind == "time_shift"
    assert again.layers[0].params == {"shift": 1, "scale": 0.5, "note": "half"}
    assert type(again.layers[0].params["shift"]) is int
    assert NetworkSpec.from_dict(network.to_dict()).layers[0].params == (
        network.layers[0].params
    )


def test_file_without_params_reads_empty(tmp_path):
    network = NetworkSpec(
        layers=[_dense_layer("snu_dense")], input_shape=(3,), precision="float64"
    ).validate()
    path = save_params(network, tmp_path / "old.h5")
    with h5py.File(path, "r+") as handle:
        assert handle["layers/0000"].attrs["params_json"] == "{}"
        del handle["layers/0000"].attrs["params_json"]
    assert load_params(path).layers[0].params == {}


def test_file_with_nested_params_rejected(kinds, tmp_path):
    _shift_kind()
    path = save_params(_shift_network(), tmp_path / "shift.h5")
    with h5py.File(path, "r+") as handle:
        handle["layers/0000"].attrs["params_json"] = '{"shift": {"steps": 1}}'
    with pytest.raises(SpecError, match="shift.h5.*nested objects"):
        load_params(path)
    with h5py.File(path, "r+") as handle:
        handle["layers/0000"].attrs["params_json"] = "[1, 2]"
    with pytest.raises(Exception, match="params_json must be a JSON object"):
        load_params(path)


def test_file_with_unregistered_kind_rejected(kinds, tmp_path):
    _shift_kind()
    path = save_params(_shift_network(), tmp_path / "shift.h5")
    spec.unregister_layer_kind("time_shift")
    with pytest.raises(SpecError, match="shift.h5.*kind='time_shift'.*register"):
        load_params(path)


# Reference simulation ------------------------------------------------------------


def test_reference_runs_registered_simulate(kinds):
    _shift_kind()
    inputs = np.arange(2 * 4 * 3, dtype=np.float64).reshape(2, 4, 3)
    result = simulate(_shift_network(), inputs)
    expected = np.zeros_like(inputs)
    expected[:, 1:] = 0.5 * inputs[:, :3]
    np.testing.assert_array_equal(result.outputs["shift"], expected)
    assert result.spikes == {}
    assert "shift" not in result.states


def test_reference_without_simulate_rejected(kinds):
    spec.register_layer_kind("snu_custom", output_shape=_shape_of_kernel)
    network = NetworkSpec(
        layers=[_dense_layer("snu_custom")], input_shape=(3,), precision="float64"
    ).validate()
    with pytest.raises(SpecError, match="'snu_custom' has no reference simulation"):
        simulate(network, np.zeros((1, 2, 3)))


def test_reference_wrong_output_shape_rejected(kinds):
    spec.register_layer_kind(
        "snu_custom", output_shape=_shape_of_kernel, simulate=_identity
    )
    network = NetworkSpec(
        layers=[_dense_layer("snu_custom")], input_shape=(3,), precision="float64"
    ).validate()
    with pytest.raises(SpecError, match=r"outputs of shape \(1, 2, 3\), expected"):
        simulate(network, np.zeros((1, 2, 3)))


# The example package, installed ------------------------------------------------


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """Install the example package with pip into a temporary folder."""
    root = tmp_path_factory.mktemp("example")
    source = root / "source"
    # Build from a copy, since setuptools writes build/ and *.egg-info next to
    # the sources.
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__"))
    site = root / "site"
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
        "--no-build-isolation", "--no-index", "--target", str(site), str(source),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    yield site
    sys.path.remove(str(site))
    for name in [name for name in sys.modules if name.startswith("snubridge_delays")]:
        del sys.modules[name]


@pytest.fixture
def example(example_site, monkeypatch):
    """Fresh kind and converter registries that load the installed entry points."""
    from snubridge.converters import registry

    monkeypatch.setattr(spec, "LAYER_KIND_REGISTRY", LayerKindRegistry())
    converters = registry.ConverterRegistry(builtin_modules=registry.BUILTIN_MODULES)
    monkeypatch.setattr(registry, "REGISTRY", converters)
    return converters


def _delayed_network(delay: int = 2) -> NetworkSpec:
    rng = np.random.default_rng(11)
    # Asymmetric weights and thresholds, so a transposed kernel or a swapped
    # unit cannot give the same raster.
    kernel = np.round(rng.normal(0.45, 0.6, size=(6, 4)), 3)
    return NetworkSpec(
        layers=[
            LayerSpec(
                "delayed",
                KIND,
                kernel=kernel,
                threshold=np.array([0.9, 1.15, 0.7, 1.3]),
                bias=np.array([0.05, 0.0, 0.125, -0.02]),
                decay=0.75,
                input_shape=(6,),
                params={"delay": delay},
            ),
            LayerSpec(
                "plain",
                "snu_dense",
                kernel=np.round(rng.normal(0.4, 0.7, size=(4, 3)), 3),
                threshold=np.array([0.8, 1.0, 0.6]),
                decay=0.5,
                input_shape=(4,),
            ),
        ],
        input_shape=(6,),
        precision="float64",
    ).validate()


def _raster(samples: int = 4, steps: int = 14, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raster = (rng.random((samples, steps, 6)) < 0.35).astype(np.float64)
    raster[0] = 0.0  # one silent sample
    raster[1, :, :] = 1.0  # one saturated sample
    return raster


def test_example_kind_found_by_entry_point(example):
    network = _delayed_network()
    assert network.layers[0].output_shape == (4,)
    assert network.layers[0].is_spiking
    layer_kind = spec.get_layer_kind(KIND)
    assert layer_kind.simulate.__module__ == "snubridge_delays.kind"
    assert KIND in spec.registered_layer_kinds()


def test_example_converter_found_by_entry_point(example):
    converter = example.get_converter(KIND)
    assert type(converter).__module__ == "snubridge_delays.brian2_converter"
    assert type(converter).__name__ == "DelayedSNUConverter"
    assert converter.kind == KIND
    assert "snu_dense" in example.registered_kinds()


def test_example_validates_delay(example):
    layer = _delayed_network().layers[0]
    for params, message in [
        ({}, "exactly one parameter"),
        ({"delay": 1, "extra": 2}, "exactly one parameter"),
        ({"delay": -1}, "integer number of time steps >= 0"),
        ({"delay": 1.5}, "integer number of time steps >= 0"),
    ]:
        layer.params = params
        with pytest.raises(SpecError, match=message):
            layer.validate()


def test_example_reference_is_shifted_dense(example):
    # Independent check of the delay: with zero bias, the delayed layer equals a
    # built-in snu_dense layer fed with the input raster shifted by d steps.
    network = _delayed_network(delay=2)
    delayed = network.layers[0]
    delayed.bias = None
    inputs = _raster()
    shifted = np.zeros_like(inputs)
    shifted[:, 2:] = inputs[:, :-2]
    dense = LayerSpec(
        "dense",
        "snu_dense",
        kernel=delayed.kernel,
        threshold=delayed.threshold,
        decay=delayed.decay,
        input_shape=(6,),
    )
    plain = NetworkSpec(layers=[dense], input_shape=(6,), precision="float64")
    expected = simulate(plain.validate(), shifted)
    result = simulate(network, inputs)
    np.testing.assert_array_equal(result.outputs["delayed"], expected.outputs["dense"])
    np.testing.assert_array_equal(result.states["delayed"], expected.states["dense"])


def test_example_hand_computed_trace(example):
    # One neuron, weight 0.6, theta 1, l = 0.5, delay 2, input spikes at steps
    # 0 and 1: a = (0, 0, 0.6, 0.6, 0), so s = (0, 0, 0.6, 0.9, 0.45), no spike.
    # A bias of 0.25 gives a = (.25, .25, .85, .85, .25) and
    # s = (.25, .375, 1.0375 (spike), .85 (after the reset), .675).
    layer = LayerSpec(
        "one",
        KIND,
        kernel=np.array([[0.6]]),
        threshold=np.array([1.0]),
        decay=0.5,
        input_shape=(1,),
        params={"delay": 2},
    )
    network = NetworkSpec(layers=[layer], input_shape=(1,), precision="float64")
    inputs = np.array([1.0, 1.0, 0.0, 0.0, 0.0]).reshape(1, 5, 1)
    result = simulate(network.validate(), inputs)
    np.testing.assert_allclose(result.states["one"][0, :, 0], [0, 0, 0.6, 0.9, 0.45])
    assert result.outputs["one"].sum() == 0
    layer.bias = np.array([0.25])
    result = simulate(network.validate(), inputs)
    np.testing.assert_allclose(
        result.states["one"][0, :, 0], [0.25, 0.375, 1.0375, 0.85, 0.675]
    )
    np.testing.assert_array_equal(result.outputs["one"][0, :, 0], [0, 0, 1, 0, 0])


def test_example_keras_reference_brian2_identical(example):
    from snubridge import keras_io
    from snubridge.converters.brian2_export import run_brian2

    network = _delayed_network(delay=2)
    inputs = _raster()
    reference = simulate(network, inputs)
    model = keras_io.model_from_spec(network, dtype="float64")
    assert type(model.layers[1]).__name__ == "SNUDenseDelayed"
    keras_result = keras_io.run_keras(model, inputs)
    brian2_result = run_brian2(network, inputs, record_states=True)
    spikes = reference.outputs["delayed"]
    assert 0 < spikes.sum() < spikes.size
    assert reference.outputs["plain"].sum() > 0
    # The delay matters: without it, the raster differs.
    undelayed = _delayed_network(delay=0)
    assert not np.array_equal(simulate(undelayed, inputs).outputs["delayed"], spikes)
    for name in ("delayed", "plain"):
        expected = reference.outputs[name]
        np.testing.assert_array_equal(keras_result.outputs[name], expected)
        np.testing.assert_array_equal(brian2_result.outputs[name], expected)
        # Float64 states agree to rounding: Brian2 sums the synapses one by one.
        tolerance = 64 * np.finfo(np.float64).eps
        np.testing.assert_allclose(
            keras_result.states[name], reference.states[name], rtol=0, atol=tolerance
        )
        np.testing.assert_allclose(
            brian2_result.states[name], reference.states[name], rtol=0, atol=tolerance
        )


def test_example_brian2_batches_do_not_leak(example):
    from snubridge.converters.brian2_export import run_brian2

    network = _delayed_network(delay=3)
    inputs = _raster(samples=3, steps=8, seed=9)
    inputs[0, -1] = 1.0  # spikes due after the end of the first batch
    reference = simulate(network, inputs)
    result = run_brian2(network, inputs, batch_size=1)
    np.testing.assert_array_equal(
        result.outputs["delayed"], reference.outputs["delayed"]
    )


def test_example_keras_spec_round_trip(example, tmp_path):
    from snubridge import keras_io

    network = _delayed_network(delay=2)
    model = keras_io.model_from_spec(network, dtype="float64")
    again = keras_io.spec_from_model(model)
    assert [layer.kind for layer in again.layers] == [KIND, "snu_dense"]
    assert again.layers[0].params == {"delay": 2}
    np.testing.assert_array_equal(again.layers[0].kernel, network.layers[0].kernel)
    np.testing.assert_array_equal(again.layers[0].bias, network.layers[0].bias)
    path = keras_io.save_model(model, tmp_path / "delayed.keras")
    loaded = keras_io.load_model(path)
    assert type(loaded.layers[1]).__name__ == "SNUDenseDelayed"
    assert loaded.layers[1].delay == 2
    assert keras_io.spec_from_model(loaded).layers[0].params == {"delay": 2}


def test_example_params_file_round_trip(example, tmp_path, monkeypatch):
    network = _delayed_network(delay=2)
    path = save_params(network, tmp_path / "delayed.h5")
    # A registry that has seen no kind yet, as in a new process.
    monkeypatch.setattr(spec, "LAYER_KIND_REGISTRY", LayerKindRegistry())
    again = load_params(path)
    assert again.layers[0].kind == KIND
    assert again.layers[0].params == {"delay": 2}


def test_example_script_export_rejected(example, tmp_path):
    from snubridge.converters.brian2_script import export_script

    with pytest.raises(ConversionError, match="snu_dense_delayed"):
        export_script(_delayed_network(), tmp_path / "script")


def test_unknown_keras_layer_names_hook(kinds):
    import keras

    from snubridge import keras_io

    model = keras.Sequential([keras.Input((None, 3)), keras.layers.Dense(2)])
    with pytest.raises(SpecError, match="register_layer_kind.*keras_layer"):
        keras_io.spec_from_model(model)


def test_broken_keras_path_skipped(kinds, caplog):
    from snubridge import keras_io

    spec.register_layer_kind(
        "snu_custom",
        output_shape=_shape_of_kernel,
        keras_layer="no_such_module_here:Layer",
        to_spec="no_such_module_here:to_spec",
        from_spec="no_such_module_here:from_spec",
    )
    network = NetworkSpec(
        layers=[_dense_layer("snu_dense")], input_shape=(3,), precision="float64"
    ).validate()
    model = keras_io.model_from_spec(network)
    with caplog.at_level(logging.WARNING, logger="snubridge.keras_io"):
        again = keras_io.spec_from_model(model)
    assert again.layers[0].kind == "snu_dense"
    skipped = [
        record
        for record in caplog.records
        if record.name == "snubridge.keras_io" and "snu_custom" in record.getMessage()
    ]
    assert len(skipped) == 1

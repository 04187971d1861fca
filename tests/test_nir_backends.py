"""Keras -> NIR -> Keras and Keras -> NIR -> Brian2 give the same rasters (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from test_nir_roundtrip import conv_spec, dense_spec, recurrent_spec

from snubridge.converters.nir_io import read_nir, write_nir

keras_io = pytest.importorskip(
    "snubridge.keras_io", reason="snubridge.keras_io (Keras model builder) is missing"
)
brian2_export = pytest.importorskip(
    "snubridge.converters.brian2_export", reason="the Brian2 exporter is missing"
)

BUILDERS = {"dense": dense_spec, "recurrent": recurrent_spec, "conv": conv_spec}


def _keras_round_trip(tmp_path, kind):
    rng = np.random.default_rng(21)
    model = keras_io.model_from_spec(BUILDERS[kind](rng), dtype="float64")
    spec = keras_io.spec_from_model(model)
    path = write_nir(spec, tmp_path / f"{kind}.nir")
    back = read_nir(path, dt=spec.dt)
    inputs = (rng.random((5, 20, *spec.input_shape)) < 0.4).astype(np.float64)
    return model, spec, back, inputs


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_keras_nir_keras_same_rasters(tmp_path, kind):
    model, spec, back, inputs = _keras_round_trip(tmp_path, kind)
    before = keras_io.run_keras(model, inputs)
    after = keras_io.run_keras(keras_io.model_from_spec(back, dtype="float64"), inputs)
    assert set(before.spikes) == set(after.spikes)
    for name, raster in before.spikes.items():
        assert raster.any(), name
        np.testing.assert_array_equal(raster, after.spikes[name])
    last = spec.layers[-1].name
    np.testing.assert_array_equal(before.outputs[last], after.outputs[last])


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_keras_nir_brian2_same_rasters(tmp_path, kind):
    model, _, back, inputs = _keras_round_trip(tmp_path, kind)
    keras_result = keras_io.run_keras(model, inputs)
    brian_result = brian2_export.run_brian2(back, inputs)
    for name, raster in keras_result.spikes.items():
        np.testing.assert_array_equal(raster, brian_result.spikes[name])

"""Spike rasters as NIR data: written with snubridge, read back with plain nir."""

from __future__ import annotations

import nir
import numpy as np
import pytest

from snubridge.errors import DataError
from snubridge.validation.nir_data import (
    nir_data_to_rasters,
    rasters_to_nir_data,
    read_rasters,
    write_rasters,
)


def _rasters(rng):
    return {
        "conv": rng.random((3, 7, 4, 2, 2)) < 0.3,
        "dense": (rng.random((3, 7, 5)) < 0.5).astype(np.float64),
    }


def test_rasters_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    spikes = _rasters(rng)
    states = {"dense": rng.normal(size=(3, 7, 5))}
    path = write_rasters(tmp_path / "spikes.nir", spikes, dt=5e-4, states=states)
    back = read_rasters(path)
    assert back.dt == 5e-4
    np.testing.assert_array_equal(back.spikes["conv"], spikes["conv"].reshape(3, 7, 16))
    np.testing.assert_array_equal(back.spikes["dense"], spikes["dense"] == 1)
    assert back.spikes["dense"].dtype == bool
    np.testing.assert_array_equal(back.states["dense"], states["dense"])
    assert set(back.states) == {"dense"}


def test_file_is_plain_nir_data(tmp_path):
    rng = np.random.default_rng(1)
    spikes = _rasters(rng)
    path = write_rasters(tmp_path / "spikes.nir", spikes, dt=1e-3)
    data = nir.read_data(str(path))
    observable = data.nodes["dense"].observables["spikes"]
    assert isinstance(observable, nir.TimeGriddedData)
    assert observable.dt == 1e-3
    assert observable.data.dtype == bool
    assert observable.shape == (3, 7, 5)
    events = observable.to_event(n_events=40)
    assert events.idx[0, 0] == np.argwhere(spikes["dense"][0])[0][1]


def test_event_data_is_placed_on_grid():
    idx = np.array([[2, 0, -1]])
    time = np.array([[0.0012, 0.0031, np.inf]])
    data = nir.NIRGraphData(
        nodes={
            "layer": nir.NIRNodeData(
                observables={
                    "spikes": nir.EventData(idx, time, n_neurons=3, t_max=0.005)
                }
            )
        }
    )
    with pytest.raises(DataError, match="pass dt"):
        nir_data_to_rasters(data)
    raster = nir_data_to_rasters(data, dt=1e-3).spikes["layer"]
    expected = np.zeros((1, 5, 3), dtype=bool)
    expected[0, 1, 2] = True
    expected[0, 3, 0] = True
    np.testing.assert_array_equal(raster, expected)


def test_bad_rasters_rejected(tmp_path):
    with pytest.raises(DataError, match="0.5"):
        rasters_to_nir_data({"a": np.full((1, 2, 3), 0.5)}, dt=1e-3)
    with pytest.raises(DataError, match="shape"):
        rasters_to_nir_data({"a": np.zeros((2, 3))}, dt=1e-3)
    with pytest.raises(DataError, match="dt must be a positive"):
        rasters_to_nir_data({"a": np.zeros((1, 2, 3))}, dt=-1.0)
    with pytest.raises(DataError, match="does not exist"):
        read_rasters(tmp_path / "absent.nir")


def test_dt_mismatch_rejected(tmp_path):
    path = write_rasters(tmp_path / "s.nir", {"a": np.zeros((1, 2, 3))}, dt=1e-3)
    with pytest.raises(DataError, match="dt=0.002"):
        read_rasters(path, dt=2e-3)

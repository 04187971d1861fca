"""Tests of the SpikeData container: validation, statistics, slicing, npz files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from snubridge.errors import DataError
from snubridge.spikes import NPZ_FORMAT, SpikeData


def _raster() -> np.ndarray:
    """Hand-written raster (2 samples, 4 steps, 3 neurons), asymmetric on purpose."""
    return np.array(
        [
            [[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1]],
            [[0, 0, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1]],
        ],
        dtype=np.int64,
    )


def test_shape_properties():
    data = SpikeData(_raster(), dt=2e-3, labels=[3, 7])
    assert data.n_samples == 2
    assert data.n_steps == 4
    assert data.n_neurons == 3
    assert len(data) == 2
    assert data.dt == 2e-3
    assert data.duration == pytest.approx(8e-3)
    assert data.neuron_shape == (3,)
    assert data.spikes.dtype == bool
    assert data.labels.tolist() == [3, 7]


def test_counts_match_hand_count():
    counts = SpikeData(_raster()).counts()
    # Counted by hand from _raster(): columns are neurons.
    assert counts.tolist() == [[3, 1, 1], [0, 1, 4]]
    assert counts.dtype == np.int64


def test_rates_in_hertz():
    rates = SpikeData(_raster(), dt=2e-3).rates()
    # 3 spikes in 4 steps of 2 ms = 3 / 0.008 s = 375 Hz.
    expected = np.array([[375.0, 125.0, 125.0], [0.0, 125.0, 500.0]])
    np.testing.assert_allclose(rates, expected, rtol=1e-12)


def test_rates_reject_zero_steps():
    data = SpikeData(np.zeros((2, 0, 3), dtype=bool))
    with pytest.raises(DataError, match="at least one time step"):
        data.rates()


@pytest.mark.parametrize(
    "dtype", [bool, np.uint8, np.int32, np.int64, np.float32, np.float64]
)
def test_accepts_zero_one_dtypes(dtype):
    data = SpikeData(_raster().astype(dtype))
    np.testing.assert_array_equal(data.spikes, _raster().astype(bool))


def test_bool_input_not_copied():
    raster = _raster().astype(bool)
    assert SpikeData(raster).spikes is raster


@pytest.mark.parametrize("shape", [(3,), (2, 3), (1, 2, 3, 1)])
def test_rejects_wrong_ndim(shape):
    with pytest.raises(DataError, match=r"\(samples, steps, neurons\)"):
        SpikeData(np.zeros(shape))


def test_rejects_values_other_than_zero_one():
    raster = _raster().astype(np.float64)
    raster[1, 2, 0] = 2.0
    with pytest.raises(
        DataError, match=r"got 2\.0 at \(sample, step, neuron\) \(1, 2, 0\)"
    ):
        SpikeData(raster)


def test_rejects_fractional_values():
    raster = _raster().astype(np.float64)
    raster[0, 3, 1] = 0.5
    with pytest.raises(DataError, match="must be 0 or 1"):
        SpikeData(raster)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite(value):
    raster = _raster().astype(np.float64)
    raster[0, 1, 2] = value
    with pytest.raises(DataError, match=r"non-finite value .* \(0, 1, 2\)"):
        SpikeData(raster)


def test_rejects_string_dtype():
    with pytest.raises(DataError, match="bool, integer or float"):
        SpikeData(np.full((1, 2, 2), "1"))


@pytest.mark.parametrize("dt", [0.0, -1e-3, np.nan, np.inf, "fast"])
def test_rejects_invalid_dt(dt):
    with pytest.raises(DataError, match="dt must be"):
        SpikeData(_raster(), dt=dt)


def test_rejects_labels_of_wrong_length():
    with pytest.raises(DataError, match=r"labels must have shape \(2,\)"):
        SpikeData(_raster(), labels=[1, 2, 3])


def test_rejects_fractional_labels():
    with pytest.raises(DataError, match="labels must be integers"):
        SpikeData(_raster(), labels=[0.5, 1.0])


def test_accepts_integral_float_labels():
    assert SpikeData(_raster(), labels=[1.0, 4.0]).labels.tolist() == [1, 4]


def test_rejects_mismatched_neuron_shape():
    with pytest.raises(DataError, match="does not fit 3 neurons"):
        SpikeData(_raster(), neuron_shape=(2, 2))


def test_to_array_dtype_and_values():
    array = SpikeData(_raster()).to_array(np.float32)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, _raster().astype(np.float32))


def test_to_array_unflattens_in_c_order():
    raster = np.zeros((1, 2, 6), dtype=bool)
    raster[0, 1, 4] = True  # neuron 4 of a (2, 3) grid is row 1, column 1.
    raster[0, 0, 2] = True  # neuron 2 is row 0, column 2.
    array = SpikeData(raster, neuron_shape=(2, 3)).to_array(np.int8, shape=(2, 3, 1))
    assert array.shape == (1, 2, 2, 3, 1)
    assert array[0, 1, 1, 1, 0] == 1
    assert array[0, 0, 0, 2, 0] == 1
    assert array.sum() == 2


def test_to_array_rejects_wrong_shape():
    with pytest.raises(DataError, match="does not fit 3 neurons"):
        SpikeData(_raster()).to_array(shape=(2, 2))


def test_int_index_keeps_sample_axis():
    data = SpikeData(_raster(), labels=[3, 7])
    single = data[1]
    assert isinstance(single, SpikeData)
    assert single.spikes.shape == (1, 4, 3)
    assert single.labels.tolist() == [7]
    np.testing.assert_array_equal(single.spikes[0], _raster()[1].astype(bool))
    assert data[-1].labels.tolist() == [7]


def test_slice_array_and_mask_index():
    raster = np.zeros((5, 2, 1), dtype=bool)
    raster[:, 0, 0] = [True, False, True, True, False]
    data = SpikeData(raster, labels=[0, 1, 2, 3, 4], dt=5e-4, neuron_shape=(1,))
    assert data[1:4].labels.tolist() == [1, 2, 3]
    assert data[np.array([4, 0])].labels.tolist() == [4, 0]
    assert data[raster[:, 0, 0]].labels.tolist() == [0, 2, 3]
    assert data[1:4].dt == 5e-4


def test_index_errors():
    data = SpikeData(_raster())
    with pytest.raises(DataError, match="out of range"):
        data[2]
    with pytest.raises(DataError, match="samples only"):
        data[0, 1]
    with pytest.raises(DataError, match="dtype"):
        data[np.array([0.0, 1.0])]


def test_npz_round_trip(tmp_path):
    raster = _raster().repeat(2, axis=2)
    data = SpikeData(raster, dt=2.5e-4, labels=[9, 1], neuron_shape=(2, 3))
    path = data.save_npz(tmp_path / "spikes.npz")
    loaded = SpikeData.load_npz(path)
    np.testing.assert_array_equal(loaded.spikes, data.spikes)
    assert loaded.dt == 2.5e-4
    assert loaded.labels.tolist() == [9, 1]
    assert loaded.neuron_shape == (2, 3)
    assert sorted(os.listdir(tmp_path)) == ["spikes.npz"]


def test_npz_round_trip_without_labels(tmp_path):
    path = SpikeData(_raster()).save_npz(tmp_path / "plain.npz")
    assert SpikeData.load_npz(path).labels is None


def test_npz_name_without_suffix_kept(tmp_path):
    path = SpikeData(_raster()).save_npz(tmp_path / "spikes.data")
    assert path.name == "spikes.data"
    assert sorted(os.listdir(tmp_path)) == ["spikes.data"]


def test_failed_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "spikes.npz"
    SpikeData(_raster(), labels=[3, 7]).save_npz(path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", fail)
    with pytest.raises(OSError, match="disk full"):
        SpikeData(_raster()).save_npz(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["spikes.npz"]


def test_load_truncated_npz(tmp_path):
    path = SpikeData(_raster()).save_npz(tmp_path / "spikes.npz")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="truncated"):
        SpikeData.load_npz(path)


def test_load_foreign_npz(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.ones(3))
    with pytest.raises(DataError, match="not written by SpikeData.save_npz"):
        SpikeData.load_npz(path)


def test_load_wrong_format_marker(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(
        path,
        format=np.array("something-else"),
        version=np.array(1),
        spikes=np.zeros((1, 1, 1), bool),
        dt=np.array(1e-3),
        neuron_shape=np.array([1]),
    )
    with pytest.raises(DataError, match="something-else"):
        SpikeData.load_npz(path)


def test_load_future_version(tmp_path):
    path = tmp_path / "future.npz"
    np.savez(
        path,
        format=np.array(NPZ_FORMAT),
        version=np.array(2),
        spikes=np.zeros((1, 1, 1), bool),
        dt=np.array(1e-3),
        neuron_shape=np.array([1]),
    )
    with pytest.raises(DataError, match="version 2, newer"):
        SpikeData.load_npz(path)


def test_load_rejects_object_arrays(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(
        path,
        format=np.array(NPZ_FORMAT),
        version=np.array(1),
        spikes=np.array([[[object()]]], dtype=object),
        dt=np.array(1e-3),
        neuron_shape=np.array([1]),
    )
    with pytest.raises(DataError, match="not a readable .npz"):
        SpikeData.load_npz(path)


def test_load_invalid_spikes_in_file(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        format=np.array(NPZ_FORMAT),
        version=np.array(1),
        spikes=np.full((1, 2, 1), 3, dtype=np.int64),
        dt=np.array(1e-3),
        neuron_shape=np.array([1]),
    )
    with pytest.raises(DataError, match="bad.npz.*must be 0 or 1"):
        SpikeData.load_npz(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        SpikeData.load_npz(tmp_path / "absent.npz")


def test_load_npz_of_text_named_as_such(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("just some text\n")
    with pytest.raises(DataError, match="not a NumPy .npz archive") as caught:
        SpikeData.load_npz(path)
    assert "pickled" not in str(caught.value)

"""HDF5 parameter file: round trip, schema checks and bad input."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from snubridge import load_params, save_params
from snubridge.errors import ParameterFileError, SpecError
from snubridge.params_file import SCHEMA_VERSION
from snubridge.spec import LayerSpec, NetworkSpec, decay_from_tau, tau_from_decay


def _network() -> NetworkSpec:
    rng = np.random.default_rng(4)
    return NetworkSpec(
        layers=[
            LayerSpec(
                "hidden",
                "snu_recurrent",
                kernel=rng.normal(size=(6, 4)),
                recurrent_kernel=rng.normal(size=(4, 4)),
                threshold=[1.0, 0.9, 1.1, 1.2],
                decay=math.exp(-0.1),
                tau=0.01,
                decay_mode="exact",
                input_shape=(6,),
            ),
            LayerSpec(
                "out",
                "readout",
                kernel=rng.normal(size=(4, 3)),
                bias=[0.1, 0.2, 0.3],
                readout_mode="mean",
                readout_activation="softmax",
                input_shape=(4,),
            ),
        ],
        input_shape=(6,),
        dt=1e-3,
        precision="float64",
        metadata={"seed": 3, "note": "test"},
    ).validate()


def test_round_trip_keeps_every_field(tmp_path):
    spec = _network()
    path = save_params(spec, tmp_path / "p.h5")
    again = load_params(path)
    assert again.dt == spec.dt
    assert again.precision == "float64"
    assert again.metadata == {"seed": 3, "note": "test"}
    for first, second in zip(spec.layers, again.layers, strict=True):
        for field in (
            "name",
            "kind",
            "decay",
            "decay_mode",
            "tau",
            "activation",
            "output",
            "readout_mode",
            "readout_activation",
            "input_shape",
        ):
            assert getattr(first, field) == getattr(second, field), field
        for field in ("kernel", "threshold", "bias", "recurrent_kernel"):
            a, b = getattr(first, field), getattr(second, field)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
    with h5py.File(path) as handle:
        assert handle.attrs["schema_version"] == SCHEMA_VERSION
        assert handle["layers/0000"].attrs["reset"] == "zero"


def test_nan_weight_rejected_naming_layer(tmp_path):
    spec = _network()
    spec.layers[0].kernel[2, 1] = np.nan
    with pytest.raises(SpecError, match=r"'hidden'.*kernel.*\(2, 1\)"):
        save_params(spec, tmp_path / "p.h5")
    assert list(tmp_path.iterdir()) == []


def test_wrong_shape_rejected():
    spec = _network()
    spec.layers[1].kernel = np.ones((5, 3))
    with pytest.raises(SpecError, match="expects 5 inputs but the layer receives 4"):
        spec.validate()


@pytest.mark.parametrize("decay", [0.0, -0.2, 1.01])
def test_decay_outside_range_rejected(decay):
    spec = _network()
    spec.layers[0].decay = decay
    with pytest.raises(SpecError, match=r"decay must lie in \(0, 1\]"):
        spec.validate()


def test_unknown_kind_rejected():
    spec = _network()
    spec.layers[0].kind = "lstm"
    with pytest.raises(SpecError, match="kind='lstm'.*snu_dense"):
        spec.validate()


def test_truncated_file_rejected(tmp_path):
    path = save_params(_network(), tmp_path / "p.h5")
    data = path.read_bytes()
    broken = tmp_path / "broken.h5"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParameterFileError, match="truncated|not a readable"):
        load_params(broken)


def test_foreign_hdf5_rejected(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("weights", data=np.ones(3))
    with pytest.raises(ParameterFileError, match="not a snubridge parameter file"):
        load_params(path)


def test_future_schema_rejected(tmp_path):
    path = save_params(_network(), tmp_path / "p.h5")
    with h5py.File(path, "a") as handle:
        handle.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ParameterFileError, match="newer.*upgrade snubridge"):
        load_params(path)


def test_missing_layer_group_rejected(tmp_path):
    path = save_params(_network(), tmp_path / "p.h5")
    with h5py.File(path, "a") as handle:
        del handle["layers/0001"]
    with pytest.raises(ParameterFileError, match="declares 2 layers but contains 1"):
        load_params(path)


def test_crafted_layer_name_rejected(tmp_path):
    path = save_params(_network(), tmp_path / "p.h5")
    with h5py.File(path, "a") as handle:
        handle["layers/0000"].attrs["name"] = "v = v + 1\nimport os"
    with pytest.raises(SpecError, match="Invalid layer name"):
        load_params(path)


def test_failed_write_leaves_previous_file(tmp_path, monkeypatch):
    spec = _network()
    path = save_params(spec, tmp_path / "p.h5")
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", fail)
    with pytest.raises(OSError, match="disk full"):
        save_params(spec, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.h5"]


@pytest.mark.parametrize("mode", ["exact", "euler"])
def test_decay_tau_round_trip_is_identity(mode):
    for decay in (0.5, 0.8, 0.95, 0.999, 1.0):
        tau = tau_from_decay(decay, 1e-3, mode)
        assert decay_from_tau(tau, 1e-3, mode) == pytest.approx(decay, rel=0, abs=1e-15)


def test_decay_formulas():
    assert decay_from_tau(0.01, 1e-3, "exact") == math.exp(-0.1)
    assert decay_from_tau(0.01, 1e-3, "euler") == pytest.approx(0.9, abs=1e-15)
    with pytest.raises(SpecError, match="tau >= dt"):
        decay_from_tau(5e-4, 1e-3, "euler")

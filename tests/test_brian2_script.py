"""Exported Brian2 script: runs without snubridge and reproduces the SNU raster."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from snubridge.converters.brian2_script import PARAMS_NAME, SCRIPT_NAME, export_script
from snubridge.errors import ConversionError
from snubridge.reference import simulate
from snubridge.spec import LayerSpec, NetworkSpec

DT = 1e-3


def _spec() -> NetworkSpec:
    rng = np.random.default_rng(31)
    conv = LayerSpec(
        "conv",
        "snu_conv2d",
        kernel=rng.normal(0, 0.7, (3, 2, 2, 3)),
        threshold=rng.uniform(0.3, 0.9, 3),
        bias=rng.normal(0, 0.1, 3),
        decay=0.75,
        strides=(2, 1),
        padding="same",
        input_shape=(6, 5, 2),
    )
    flat = LayerSpec("flat", "flatten", input_shape=conv.output_shape)
    n_flat = int(np.prod(conv.output_shape))
    recurrent = LayerSpec(
        "rec",
        "snu_recurrent",
        kernel=rng.normal(0, 0.4, (n_flat, 7)),
        recurrent_kernel=rng.normal(0, 0.5, (7, 7)),
        threshold=rng.uniform(0.4, 1, 7),
        decay=0.8,
        decay_mode="exact",
        tau=-DT / np.log(0.8),
        input_shape=(n_flat,),
    )
    readout = LayerSpec(
        "out",
        "readout",
        kernel=rng.normal(0, 0.5, (7, 4)),
        bias=rng.normal(0, 0.1, 4),
        readout_mode="leaky_last",
        decay=0.9,
        readout_activation="softmax",
        input_shape=(7,),
    )
    return NetworkSpec(
        [conv, flat, recurrent, readout],
        (6, 5, 2),
        dt=DT,
        precision="float64",
        name="script_net",
    ).validate()


@pytest.fixture
def blocked_snubridge(tmp_path):
    """A folder for PYTHONPATH whose ``snubridge`` package fails to import."""
    shim = tmp_path / "shim" / "snubridge"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "raise ImportError('snubridge is blocked here')\n"
    )
    return shim.parent


def test_script_reproduces_raster(tmp_path, blocked_snubridge):
    spec = _spec()
    script = export_script(spec, tmp_path / "export")
    assert script.name == SCRIPT_NAME
    assert (script.parent / PARAMS_NAME).is_file()
    assert "import snubridge" not in script.read_text()
    assert "from snubridge" not in script.read_text()
    rng = np.random.default_rng(32)
    inputs = (rng.random((3, 20, 6, 5, 2)) < 0.35).astype(np.float64)
    np.savez(tmp_path / "inputs.npz", inputs=inputs)
    env = dict(os.environ, PYTHONPATH=str(blocked_snubridge))
    completed = subprocess.run(
        [
            sys.executable,
            str(script),
            "--inputs",
            str(tmp_path / "inputs.npz"),
            "--out",
            str(tmp_path / "results.npz"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    reference = simulate(spec, inputs)
    with np.load(tmp_path / "results.npz", allow_pickle=False) as results:
        assert reference.spikes["conv"].sum() > 20
        assert reference.spikes["rec"].sum() > 10
        np.testing.assert_array_equal(results["spikes_0"], reference.spikes["conv"])
        np.testing.assert_array_equal(results["spikes_2"], reference.spikes["rec"])
        np.testing.assert_allclose(
            results["readout_3"], reference.outputs["out"], rtol=0, atol=1e-13
        )
        assert list(results["layer_names"]) == ["conv", "flat", "rec", "out"]


def test_params_file_loads_without_pickle(tmp_path):
    script = export_script(_spec(), tmp_path)
    with np.load(script.parent / PARAMS_NAME, allow_pickle=False) as arrays:
        for key in arrays.files:
            assert arrays[key].dtype != object, key


def test_crafted_name_stays_out_of_script(tmp_path):
    spec = _spec()
    spec.layers[0].name = "conv.0-__import__"
    script = export_script(spec, tmp_path)
    assert "__import__" not in script.read_text()


def test_export_onto_a_file_refused(tmp_path):
    occupied = tmp_path / "taken.out"
    occupied.write_text("keep me")
    with pytest.raises(ConversionError, match="give a folder path"):
        export_script(_spec(), occupied)
    assert occupied.read_text() == "keep me"


def test_ssnu_not_exported(tmp_path):
    spec = _spec()
    spec.layers[2].output = "sigmoid"
    with pytest.raises(ConversionError, match="sSNU"):
        export_script(spec, tmp_path)
    assert not (tmp_path / SCRIPT_NAME).exists()

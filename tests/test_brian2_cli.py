"""``snubridge convert``: Brian2 script export and the NIR hook."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from snubridge.cli import main
from snubridge.converters.brian2_script import PARAMS_NAME, SCRIPT_NAME
from snubridge.params_file import save_params
from snubridge.spec import LayerSpec, NetworkSpec


@pytest.fixture
def params_file(tmp_path):
    rng = np.random.default_rng(41)
    layer = LayerSpec(
        "hidden",
        "snu_dense",
        kernel=rng.normal(0, 1, (4, 3)),
        threshold=np.full(3, 0.5),
        decay=0.75,
        activation="identity",
        input_shape=(4,),
    )
    spec = NetworkSpec([layer], (4,), dt=1e-3, name="cli_net")
    return save_params(spec, tmp_path / "model.h5")


def test_convert_to_brian2(params_file, tmp_path, capsys):
    out = tmp_path / "brian2"
    status = main(
        ["convert", str(params_file), "--out", str(out), "--target", "cython"]
    )
    assert status == 0
    assert (out / SCRIPT_NAME).is_file()
    assert (out / PARAMS_NAME).is_file()
    assert "Wrote Brian2 script" in capsys.readouterr().out


def test_convert_missing_model(tmp_path, capsys):
    status = main(["convert", str(tmp_path / "absent.h5"), "--out", str(tmp_path)])
    assert status == 2
    assert "does not exist" in capsys.readouterr().err


def test_convert_wrong_suffix(tmp_path, capsys):
    model = tmp_path / "model.txt"
    model.write_text("not a model")
    status = main(["convert", str(model), "--out", str(tmp_path / "x")])
    assert status == 2
    assert ".keras" in capsys.readouterr().err


@pytest.mark.skipif(
    importlib.util.find_spec("snubridge.converters.nir_io") is None,
    reason="snubridge.converters.nir_io is not installed",
)
def test_convert_to_nir(params_file, tmp_path):
    target = tmp_path / "graph.nir"
    status = main(["convert", str(params_file), "--to", "nir", "--out", str(target)])
    assert status == 0
    assert target.is_file()

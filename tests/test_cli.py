"""Command line: help texts, one-line errors and NIR conversions."""

from __future__ import annotations

import numpy as np
import pytest

from snubridge import load_params, save_params
from snubridge.cli import SUBCOMMANDS, main, option_hint
from snubridge.spec import LayerSpec, NetworkSpec


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: snubridge" in capsys.readouterr().out


def _identity_network() -> NetworkSpec:
    rng = np.random.default_rng(9)
    return NetworkSpec(
        layers=[
            LayerSpec(
                "hidden",
                "snu_dense",
                kernel=rng.normal(0.2, 0.5, (7, 5)),
                threshold=rng.uniform(0.5, 1.5, 5),
                decay=0.75,
                activation="identity",
                input_shape=(7,),
            ),
            LayerSpec(
                "out",
                "snu_dense",
                kernel=rng.normal(0.2, 0.5, (5, 3)),
                threshold=np.ones(3),
                decay=0.9,
                activation="identity",
                input_shape=(5,),
            ),
        ],
        input_shape=(7,),
        precision="float64",
    ).validate()


def test_nir_round_trip_through_cli(tmp_path):
    spec = _identity_network()
    source = save_params(spec, tmp_path / "net.h5")
    assert main(["convert", str(source), "--to", "nir", "--out", str(tmp_path)]) == 0
    graph = tmp_path / f"{spec.name}.nir"
    assert graph.is_file()
    back = tmp_path / "back.h5"
    status = main(
        ["convert", str(graph), "--dt", "0.001", "--to", "h5", "--out", str(back)]
    )
    assert status == 0
    again = load_params(back)
    for first, second in zip(spec.layers, again.layers, strict=True):
        np.testing.assert_allclose(second.kernel, first.kernel, rtol=1e-12)
        np.testing.assert_allclose(second.threshold, first.threshold, rtol=1e-12)
        assert second.decay == pytest.approx(first.decay, abs=1e-15)


def test_nir_input_needs_dt(tmp_path, capsys):
    spec = _identity_network()
    source = save_params(spec, tmp_path / "net.h5")
    main(["convert", str(source), "--to", "nir", "--out", str(tmp_path / "g.nir")])
    status = main(["convert", str(tmp_path / "g.nir"), "--to", "h5", "--out", "x.h5"])
    assert status == 2
    error = capsys.readouterr().err
    assert "needs --dt" in error
    assert "Traceback" not in error


def test_file_system_error_is_one_line(tmp_path, capsys):
    source = save_params(_identity_network(), tmp_path / "net.h5")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status = main(["convert", str(source), "--out", str(blocker / "inside")])
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert error[0].startswith("snubridge convert: error:")


def test_bad_training_option_is_one_line(capsys):
    status = main(["train", "--steps", "0", "--out", "unused"])
    assert status == 2
    error = capsys.readouterr().err
    assert "n_steps must be a positive integer" in error
    assert "(set with --steps)" in error


def test_option_hint_names_deploy_option():
    message = "CrossbarConfig.adc_bits must lie in 1..16 bits, received 40."
    assert option_hint("deploy", message) == " (set with --adc-bits)"


def test_option_hint_empty_without_field():
    assert option_hint("deploy", "'x.h5' is not a readable HDF5 file.") == ""
    assert option_hint("deploy", "n_steps (--steps) must be >= 1.") == ""
    assert option_hint("deploy", "n_steps must be >= 1; pass --steps.") == ""
    # A field name used as an ordinary word gets no hint.
    assert option_hint("deploy", "the array was read three times.") == ""


def test_pipeline_error_names_option(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["pipeline", "--out", str(out), "--drift-tolerance", "-1"])
    assert status == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert error[0].endswith("(set with --drift-tolerance)")
    assert not out.exists()

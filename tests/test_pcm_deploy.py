"""Deployment of specs on PCM crossbars, CLI, quantisation and energy estimate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from snubridge.cli import main
from snubridge.errors import DeviceError
from snubridge.params_file import save_params
from snubridge.pcm.crossbar import CrossbarConfig
from snubridge.pcm.deploy import (
    EmulatorHook,
    deploy,
    program_network,
    synaptic_matrices,
)
from snubridge.pcm.devices import joshi_2020, nandakumar_2018
from snubridge.pcm.energy import EnergyConstants, estimate_inference, reads_per_sample
from snubridge.pcm.quantize import precision_sweep, quantize_spec, quantize_weights
from snubridge.reference import simulate
from snubridge.spec import LayerSpec, NetworkSpec

IDEAL = CrossbarConfig(
    dac_bits=None,
    adc_bits=None,
    adc_range=None,
    read_noise=False,
    tile_rows=7,
    tile_cols=5,
)


def _ideal_device():
    return joshi_2020(
        programming_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0
    )


def _mixed_spec(rng: np.random.Generator) -> NetworkSpec:
    """Conv, flatten, recurrent and readout layers with asymmetric weights."""
    conv = LayerSpec(
        name="conv",
        kind="snu_conv2d",
        kernel=rng.normal(0, 0.5, (3, 2, 2, 3)),
        threshold=np.array([0.3, 0.5, 0.4]),
        decay=0.7,
        input_shape=(5, 4, 2),
    )
    flat = LayerSpec(name="flat", kind="flatten", input_shape=(3, 3, 3))
    recurrent = LayerSpec(
        name="rec",
        kind="snu_recurrent",
        kernel=rng.normal(0, 0.4, (27, 9)),
        recurrent_kernel=rng.normal(0, 0.3, (9, 9)),
        threshold=np.full(9, 0.4),
        bias=np.linspace(-0.1, 0.1, 9),
        decay=0.8,
        input_shape=(27,),
    )
    readout = LayerSpec(
        name="out",
        kind="readout",
        kernel=rng.normal(0, 0.5, (9, 4)),
        bias=np.array([0.1, -0.2, 0.0, 0.05]),
        readout_mode="mean",
        readout_activation="softmax",
        input_shape=(9,),
    )
    return NetworkSpec(
        [conv, flat, recurrent, readout], input_shape=(5, 4, 2)
    ).validate()


def _dense_spec(rng: np.random.Generator) -> NetworkSpec:
    hidden = LayerSpec(
        name="hidden",
        kind="snu_dense",
        kernel=rng.normal(0, 0.4, (30, 16)),
        threshold=np.full(16, 0.5),
        decay=0.8,
        input_shape=(30,),
    )
    readout = LayerSpec(
        name="out",
        kind="readout",
        kernel=rng.normal(0, 0.5, (16, 3)),
        bias=np.array([0.05, -0.1, 0.0]),
        readout_mode="mean",
        readout_activation="softmax",
        input_shape=(16,),
    )
    return NetworkSpec([hidden, readout], input_shape=(30,)).validate()


def test_synaptic_matrices_keys_and_shapes():
    spec = _mixed_spec(np.random.default_rng(0))
    matrices = synaptic_matrices(spec)
    assert list(matrices) == ["conv", "rec", "rec/recurrent", "out"]
    assert matrices["conv"].shape == (3 * 2 * 2, 3)
    np.testing.assert_array_equal(
        matrices["conv"], spec.layers[0].kernel.reshape(12, 3)
    )
    assert matrices["rec/recurrent"].shape == (9, 9)


def test_unmappable_layer_names_layer():
    spec = _dense_spec(np.random.default_rng(0))
    spec.layers[0].kernel = None
    with pytest.raises(DeviceError, match="'hidden'"):
        synaptic_matrices(spec)
    spec.layers[0].kind = "snu_lstm"
    with pytest.raises(DeviceError, match="'hidden' of kind 'snu_lstm'"):
        synaptic_matrices(spec)


def test_ideal_emulator_matches_reference_simulation():
    rng = np.random.default_rng(1)
    spec = _mixed_spec(rng)
    inputs = (rng.random((6, 4, 5, 4, 2)) < 0.4).astype(float)
    matrices = program_network(spec, _ideal_device(), IDEAL, rng)
    states = {key: matrix.state(86400.0, rng) for key, matrix in matrices.items()}
    emulated = simulate(spec, inputs, matmul=EmulatorHook(states, rng))
    exact = simulate(spec, inputs)
    # float32 crossbar arithmetic: outputs agree to single precision.
    np.testing.assert_allclose(emulated.outputs["out"], exact.outputs["out"], atol=1e-5)
    np.testing.assert_array_equal(emulated.outputs["conv"], exact.outputs["conv"])
    tiles = {key: len(matrix.tiles) for key, matrix in matrices.items()}
    assert tiles == {"conv": 2, "rec": 8, "rec/recurrent": 4, "out": 2}


def test_deploy_report_and_files(tmp_path):
    rng = np.random.default_rng(2)
    spec = _dense_spec(rng)
    inputs = (rng.random((80, 12, 30)) < 0.3).astype(float)
    labels = simulate(spec, inputs).outputs["out"].argmax(axis=1)
    report = deploy(
        spec,
        inputs,
        labels,
        device=joshi_2020(),
        times={"1 s": 1.0, "1 day": 86400.0},
        seed=3,
    )
    assert report.software == 1.0
    assert report.devices == 2 * (30 * 16 + 16 * 3)
    assert report.tiles == 2
    assert set(report.compensated) == {"1 s", "1 day"}
    assert all(0.0 <= value <= 1.0 for value in report.uncompensated.values())
    # Drift lowers conductances, so the compensation factor exceeds 1 after a day.
    assert report.compensation_factors["1 day"]["hidden"] > 1.2
    data = report.to_dict()
    json.dumps(data)
    assert "1 day" in report.table()
    paths = report.save(tmp_path)
    assert json.loads(paths["json"].read_text())["devices"] == report.devices
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_deploy_ideal_device_keeps_accuracy():
    rng = np.random.default_rng(4)
    spec = _dense_spec(rng)
    inputs = (rng.random((60, 10, 30)) < 0.3).astype(float)
    labels = simulate(spec, inputs).outputs["out"].argmax(axis=1)
    config = CrossbarConfig(
        dac_bits=None, adc_bits=None, adc_range=None, read_noise=False
    )
    report = deploy(
        spec,
        inputs,
        labels,
        device=_ideal_device(),
        crossbar=config,
        times=[1.0, 365 * 86400.0],
    )
    assert report.compensated == {"1 s": 1.0, "1 year": 1.0}


def test_deploy_music_frame_nll():
    rng = np.random.default_rng(5)
    hidden = LayerSpec(
        name="h",
        kind="snu_dense",
        kernel=rng.normal(0, 0.5, (6, 5)),
        threshold=np.zeros(5),
        output="sigmoid",
        decay=0.8,
        input_shape=(6,),
    )
    output = LayerSpec(
        name="o",
        kind="snu_dense",
        kernel=rng.normal(0, 0.5, (5, 6)),
        threshold=np.zeros(6),
        output="sigmoid",
        decay=0.8,
        input_shape=(5,),
    )
    spec = NetworkSpec([hidden, output], input_shape=(6,)).validate()
    inputs = (rng.random((4, 9, 6)) < 0.3).astype(float)
    targets = (rng.random((4, 9, 6)) < 0.3).astype(float)
    mask = np.ones((4, 9))
    mask[0, 6:] = 0
    config = CrossbarConfig(
        dac_bits=None, adc_bits=None, adc_range=None, read_noise=False
    )
    report = deploy(
        spec,
        inputs,
        targets,
        task="music",
        mask=mask,
        device=_ideal_device(),
        crossbar=config,
        times=[60.0],
    )
    p = simulate(spec, inputs).outputs["o"]
    frame = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).sum(axis=-1)
    expected = (frame * mask).sum() / mask.sum()
    assert report.software == pytest.approx(expected, rel=1e-9)
    assert report.compensated["60 s"] == pytest.approx(expected, rel=1e-5)
    assert report.metric == "frame_nll"


def test_deploy_rejects_bad_arguments():
    rng = np.random.default_rng(6)
    spec = _dense_spec(rng)
    inputs = np.zeros((3, 2, 30))
    with pytest.raises(DeviceError, match="task"):
        deploy(spec, inputs, np.zeros(3), task="regression")
    with pytest.raises(DeviceError, match="positive"):
        deploy(spec, inputs, np.zeros(3), times=[-1.0])
    with pytest.raises(ValueError, match="shape"):
        deploy(spec, np.zeros((3, 2, 29)), np.zeros(3))


def test_cli_deploy_writes_report(tmp_path, capsys):
    rng = np.random.default_rng(7)
    spec = _dense_spec(rng)
    inputs = (rng.random((40, 8, 30)) < 0.3).astype(np.float32)
    labels = simulate(spec, inputs).outputs["out"].argmax(axis=1)
    model = save_params(spec, tmp_path / "model.h5")
    data = tmp_path / "data.npz"
    np.savez(data, inputs=inputs, labels=labels)
    status = main(
        [
            "deploy",
            str(model),
            "--backend",
            "pcm",
            "--data",
            str(data),
            "--times",
            "1",
            "86400",
            "--output",
            str(tmp_path / "report"),
            "--device-model",
            "pulse",
            "--programming",
            "verify",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "1 day" in printed
    report = json.loads((tmp_path / "report" / "pcm_deploy.json").read_text())
    assert report["device_model"]["name"] == "pulse"
    assert (tmp_path / "report" / "pcm_deploy.png").exists()


def test_cli_deploy_bad_tile_size(tmp_path, capsys):
    spec = _dense_spec(np.random.default_rng(8))
    model = save_params(spec, tmp_path / "model.h5")
    data = tmp_path / "data.npz"
    np.savez(data, inputs=np.zeros((2, 3, 30)), labels=np.zeros(2))
    status = main(["deploy", str(model), "--data", str(data), "--tile-size", "0"])
    assert status == 2
    assert "tile_rows" in capsys.readouterr().err


def test_quantize_weights_hand_computed():
    weights = np.array([[0.9, -0.2], [0.35, -0.6]])
    # 2 bits: one level per sign, step = 0.9.
    np.testing.assert_allclose(
        quantize_weights(weights, 2, clip="max"), [[0.9, 0.0], [0.0, -0.9]]
    )
    # 3 bits: three levels per sign, step = 0.3.
    np.testing.assert_allclose(
        quantize_weights(weights, 3, clip="max"), [[0.9, -0.3], [0.3, -0.6]]
    )
    # 1 bit: sign times mean |w| = 0.5125.
    np.testing.assert_allclose(
        quantize_weights(weights, 1), [[0.5125, -0.5125], [0.5125, -0.5125]]
    )
    # Per column, 2 bits: steps 0.9 and 0.6.
    np.testing.assert_allclose(
        quantize_weights(weights, 2, per="column", clip="max"),
        [[0.9, 0.0], [0.0, -0.6]],
    )
    with pytest.raises(DeviceError, match="bits"):
        quantize_weights(weights, 9)
    with pytest.raises(DeviceError, match="bits"):
        quantize_weights(weights, 0)


def test_quantize_mse_clip_beats_max_clip():
    rng = np.random.default_rng(11)
    weights = rng.standard_normal((400, 30))
    for bits in (2, 3, 4):
        best = quantize_weights(weights, bits)
        plain = quantize_weights(weights, bits, clip="max")
        assert np.sum((best - weights) ** 2) < np.sum((plain - weights) ** 2)
        assert len(np.unique(best)) <= 2**bits - 1
    # Ternary Gaussian weights: the optimal bound is near 1.22 sigma (threshold
    # 0.61 sigma), found here by brute force over a fine grid.
    ternary = quantize_weights(weights, 2)
    level = np.abs(ternary).max()
    grid = np.linspace(0.2, 3.0, 2801)
    errors = [
        np.sum((np.clip(np.rint(weights / c), -1, 1) * c - weights) ** 2) for c in grid
    ]
    assert abs(level - grid[int(np.argmin(errors))]) < np.abs(weights).max() / 64


def test_quantize_spec_copies_and_sweeps():
    rng = np.random.default_rng(9)
    spec = _mixed_spec(rng)
    original = spec.layers[2].recurrent_kernel.copy()
    quantized = quantize_spec(spec, 2)
    np.testing.assert_array_equal(spec.layers[2].recurrent_kernel, original)
    assert len(np.unique(quantized.layers[2].recurrent_kernel)) <= 3
    assert quantized.metadata["weight_bits"] == 2
    dense = _dense_spec(rng)
    inputs = (rng.random((50, 10, 30)) < 0.3).astype(float)
    labels = simulate(dense, inputs).outputs["out"].argmax(axis=1)
    sweep = precision_sweep(dense, inputs, labels, bits=(1, 8))
    assert sweep["full_precision"] == 1.0
    assert sweep["bits"][8] >= 0.9
    assert sweep["bits"][1] < sweep["bits"][8]


def test_energy_counts_hand_computed():
    rng = np.random.default_rng(10)
    spec = _mixed_spec(rng)
    assert reads_per_sample(spec, 4) == {
        "conv": 9 * 4,
        "rec": 4,
        "rec/recurrent": 4,
        "out": 4,
    }
    matrices = program_network(spec, nandakumar_2018(), IDEAL, rng)
    constants = EnergyConstants(dac_energy=1.0, adc_energy=1000.0, read_voltage=1e-9)
    estimate = estimate_inference(spec, matrices, 4, constants=constants)
    # conv: 12 x 3 on 7 x 5 tiles (2 row tiles, 1 column tile), 36 reads.
    conv = estimate["per_matrix"]["conv"]
    assert conv["dac_energy_j"] == pytest.approx(36 * 12 * 1)
    assert conv["adc_energy_j"] == pytest.approx(36 * 3 * 2 * 1000.0)
    # rec: 27 x 9 on 4 row tiles and 2 column tiles, 4 reads.
    rec = estimate["per_matrix"]["rec"]
    assert rec["dac_energy_j"] == pytest.approx(4 * 27 * 2)
    assert rec["adc_energy_j"] == pytest.approx(4 * 9 * 4 * 1000.0)
    assert estimate["multiply_accumulates"] == 36 * 36 + 4 * 243 + 4 * 81 + 4 * 36
    assert "estimate" in estimate["note"]

"""Layer-by-layer comparison of two simulator runs and the first divergence."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from snubridge.errors import EquivalenceError
from snubridge.reference import SimulationResult, simulate
from snubridge.spec import LayerSpec, NetworkSpec
from snubridge.validation import compare
from snubridge.validation.compare import compare_results


def threshold_spec(seed: int = 0) -> NetworkSpec:
    """Dense then recurrent SNU with decimal weights and thresholds.

    Sums such as 0.1 + 0.2 land on the threshold 0.3 in exact arithmetic, so
    float64 and float32 round them to opposite sides and real threshold
    mismatches appear.
    """
    rng = np.random.default_rng(seed)
    n_in, h1, h2 = 30, 25, 15
    return NetworkSpec(
        layers=[
            LayerSpec(
                name="l1",
                kind="snu_dense",
                kernel=rng.choice(
                    [0.1, 0.2, 0.3, 0.4, -0.1, -0.2, -0.3], size=(n_in, h1)
                ),
                threshold=rng.choice([0.3, 0.6, 0.7], h1),
                decay=0.5,
                input_shape=(n_in,),
            ),
            LayerSpec(
                name="l2",
                kind="snu_recurrent",
                kernel=rng.choice([0.1, 0.2, 0.3, -0.1, -0.2, -0.3], size=(h1, h2)),
                recurrent_kernel=rng.choice([0.1, -0.2, 0.0], size=(h2, h2)),
                threshold=rng.choice([0.6, 0.9], h2),
                decay=0.75,
                input_shape=(h1,),
            ),
            LayerSpec(
                name="out",
                kind="readout",
                kernel=rng.normal(0.0, 0.3, (h2, 4)),
                bias=np.array([0.1, -0.2, 0.0, 0.3]),
                input_shape=(h2,),
            ),
        ],
        input_shape=(n_in,),
        precision="float64",
    ).validate()


def conv_spec(seed: int = 1) -> NetworkSpec:
    rng = np.random.default_rng(seed)
    conv = LayerSpec(
        name="conv",
        kind="snu_conv2d",
        kernel=rng.normal(0.3, 0.4, (3, 2, 2, 3)),
        threshold=np.array([0.9, 1.0, 1.1]),
        bias=np.array([0.05, -0.02, 0.0]),
        decay=0.8,
        input_shape=(6, 5, 2),
    )
    flat = LayerSpec(name="flat", kind="flatten", input_shape=conv.output_shape)
    units = int(np.prod(conv.output_shape))
    dense = LayerSpec(
        name="dense",
        kind="snu_dense",
        kernel=rng.normal(0.1, 0.3, (units, 7)),
        threshold=np.full(7, 1.0),
        decay=0.9,
        input_shape=(units,),
    )
    return NetworkSpec(layers=[conv, flat, dense], input_shape=(6, 5, 2)).validate()


def spikes(shape, rate=0.3, seed=3) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) < rate).astype(np.float64)


@pytest.fixture(scope="module")
def runs():
    spec = threshold_spec()
    inputs = spikes((16, 60, 30))
    exact = simulate(spec, inputs)
    single = simulate(spec, inputs, dtype=np.float32)
    return spec, inputs, exact, single


def test_float64_runs_identical(runs):
    spec, inputs, exact, _ = runs
    again = simulate(spec, inputs)
    result = compare_results(spec, inputs, exact, again)
    assert result.identical
    assert result.first_divergence is None
    assert result.metric("mismatch_fraction") == 0.0
    assert result.metric("van_rossum") == 0.0
    assert result.metric("victor_purpura") == 0.0
    assert result.metric("gamma") == 1.0
    assert result.activity_similarity == 1.0
    assert result.check({"mismatch_fraction": 0.0, "gamma": 1.0}) == []


def test_float32_mismatches_are_rounding(runs):
    spec, inputs, exact, single = runs
    result = compare_results(
        spec, inputs, exact, single, precisions=("float64", "float32")
    )
    first_layer = result.layers["l1"]
    assert first_layer.mismatches > 0
    assert 0 < first_layer.mismatch_fraction < 0.05
    assert first_layer.causes["unexplained"] == 0
    assert first_layer.causes["rounding"] > 0
    assert sum(first_layer.causes.values()) == first_layer.mismatches
    assert result.metric("unexplained_mismatches") == 0
    divergence = result.first_divergence
    assert divergence.classification == compare.ROUNDING
    assert abs(divergence.reference_margin) < 1e-6
    assert abs(divergence.candidate_margin) < 1e-6
    assert (
        abs(divergence.reference_state - divergence.candidate_state)
        <= divergence.tolerance
    )
    # Every listed rounding mismatch straddles the threshold within its bound.
    for record in first_layer.listed:
        if record["cause"] == "rounding":
            gap = abs(record["reference_state"] - record["candidate_state"])
            assert gap <= record["tolerance"]


def test_first_divergence_is_earliest(runs):
    spec, inputs, exact, single = runs
    result = compare_results(
        spec, inputs, exact, single, precisions=("float64", "float32")
    )
    differs = exact.outputs["l1"] != single.outputs["l1"]
    step = int(np.argwhere(differs)[:, 1].min())
    at_step = np.argwhere(differs[:, step])
    assert result.first_divergence.layer == "l1"
    assert result.first_divergence.step == step
    assert result.first_divergence.sample == int(at_step[0, 0])
    assert result.first_divergence.neuron == int(at_step[0, 1])


def test_perturbed_weight_is_bug(runs):
    spec, inputs, exact, _ = runs
    broken = copy.deepcopy(spec)
    # One weight of output neuron 11 of the second layer, from input neuron 4.
    broken.layers[1].kernel[4, 11] += 0.05
    result = compare_results(spec, inputs, exact, simulate(broken, inputs))
    assert result.layers["l1"].identical
    assert not result.layers["l2"].identical
    divergence = result.first_divergence
    assert divergence.layer == "l2"
    assert divergence.neuron == 11
    assert divergence.classification == compare.BUG
    assert abs(
        divergence.reference_state - divergence.candidate_state
    ) == pytest.approx(0.05, rel=1e-6)
    assert result.layers["l2"].causes["unexplained"] > 0
    assert result.check({"unexplained_mismatches": 0})


def test_transposed_kernel_is_caught(runs):
    spec, inputs, exact, _ = runs
    square = copy.deepcopy(spec)
    square.layers[1].recurrent_kernel = square.layers[1].recurrent_kernel.T.copy()
    result = compare_results(spec, inputs, exact, simulate(square, inputs))
    assert not result.identical
    assert result.first_divergence.classification == compare.BUG


def test_later_layers_count_as_propagated(runs):
    spec, inputs, exact, _ = runs
    broken = copy.deepcopy(spec)
    broken.layers[0].kernel[7, 2] -= 0.3
    result = compare_results(spec, inputs, exact, simulate(broken, inputs))
    assert result.first_divergence.layer == "l1"
    assert result.first_divergence.neuron == 2
    second = result.layers["l2"]
    assert second.mismatches > 0
    assert second.causes["propagated"] == second.mismatches
    assert result.layers["out"].max_output_difference > 0


def test_spike_count_difference_per_neuron(runs):
    spec, inputs, exact, _ = runs
    edited = SimulationResult(
        outputs={k: v.copy() for k, v in exact.outputs.items()},
        states=dict(exact.states),
    )
    fired = np.argwhere(edited.outputs["l1"][:, :, 5] == 1)
    sample, step = fired[0]
    edited.outputs["l1"][sample, step, 5] = 0.0
    result = compare_results(spec, inputs, exact, edited)
    counts = result.layers["l1"].spike_count_difference
    assert counts[5] == -1
    assert np.count_nonzero(counts) == 1
    assert result.layers["l1"].mismatches == 1
    assert result.metric("spike_count_difference") == 1
    assert result.layers["l1"].identical_neuron_fraction == pytest.approx(24 / 25)


def delayed(result: SimulationResult, steps: int) -> SimulationResult:
    """Return ``result`` with every timed array delayed by ``steps`` zero steps."""

    def shift(values):
        values = np.asarray(values)
        if values.ndim < 3:
            return values
        pad = np.zeros_like(values[:, :steps])
        return np.concatenate([pad, values[:, :-steps]], axis=1)

    return SimulationResult(
        outputs={k: shift(v) for k, v in result.outputs.items()},
        states={k: shift(v) for k, v in result.states.items()},
    )


def test_latency_alignment(runs):
    spec, inputs, exact, _ = runs
    late = delayed(exact, 1)
    unaligned = compare_results(spec, inputs, exact, late)
    assert not unaligned.identical
    aligned = compare_results(spec, inputs, exact, late, latency=1)
    assert aligned.identical
    assert aligned.steps == inputs.shape[1] - 1


def test_conv_divergence_channel():
    spec = conv_spec()
    inputs = spikes((6, 25, 6, 5, 2), rate=0.4, seed=8)
    broken = copy.deepcopy(spec)
    broken.layers[0].kernel[2, 1, 0, 1] += 0.2  # output channel 1 only
    result = compare_results(
        spec, inputs, simulate(spec, inputs), simulate(broken, inputs)
    )
    divergence = result.first_divergence
    assert divergence.layer == "conv"
    assert len(divergence.neuron_index) == 3
    assert divergence.neuron_index[2] == 1
    assert divergence.classification == compare.BUG
    assert divergence.threshold == pytest.approx(1.0)


def test_rounding_bound_is_tight_for_float64(runs):
    spec, inputs, exact, _ = runs
    layer = spec.layers[0]
    bound = compare.rounding_bound(
        layer,
        inputs,
        exact.states["l1"],
        exact.outputs["l1"],
        ("float64", "float64"),
    )
    single = compare.rounding_bound(
        layer,
        inputs,
        exact.states["l1"],
        exact.outputs["l1"],
        ("float64", "float32"),
    )
    assert np.all(bound >= 0)
    assert np.max(bound) < 1e-12
    assert np.all(single > bound)
    # The bound covers the real float32 error of every membrane.
    float32 = simulate(spec, inputs, dtype=np.float32)
    same_history = np.cumsum(exact.outputs["l1"] != float32.outputs["l1"], axis=1) == 0
    error = np.abs(exact.states["l1"] - float32.states["l1"])
    assert np.all(error[same_history] <= single[same_history])


def test_missing_layer_rejected(runs):
    spec, inputs, exact, _ = runs
    partial = dataclasses.replace(
        exact, outputs={k: v for k, v in exact.outputs.items() if k != "l2"}
    )
    with pytest.raises(EquivalenceError, match="l2"):
        compare_results(spec, inputs, exact, partial)


def test_unknown_metric_rejected(runs):
    spec, inputs, exact, _ = runs
    result = compare_results(spec, inputs, exact, exact)
    with pytest.raises(EquivalenceError, match="known metrics"):
        result.check({"van_rosum": 0.0})


def test_report_is_json(runs):
    import json

    spec, inputs, exact, single = runs
    result = compare_results(
        spec, inputs, exact, single, precisions=("float64", "float32")
    )
    text = json.dumps(result.to_dict(), allow_nan=False)
    data = json.loads(text)
    assert data["first_divergence"]["classification"] == compare.ROUNDING
    assert data["layers"]["l1"]["mismatches"] == result.layers["l1"].mismatches


def test_missing_states_reported(runs):
    spec, inputs, exact, single = runs
    stateless = SimulationResult(outputs=dict(single.outputs), states={})
    result = compare_results(
        spec, inputs, exact, stateless, precisions=("float64", "float32")
    )
    assert result.first_divergence.classification == compare.NO_STATES
    assert result.layers["l1"].causes["rounding"] == 0

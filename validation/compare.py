"""Compare two back ends' runs of one network, layer by layer and step by step.

Both runs are :class:`~snubridge.reference.SimulationResult` objects from the
same ``spec`` and the same inputs: outputs ``(samples, steps, *shape)`` and
membrane states ``(samples, steps, units)`` per layer. For every spiking layer
the comparison reports exact identity per neuron and step, the fraction of
mismatching (sample, step, neuron) triples, spike-count differences per neuron,
the grid distances of :mod:`snubridge.validation.metrics`, and a cause for
every mismatch:

``propagated``
    the neuron's history already differed: its layer inputs differed at this
    or an earlier step, the neuron itself mismatched earlier (so its reset
    differed), or, in recurrent and laterally inhibited layers, any neuron of
    the layer mismatched earlier.
``rounding``
    the history was identical and the two membrane values differ by no more
    than the float rounding bound below, so the two back ends computed the
    same number to within rounding and it lay at the threshold.
``unexplained``
    the history was identical but the membranes differ by more than rounding
    can explain: a conversion bug.

Rounding bound. A membrane update ``s_t = g(W x_t + b + H y_{t-1} + l s_{t-1}
(1 - r_{t-1}))`` is a sum of ``n`` products; computed in a dtype of unit
roundoff ``u = eps / 2`` its error is at most ``gamma_m * M_t`` with
``gamma_m = m u / (1 - m u)``, ``m = n + 3`` (the rounding of weights, inputs
and the products, Higham, *Accuracy and Stability of Numerical Algorithms*,
2nd ed., section 3.1) and ``M_t = |W| |x_t| + |b| + |H| |y_{t-1}| + l |s_{t-1}|
(1 - r_{t-1})``. The error carried in ``s_{t-1}`` decays with ``l`` and is
cleared by a reset to exactly zero, so the bound accumulates as ``E_t = l E_{t-1}
(1 - r_{t-1}) + gamma_m M_t``; ReLU clipping never increases it. The tolerance
of a pair of back ends is the sum of ``E_t`` for both precisions.

NOTE: two back ends that both compute in float64 can still differ in the last
bit, because TensorFlow's matrix products add in another order than Brian2's
synapses. Where a sum lands on the threshold (decimal weights can do that;
dyadic ones sum exactly), such pairs show up as ``rounding`` mismatches, not as
identical spikes.

The first divergence is the earliest mismatch in layer order, then step, then
sample and neuron: a divergence in one layer reaches every later layer, so only
the first one is a cause.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from snubridge.errors import EquivalenceError
from snubridge.reference import SimulationResult, input_projection
from snubridge.spec import LayerSpec, NetworkSpec
from snubridge.validation import metrics

logger = logging.getLogger(__name__)

ROUNDING = "float rounding at threshold"
BUG = "conversion bug"
NO_STATES = "unknown: no membrane states recorded"
CAUSES = ("rounding", "propagated", "unexplained")


@dataclasses.dataclass(frozen=True)
class MetricSettings:
    """Parameters of the grid distances.

    Attributes:
        van_rossum_tau: Time constant of the van Rossum kernel, in steps.
        victor_purpura_cost: Victor-Purpura cost of moving a spike by one step.
        gamma_window: Half-width of the coincidence window of Gamma, in steps.
    """

    van_rossum_tau: float = 5.0
    victor_purpura_cost: float = 0.5
    gamma_window: int = 1


@dataclasses.dataclass
class Divergence:
    """The first mismatch of two runs and the membrane values behind it.

    Attributes:
        layer: Layer name.
        neuron: Flat neuron index in the layer (C order of its output shape).
        neuron_index: The same index unravelled in the layer's output shape.
        sample: Sample index.
        step: Time step on the reference's grid.
        reference_spike, candidate_spike: The two outputs, 0 or 1.
        reference_state, candidate_state: Membrane values ``s_t`` (NaN when a
            back end recorded no states).
        threshold: Firing threshold of the neuron.
        reference_margin, candidate_margin: ``s_t - threshold`` on each side,
            with the threshold rounded to that side's precision.
        tolerance: Rounding bound of ``|reference_state - candidate_state|``.
        classification: ``ROUNDING``, ``BUG`` or ``NO_STATES``.
    """

    layer: str
    neuron: int
    neuron_index: tuple[int, ...]
    sample: int
    step: int
    reference_spike: int
    candidate_spike: int
    reference_state: float
    candidate_state: float
    threshold: float
    reference_margin: float
    candidate_margin: float
    tolerance: float
    classification: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["neuron_index"] = list(self.neuron_index)
        return {key: _json_number(value) for key, value in data.items()}

    def describe(self) -> str:
        """Return one line naming the place, the membranes and the cause."""
        return (
            f"layer {self.layer!r} neuron {self.neuron} sample {self.sample} step "
            f"{self.step}: spikes {self.reference_spike}/{self.candidate_spike}, "
            f"margins {self.reference_margin:.3g}/{self.candidate_margin:.3g} "
            f"(tolerance {self.tolerance:.3g}): {self.classification}"
        )


@dataclasses.dataclass
class LayerComparison:
    """Agreement of one layer between the two runs.

    Attributes:
        name: Layer name.
        kind: Layer kind of the spec.
        spiking: True for step-output SNU layers, compared spike for spike.
        identical: Every compared output value is equal.
        pairs: Number of compared (sample, step, neuron) triples.
        mismatches: Number of triples whose spikes differ.
        mismatch_fraction: ``mismatches / pairs``.
        identical_neuron_fraction: Fraction of neurons whose trains are equal
            in every sample.
        spike_count_difference: Candidate minus reference spike count per
            neuron, summed over samples, ``(neurons,)``.
        causes: Number of mismatches per cause (see the module docstring).
        listed: The first mismatches in (step, sample, neuron) order with their
            membranes, margins, tolerance and cause.
        van_rossum: Mean van Rossum distance per train.
        victor_purpura: Mean Victor-Purpura distance per train.
        gamma: Mean coincidence factor over trains where it is defined.
        max_output_difference: Largest absolute output difference (the analog
            measure for readouts and sSNU layers).
        max_state_difference: Largest absolute membrane difference.
    """

    name: str
    kind: str
    spiking: bool
    identical: bool
    pairs: int
    mismatches: int = 0
    mismatch_fraction: float = 0.0
    identical_neuron_fraction: float = 1.0
    spike_count_difference: np.ndarray | None = None
    causes: dict[str, int] = dataclasses.field(default_factory=dict)
    listed: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    van_rossum: float = 0.0
    victor_purpura: float = 0.0
    gamma: float = 1.0
    max_output_difference: float = 0.0
    max_state_difference: float = math.nan

    @property
    def max_spike_count_difference(self) -> int:
        """Largest absolute spike-count difference of one neuron."""
        if self.spike_count_difference is None or self.spike_count_difference.size == 0:
            return 0
        return int(np.abs(self.spike_count_difference).max())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (per-neuron arrays as lists)."""
        data = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "spike_count_difference"
        }
        data["max_spike_count_difference"] = self.max_spike_count_difference
        if self.spike_count_difference is not None:
            data["spike_count_difference"] = [
                int(value) for value in self.spike_count_difference
            ]
        return _json_tree(data)


@dataclasses.dataclass
class Comparison:
    """Layer-by-layer agreement of two runs of one network.

    Attributes:
        names: Names of the reference and candidate back ends.
        precisions: Float precision each back end computed in.
        layers: Per-layer results, in network order.
        first_divergence: Earliest mismatch, or None when all rasters agree.
        activity_similarity: Cosine similarity of mean activity over all
            spiking layers (:func:`metrics.activity_similarity`).
        steps: Number of compared steps after latency alignment.
        samples: Number of samples.
        latency: Candidate steps of delay per layer that were removed.
        settings: Parameters of the distances.
    """

    names: tuple[str, str]
    precisions: tuple[str, str]
    layers: dict[str, LayerComparison]
    first_divergence: Divergence | None
    activity_similarity: float
    steps: int
    samples: int
    latency: dict[str, int]
    settings: MetricSettings

    @property
    def identical(self) -> bool:
        """True when every compared layer output is identical."""
        return all(layer.identical for layer in self.layers.values())

    @property
    def spikes_identical(self) -> bool:
        """True when every spiking layer's raster is identical.

        Readouts are sums of products that two back ends may add in another
        order, so :attr:`identical` can be False on float rounding alone.
        """
        return all(layer.identical for layer in self.spiking_layers)

    @property
    def spiking_layers(self) -> list[LayerComparison]:
        """Results of the spiking layers."""
        return [layer for layer in self.layers.values() if layer.spiking]

    def metric(self, name: str) -> float:
        """Return the network-wide value of a tolerance metric (see ``METRICS``)."""
        return METRICS[_metric_name(name)].extract(self)

    def check(self, tolerances: Mapping[str, float]) -> list[str]:
        """Return one message per tolerance this comparison fails (empty: passes).

        Raises:
            EquivalenceError: an unknown metric name.
        """
        return check_tolerances(self, tolerances)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every result."""
        return _json_tree(
            {
                "names": list(self.names),
                "precisions": list(self.precisions),
                "identical": self.identical,
                "samples": self.samples,
                "steps": self.steps,
                "latency": dict(self.latency),
                "settings": dataclasses.asdict(self.settings),
                "activity_similarity": self.activity_similarity,
                "first_divergence": (
                    None
                    if self.first_divergence is None
                    else self.first_divergence.to_dict()
                ),
                "layers": {
                    name: layer.to_dict() for name, layer in self.layers.items()
                },
                "metrics": {name: self.metric(name) for name in METRICS},
            }
        )


@dataclasses.dataclass(frozen=True)
class Metric:
    """A tolerance metric: how it is read from a comparison and which way passes.

    Attributes:
        name: Key in a suite's ``tolerances`` table.
        bound: ``"max"`` (the value must not exceed the tolerance) or ``"min"``.
        description: What the value is, with its unit.
        extract: Function of a :class:`Comparison` returning the value.
    """

    name: str
    bound: str
    description: str
    extract: Any


def _worst(
    comparison: Comparison, field: str, bound: str, spiking: bool = True
) -> float:
    values = [
        float(getattr(layer, field))
        for layer in comparison.layers.values()
        if layer.spiking == spiking and not math.isnan(float(getattr(layer, field)))
    ]
    if not values:
        return 0.0 if bound == "max" else 1.0
    return max(values) if bound == "max" else min(values)


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(
            "mismatch_fraction",
            "max",
            "largest fraction of mismatching (sample, step, neuron) triples of a layer",
            lambda c: _worst(c, "mismatch_fraction", "max"),
        ),
        Metric(
            "unexplained_mismatches",
            "max",
            "number of mismatches that neither rounding nor propagation explains",
            lambda c: float(
                sum(layer.causes.get("unexplained", 0) for layer in c.layers.values())
            ),
        ),
        Metric(
            "spike_count_difference",
            "max",
            "largest absolute spike-count difference of a neuron, summed over samples",
            lambda c: _worst(c, "max_spike_count_difference", "max"),
        ),
        Metric(
            "van_rossum",
            "max",
            "largest mean van Rossum distance per train of a layer",
            lambda c: _worst(c, "van_rossum", "max"),
        ),
        Metric(
            "victor_purpura",
            "max",
            "largest mean Victor-Purpura distance per train of a layer",
            lambda c: _worst(c, "victor_purpura", "max"),
        ),
        Metric(
            "gamma",
            "min",
            "smallest mean coincidence factor Gamma of a layer",
            lambda c: _worst(c, "gamma", "min"),
        ),
        Metric(
            "activity_similarity",
            "min",
            "cosine similarity of mean activity over all spiking layers",
            lambda c: float(c.activity_similarity),
        ),
        Metric(
            "max_abs_difference",
            "max",
            "largest absolute output difference of a non-spiking layer",
            lambda c: _worst(c, "max_output_difference", "max", spiking=False),
        ),
    )
}


def _metric_name(name: str) -> str:
    if name not in METRICS:
        raise EquivalenceError(
            f"Unknown metric {name!r}; known metrics are {', '.join(sorted(METRICS))}."
        )
    return name


def check_tolerances(
    comparison: Comparison, tolerances: Mapping[str, float]
) -> list[str]:
    """Return one message per failed tolerance; ``max`` metrics pass at equality.

    Raises:
        EquivalenceError: an unknown metric name or a non-numeric tolerance.
    """
    failures = []
    for name, limit in tolerances.items():
        metric = METRICS[_metric_name(name)]
        if isinstance(limit, bool) or not isinstance(limit, (int, float)):
            raise EquivalenceError(
                f"Tolerance {name!r} must be a number, received {limit!r}."
            )
        value = metric.extract(comparison)
        passed = value <= limit if metric.bound == "max" else value >= limit
        if math.isnan(value) or not passed:
            relation = (
                "above the maximum" if metric.bound == "max" else "below the minimum"
            )
            failures.append(f"{name} = {value:.6g} is {relation} {limit:g}")
    return failures


def _eps(precision: str) -> float:
    if precision not in ("float32", "float64"):
        raise EquivalenceError(
            f"precision {precision!r} is not supported; "
            "expected 'float32' or 'float64'."
        )
    return float(np.finfo(precision).eps)


def _gamma(count: int, precision: str) -> float:
    unit = _eps(precision) / 2.0
    product = count * unit
    return product / (1.0 - product)


def _flat(values: np.ndarray, samples: int, steps: int | None) -> np.ndarray:
    array = np.asarray(values)
    if steps is None:
        return array.reshape(samples, -1)
    return array.reshape(samples, array.shape[1], -1)


def _layer_input_getter(
    spec: NetworkSpec, inputs: np.ndarray, result: SimulationResult, side
):
    """Return a function of a layer index giving that layer's input from ``result``."""
    cache: dict[int, np.ndarray] = {}

    def output_of(index: int) -> np.ndarray:
        layer = spec.layers[index]
        if layer.name in result.outputs:
            return np.asarray(result.outputs[layer.name])
        if layer.kind == "flatten":
            values = input_of(index)
            return values.reshape(values.shape[0], values.shape[1], -1)
        raise EquivalenceError(
            f"The {side} run has no output for layer {layer.name!r}; run the back end "
            "so that it records every layer."
        )

    def input_of(index: int) -> np.ndarray:
        if index not in cache:
            cache[index] = np.asarray(inputs) if index == 0 else output_of(index - 1)
        return cache[index]

    return input_of


def _latencies(
    spec: NetworkSpec, latency: int | Mapping[str, int] | None
) -> dict[str, int]:
    names = [layer.name for layer in spec.layers]
    if latency is None:
        return {name: 0 for name in names}
    if isinstance(latency, Mapping):
        unknown = sorted(set(latency) - set(names))
        if unknown:
            raise EquivalenceError(
                f"latency names unknown layers {unknown}; "
                f"layers are {', '.join(names)}."
            )
        values = {name: latency.get(name, 0) for name in names}
    else:
        values = {name: latency for name in names}
    for name, value in values.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or value < 0
        ):
            raise EquivalenceError(
                f"latency of layer {name!r} must be a whole number of steps >= 0, "
                f"received {value!r}."
            )
    return {name: int(value) for name, value in values.items()}


def _align(values: np.ndarray, shift: int, steps: int) -> np.ndarray:
    return np.asarray(values)[:, shift : shift + steps]


def rounding_bound(
    layer: LayerSpec,
    layer_input: np.ndarray,
    states: np.ndarray,
    spikes: np.ndarray,
    precisions: tuple[str, str],
) -> np.ndarray:
    """Return the rounding bound ``E_t`` of every membrane, ``(samples, steps, units)``.

    ``E_t`` follows the recursion of the module docstring, summed over the two
    precisions. ``layer_input`` is the layer's input ``(samples, steps,
    *input_shape)``, and ``states`` and ``spikes`` are one run's membranes and
    outputs, flattened to ``(samples, steps, units)``.
    """
    absolute = dataclasses.replace(
        layer,
        kernel=np.abs(layer.kernel),
        bias=None if layer.bias is None else np.abs(layer.bias),
    )
    magnitude = input_projection(absolute, np.abs(np.asarray(layer_input, np.float64)))
    fan_in = int(np.prod(layer.kernel.shape[:-1]))
    if layer.kind == "snu_recurrent":
        fan_in += int(layer.recurrent_kernel.shape[0])
        previous = np.concatenate(
            [np.zeros_like(spikes[:, :1]), spikes[:, :-1]], axis=1
        )
        magnitude = magnitude + np.abs(previous) @ np.abs(layer.recurrent_kernel)
    terms = fan_in + (1 if layer.bias is not None else 0) + 2
    factor = sum(_gamma(terms + 3, precision) for precision in precisions)
    decay = float(layer.decay)
    bound = np.empty_like(magnitude)
    carried = np.zeros_like(magnitude[:, 0])
    reset = _reset_trace(layer, spikes)
    for step in range(magnitude.shape[1]):
        if step == 0:
            kept = np.zeros_like(carried)
            state_term = kept
        else:
            kept = 1.0 - reset[:, step - 1]
            state_term = decay * np.abs(states[:, step - 1]) * kept
        carried = decay * carried * kept + factor * (magnitude[:, step] + state_term)
        bound[:, step] = carried
    return bound


def _reset_trace(layer: LayerSpec, spikes: np.ndarray) -> np.ndarray:
    if layer.lateral_inhibition:
        return np.broadcast_to(spikes.max(axis=2, keepdims=True), spikes.shape)
    return spikes


def _first_step(mask: np.ndarray, axis: int, steps: int) -> np.ndarray:
    """Return the first index along ``axis`` where ``mask`` holds, else ``steps``."""
    return np.where(mask.any(axis=axis), mask.argmax(axis=axis), steps)


def compare_results(
    spec: NetworkSpec,
    inputs: np.ndarray,
    reference: SimulationResult,
    candidate: SimulationResult,
    *,
    precisions: tuple[str, str] = ("float64", "float64"),
    names: tuple[str, str] = ("reference", "candidate"),
    latency: int | Mapping[str, int] | None = None,
    settings: MetricSettings | None = None,
    max_listed: int = 100,
) -> Comparison:
    """Compare two runs of ``spec`` on ``inputs`` layer by layer.

    Args:
        spec: The network both runs computed.
        inputs: The shared input ``(samples, steps, *spec.input_shape)``.
        reference: Run of the first back end (for example Keras).
        candidate: Run of the second back end (for example Brian2).
        precisions: Float precision each run computed in; it sets the rounding
            tolerance (results may be stored in a wider dtype).
        names: Back-end names used in messages and reports.
        latency: Steps by which the candidate's layers lag the reference: an int
            for all layers or a mapping of layer name to steps. Candidate step
            ``t + latency`` is compared with reference step ``t``, and all layers
            are cut to the steps every layer covers.
        settings: Parameters of the distances.
        max_listed: How many mismatches per layer are listed with their cause.

    Returns:
        The :class:`Comparison`.

    Raises:
        EquivalenceError: a layer missing from a run, or mismatched shapes.
    """
    spec.validate()
    settings = settings or MetricSettings()
    precisions = (str(precisions[0]), str(precisions[1]))
    for precision in precisions:
        _eps(precision)
    shifts = _latencies(spec, latency)
    inputs = np.asarray(inputs)
    samples, total_steps = inputs.shape[:2]
    steps = total_steps - max(shifts.values())
    if steps <= 0:
        raise EquivalenceError(
            f"A latency of {max(shifts.values())} steps leaves none of the "
            f"{total_steps} steps to compare; run more steps."
        )
    reference_input = _layer_input_getter(spec, inputs, reference, names[0])
    candidate_input = _layer_input_getter(spec, inputs, candidate, names[1])
    layers: dict[str, LayerComparison] = {}
    first: Divergence | None = None
    rasters_a: list[np.ndarray] = []
    rasters_b: list[np.ndarray] = []
    for index, layer in enumerate(spec.layers):
        if layer.kind == "flatten":
            continue
        for side, result in zip(names, (reference, candidate), strict=True):
            if layer.name not in result.outputs:
                raise EquivalenceError(
                    f"The {side} run has no output for layer {layer.name!r}; both runs "
                    "must record every layer."
                )
        if not layer.is_spiking:
            layers[layer.name] = _compare_analog(
                layer, reference, candidate, shifts[layer.name], steps, samples
            )
            continue
        context = _SpikingContext(
            spec=spec,
            index=index,
            layer=layer,
            reference=reference,
            candidate=candidate,
            inputs_a=reference_input,
            inputs_b=candidate_input,
            shifts=shifts,
            steps=steps,
            samples=samples,
            precisions=precisions,
            names=names,
        )
        comparison, divergence, raster_a, raster_b = _compare_spiking(
            context, settings, max_listed
        )
        layers[layer.name] = comparison
        rasters_a.append(raster_a)
        rasters_b.append(raster_b)
        if first is None and divergence is not None:
            first = divergence
    similarity = metrics.activity_similarity(rasters_a, rasters_b)
    if first is not None:
        logger.info("First divergence: %s", first.describe())
    return Comparison(
        names=tuple(names),
        precisions=precisions,
        layers=layers,
        first_divergence=first,
        activity_similarity=similarity,
        steps=steps,
        samples=samples,
        latency=shifts,
        settings=settings,
    )


@dataclasses.dataclass
class _SpikingContext:
    spec: NetworkSpec
    index: int
    layer: LayerSpec
    reference: SimulationResult
    candidate: SimulationResult
    inputs_a: Any
    inputs_b: Any
    shifts: dict[str, int]
    steps: int
    samples: int
    precisions: tuple[str, str]
    names: tuple[str, str]

    def aligned_input(self, getter, side_is_candidate: bool) -> np.ndarray:
        values = getter(self.index)
        if self.index == 0 or not side_is_candidate:
            return _align(values, 0, self.steps)
        shift = self.shifts[self.spec.layers[self.index - 1].name]
        return _align(values, shift, self.steps)

    def states(self, result: SimulationResult, shift: int) -> np.ndarray | None:
        values = result.states.get(self.layer.name)
        if values is None:
            return None
        return _flat(
            _align(values, shift, self.steps), self.samples, self.steps
        ).astype(np.float64)


def _compare_spiking(
    context: _SpikingContext, settings: MetricSettings, max_listed: int
):
    layer = context.layer
    shift = context.shifts[layer.name]
    steps, samples = context.steps, context.samples
    raster_a = _flat(
        _align(context.reference.outputs[layer.name], 0, steps), samples, steps
    )
    raster_b = _flat(
        _align(context.candidate.outputs[layer.name], shift, steps), samples, steps
    )
    if raster_a.shape != raster_b.shape:
        raise EquivalenceError(
            f"Layer {layer.name!r}: the {context.names[0]} raster has shape "
            f"{raster_a.shape} but the {context.names[1]} raster {raster_b.shape} "
            "after alignment; both back ends must run the same samples, steps and "
            "neurons."
        )
    spikes_a = metrics._as_trains(
        raster_a, f"{context.names[0]} raster of {layer.name!r}"
    )
    spikes_b = metrics._as_trains(
        raster_b, f"{context.names[1]} raster of {layer.name!r}"
    )
    mismatch = spikes_a != spikes_b
    count = int(mismatch.sum())
    pairs = int(mismatch.size)
    states_a = context.states(context.reference, 0)
    states_b = context.states(context.candidate, shift)
    result = LayerComparison(
        name=layer.name,
        kind=layer.kind,
        spiking=True,
        identical=count == 0,
        pairs=pairs,
        mismatches=count,
        mismatch_fraction=count / pairs if pairs else 0.0,
        identical_neuron_fraction=float(np.mean(~mismatch.any(axis=(0, 1))))
        if mismatch.size
        else 1.0,
        spike_count_difference=(
            spikes_b.sum(axis=(0, 1)).astype(np.int64) - spikes_a.sum(axis=(0, 1))
        ),
        causes={cause: 0 for cause in CAUSES},
        max_output_difference=float(count > 0),
    )
    if (
        states_a is not None
        and states_b is not None
        and states_a.shape == states_b.shape
    ):
        result.max_state_difference = float(
            np.max(np.abs(states_a - states_b), initial=0.0)
        )
    result.van_rossum = float(
        metrics.van_rossum_distance(spikes_a, spikes_b, settings.van_rossum_tau).mean()
    )
    result.victor_purpura = float(
        metrics.victor_purpura_distance(
            spikes_a, spikes_b, settings.victor_purpura_cost
        ).mean()
    )
    gamma = metrics.coincidence_factor(spikes_a, spikes_b, settings.gamma_window)
    result.gamma = float(np.nanmean(gamma)) if np.any(~np.isnan(gamma)) else math.nan
    divergence = None
    if count:
        divergence = _explain(
            context, result, spikes_a, spikes_b, states_a, states_b, max_listed
        )
    return result, divergence, spikes_a, spikes_b


def _explain(context, result, spikes_a, spikes_b, states_a, states_b, max_listed):
    """Assign a cause to every mismatch and return the layer's first divergence."""
    layer = context.layer
    mismatch = spikes_a != spikes_b
    causes, tolerance = _mismatch_causes(
        context, mismatch, spikes_a, states_a, states_b
    )
    for code, cause in enumerate(CAUSES):
        result.causes[cause] = int(np.sum(mismatch & (causes == code)))
    threshold = np.tile(layer.threshold, layer.units // layer.threshold.size)
    # Mismatches in (step, sample, neuron) order: the earliest is the divergence.
    places = np.argwhere(np.moveaxis(mismatch, 1, 0))
    records = []
    for step, sample, neuron in places[: max(max_listed, 1)]:
        record = _record(
            threshold,
            spikes_a,
            spikes_b,
            states_a,
            states_b,
            tolerance,
            context.precisions,
            (int(sample), int(step), int(neuron)),
        )
        record["cause"] = CAUSES[int(causes[sample, step, neuron])]
        records.append(record)
    result.listed = records[:max_listed]
    first = records[0]
    if states_a is None or states_b is None:
        classification = NO_STATES
    elif first["cause"] == "rounding":
        classification = ROUNDING
    else:
        # NOTE: the earliest mismatch of the first diverging spiking layer is
        # "propagated" only when a non-spiking layer before it differed; that
        # case is reported as a bug too.
        classification = BUG
    return Divergence(
        layer=layer.name,
        neuron=first["neuron"],
        neuron_index=tuple(
            int(i) for i in np.unravel_index(first["neuron"], layer.output_shape)
        ),
        sample=first["sample"],
        step=first["step"],
        reference_spike=first["reference_spike"],
        candidate_spike=first["candidate_spike"],
        reference_state=first["reference_state"],
        candidate_state=first["candidate_state"],
        threshold=first["threshold"],
        reference_margin=first["reference_margin"],
        candidate_margin=first["candidate_margin"],
        tolerance=first["tolerance"],
        classification=classification,
    )


def _mismatch_causes(context, mismatch, spikes_a, states_a, states_b):
    """Return the cause (index into ``CAUSES``) and rounding bound of every triple."""
    layer = context.layer
    steps = context.steps
    step_index = np.arange(steps)[np.newaxis, :, np.newaxis]
    input_a = context.aligned_input(context.inputs_a, False)
    input_b = context.aligned_input(context.inputs_b, True)
    if input_a.shape != input_b.shape:
        raise EquivalenceError(
            f"Layer {layer.name!r}: its inputs have shapes {input_a.shape} and "
            f"{input_b.shape} in the two runs."
        )
    input_differs = (input_a != input_b).reshape(context.samples, steps, -1).any(axis=2)
    first_input = _first_step(input_differs, 1, steps)[:, np.newaxis, np.newaxis]
    first_own = _first_step(mismatch, 1, steps)[:, np.newaxis, :]
    propagated = (step_index >= first_input) | (step_index > first_own)
    if layer.kind == "snu_recurrent" or layer.lateral_inhibition:
        first_any = _first_step(mismatch.any(axis=2), 1, steps)
        propagated |= step_index > first_any[:, np.newaxis, np.newaxis]
    if states_a is not None and states_b is not None:
        tolerance = rounding_bound(
            layer, input_a, states_a, spikes_a.astype(np.float64), context.precisions
        )
        rounding = np.abs(states_a - states_b) <= tolerance
    else:
        tolerance = np.full(mismatch.shape, math.nan)
        rounding = np.zeros(mismatch.shape, bool)
    causes = np.where(propagated, 1, np.where(rounding, 0, 2))
    return causes, tolerance


def _record(
    threshold, spikes_a, spikes_b, states_a, states_b, tolerance, precisions, place
):
    """Describe one mismatch, each margin to the threshold in that side's dtype."""
    sample, step, neuron = place
    limit = float(threshold[neuron])
    limit_a, limit_b = (float(np.dtype(p).type(limit)) for p in precisions)
    state_a = math.nan if states_a is None else float(states_a[sample, step, neuron])
    state_b = math.nan if states_b is None else float(states_b[sample, step, neuron])
    return {
        "sample": sample,
        "step": step,
        "neuron": neuron,
        "reference_spike": int(spikes_a[sample, step, neuron]),
        "candidate_spike": int(spikes_b[sample, step, neuron]),
        "reference_state": state_a,
        "candidate_state": state_b,
        "threshold": limit,
        "reference_margin": state_a - limit_a,
        "candidate_margin": state_b - limit_b,
        "tolerance": float(tolerance[sample, step, neuron]),
    }


def _compare_analog(
    layer, reference, candidate, shift, steps, samples
) -> LayerComparison:
    """Compare a readout or sSNU layer by its largest absolute differences."""
    out_a = np.asarray(reference.outputs[layer.name], np.float64)
    out_b = np.asarray(candidate.outputs[layer.name], np.float64)
    timed = out_a.ndim >= 3
    if timed:
        out_a = _flat(_align(out_a, 0, steps), samples, steps)
        out_b = _flat(_align(out_b, shift, steps), samples, steps)
    else:
        out_a = _flat(out_a, samples, None)
        out_b = _flat(out_b, samples, None)
    if out_a.shape != out_b.shape:
        raise EquivalenceError(
            f"Layer {layer.name!r}: outputs have shapes {out_a.shape} and "
            f"{out_b.shape} in the two runs."
        )
    difference = float(np.max(np.abs(out_a - out_b), initial=0.0))
    result = LayerComparison(
        name=layer.name,
        kind=layer.kind,
        spiking=False,
        identical=bool(np.array_equal(out_a, out_b)),
        pairs=int(out_a.size),
        max_output_difference=difference,
    )
    state_a = reference.states.get(layer.name)
    state_b = candidate.states.get(layer.name)
    if state_a is not None and state_b is not None:
        state_a = np.asarray(state_a, np.float64)
        state_b = np.asarray(state_b, np.float64)
        if state_a.ndim >= 3:
            state_a = _align(state_a, 0, steps)
            state_b = _align(state_b, shift, steps)
        if state_a.shape == state_b.shape:
            result.max_state_difference = float(
                np.max(np.abs(state_a - state_b), initial=0.0)
            )
    return result


def _json_number(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return None if math.isnan(number) else number
    return value


def _json_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _json_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_tree(item) for item in value]
    if isinstance(value, np.ndarray):
        return [_json_tree(item) for item in value.tolist()]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_tree(dataclasses.asdict(value))
    return _json_number(value)

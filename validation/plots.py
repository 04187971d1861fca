"""Pictures of an equivalence case: overlaid rasters and membrane traces.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so drawing
works without a display and leaves the caller's matplotlib backend alone.
Files are written through a temporary name and a rename.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from snubridge.params_file import atomic_write
from snubridge.spec import SPIKING_KINDS

logger = logging.getLogger(__name__)

AGREE_COLOR = "0.2"
REFERENCE_ONLY_COLOR = "tab:red"
CANDIDATE_ONLY_COLOR = "tab:blue"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> Path:
    def write(temporary: str) -> None:
        figure.savefig(temporary, format="png")

    return atomic_write(path, write)


def _trains(result, name: str, sample: int, shift: int, steps: int) -> np.ndarray:
    values = np.asarray(result.outputs[name])[sample, shift : shift + steps]
    return values.reshape(values.shape[0], -1) != 0


def plot_rasters(
    spec,
    reference,
    candidate,
    path: str | os.PathLike,
    *,
    sample: int = 0,
    labels: tuple[str, str] = ("reference", "candidate"),
    latency: Mapping[str, int] | None = None,
    steps: int | None = None,
) -> Path:
    """Draw both runs' rasters of one sample overlaid, one panel per spiking layer.

    Spikes in both runs are grey dots; a spike only the reference has is a red
    cross, one only the candidate has a blue plus. ``latency`` (steps per layer)
    shifts the candidate onto the reference's grid as in
    :func:`~snubridge.validation.compare.compare_results`.

    Returns:
        The PNG file written.
    """
    latency = dict(latency or {})
    layers = [layer for layer in spec.layers if layer.is_spiking]
    figure = _figure(10.0, max(2.5, 2.2 * len(layers)))
    if not layers:
        figure.text(
            0.5, 0.5, "no spiking layers: compare outputs numerically", ha="center"
        )
        return _save(figure, path)
    axes = figure.subplots(max(len(layers), 1), 1, squeeze=False)[:, 0]
    total = np.asarray(next(iter(reference.outputs.values()))).shape[1]
    steps = total if steps is None else steps
    for axis, layer in zip(axes, layers, strict=False):
        first = _trains(reference, layer.name, sample, 0, steps)
        second = _trains(
            candidate, layer.name, sample, latency.get(layer.name, 0), steps
        )
        both = np.argwhere(first & second)
        only_first = np.argwhere(first & ~second)
        only_second = np.argwhere(~first & second)
        axis.scatter(
            both[:, 0], both[:, 1], s=4, c=AGREE_COLOR, marker="o", label="both"
        )
        axis.scatter(
            only_first[:, 0],
            only_first[:, 1],
            s=30,
            c=REFERENCE_ONLY_COLOR,
            marker="x",
            label=f"only {labels[0]}",
        )
        axis.scatter(
            only_second[:, 0],
            only_second[:, 1],
            s=30,
            c=CANDIDATE_ONLY_COLOR,
            marker="+",
            label=f"only {labels[1]}",
        )
        mismatches = len(only_first) + len(only_second)
        axis.set_title(
            f"{layer.name}: {mismatches} differing spikes in sample {sample}"
        )
        axis.set_xlim(-0.5, steps - 0.5)
        axis.set_ylim(-0.5, first.shape[1] - 0.5)
        axis.set_ylabel("neuron")
        axis.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("time step")
    return _save(figure, path)


def choose_neurons(
    spec,
    comparison,
    requested: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    count: int = 3,
    sample: int | None = None,
) -> list[tuple[str, int]]:
    """Return the (layer, neuron) pairs whose membranes are drawn.

    A mapping names neurons per layer; a list applies to the layer of the first
    divergence, else the first spiking layer. With nothing requested: the neuron
    of the first divergence and the next mismatching neurons of its layer
    (those that mismatch in ``sample`` first), or, when the rasters agree, the
    first ``count`` neurons of the first spiking layer.
    """
    spiking = [layer.name for layer in spec.layers if layer.is_spiking]
    if not spiking:
        # sSNU networks: draw the membranes of the first SNU layer.
        spiking = [layer.name for layer in spec.layers if layer.kind in SPIKING_KINDS]
    if not spiking:
        return []
    divergence = comparison.first_divergence
    home = divergence.layer if divergence is not None else spiking[0]
    if isinstance(requested, Mapping):
        return [(name, int(n)) for name, neurons in requested.items() for n in neurons]
    if requested is not None:
        return [(home, int(n)) for n in requested]
    if divergence is None:
        units = spec.layer(home).units
        return [(home, n) for n in range(min(count, units))]
    chosen = [(home, divergence.neuron)]
    records = sorted(
        comparison.layers[home].listed, key=lambda record: record["sample"] != sample
    )
    for record in records:
        pair = (home, int(record["neuron"]))
        if pair not in chosen:
            chosen.append(pair)
        if len(chosen) == count:
            break
    return chosen


def plot_membranes(
    spec,
    reference,
    candidate,
    path: str | os.PathLike,
    *,
    neurons: Sequence[tuple[str, int]],
    sample: int = 0,
    labels: tuple[str, str] = ("reference", "candidate"),
    latency: Mapping[str, int] | None = None,
    steps: int | None = None,
) -> Path:
    """Draw membrane traces of chosen neurons, reference left and candidate right.

    Each row is one neuron: its membrane ``s_t`` against the time step, the
    threshold as a dashed line, spikes as dots on the trace, and steps where
    the two runs' spikes differ shaded in both panels. sSNU layers have no
    spikes, so only their membranes and thresholds are drawn.

    Returns:
        The PNG file written.
    """
    latency = dict(latency or {})
    rows = max(len(neurons), 1)
    figure = _figure(11.0, 2.2 * rows)
    axes = figure.subplots(rows, 2, squeeze=False, sharex=True)
    total = np.asarray(next(iter(reference.outputs.values()))).shape[1]
    steps = total if steps is None else steps
    time_axis = np.arange(steps)
    for row, (name, neuron) in enumerate(neurons):
        layer = spec.layer(name)
        threshold = np.tile(layer.threshold, layer.units // layer.threshold.size)[
            neuron
        ]
        shifts = (0, latency.get(name, 0))
        if layer.is_spiking:
            spikes = [
                _trains(result, name, sample, shift, steps)[:, neuron]
                for result, shift in zip((reference, candidate), shifts, strict=True)
            ]
        else:
            spikes = [np.zeros(steps, bool), np.zeros(steps, bool)]
        differs = np.flatnonzero(spikes[0] != spikes[1])
        for column, (result, shift, label) in enumerate(
            zip((reference, candidate), shifts, labels, strict=True)
        ):
            axis = axes[row, column]
            states = result.states.get(name)
            if states is not None:
                trace = np.asarray(states)[sample, shift : shift + steps].reshape(
                    steps, -1
                )
                trace = trace[:, neuron]
                axis.plot(time_axis, trace, lw=1.0, color="tab:green")
                fired = np.flatnonzero(spikes[column])
                axis.plot(fired, trace[fired], "o", ms=3, color="black")
            else:
                axis.text(
                    0.5,
                    0.5,
                    "no membrane states recorded",
                    ha="center",
                    transform=axis.transAxes,
                )
            axis.axhline(threshold, ls="--", lw=0.8, color="0.4")
            for step in differs:
                axis.axvspan(step - 0.5, step + 0.5, color="tab:red", alpha=0.25, lw=0)
            axis.set_title(f"{label}: {name} neuron {neuron}", fontsize="small")
            axis.set_ylabel("membrane s")
    for column in range(2):
        axes[-1, column].set_xlabel("time step")
    return _save(figure, path)

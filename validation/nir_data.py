"""Spike rasters saved and read as NIR data, so other NIR tools can read them.

A raster file is a ``nir.NIRGraphData`` written with ``nir.write_data``: one
``NIRNodeData`` per layer, keyed by the layer name, whose observable
``"spikes"`` is a ``nir.TimeGriddedData`` of booleans with shape
``(samples, steps, neurons)`` and the step ``dt`` in seconds. Optional
membrane states go into the observable ``"v"`` (float64, same shape). For a
network exported with :func:`snubridge.converters.nir_io.write_nir` the layer
names are the NIR node names of the neurons (for a recurrent layer, the name
of its subgraph). Neurons of a convolutional layer are flattened in the
spec's ``(H, W, C)`` order, as :attr:`snubridge.reference.SimulationResult.spikes`
gives them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import nir
import numpy as np

from snubridge.errors import DataError
from snubridge.params_file import atomic_write

logger = logging.getLogger(__name__)

SPIKES = "spikes"
STATES = "v"


@dataclasses.dataclass
class NIRRasters:
    """Spike rasters read from a NIR data file.

    Attributes:
        spikes: Layer name to a boolean raster ``(samples, steps, neurons)``.
        dt: Time step in seconds.
        states: Layer name to membrane states ``(samples, steps, neurons)``,
            for the layers whose file entry contains them.
    """

    spikes: dict[str, np.ndarray]
    dt: float
    states: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _check_dt(dt: float) -> float:
    try:
        value = float(dt)
    except (TypeError, ValueError):
        raise DataError(f"dt must be a number of seconds, received {dt!r}.") from None
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"dt must be a positive number of seconds, received {dt!r}.")
    return value


def _as_raster(name: str, values: np.ndarray) -> np.ndarray:
    """Return ``values`` as a boolean ``(samples, steps, neurons)`` raster, or raise."""
    array = np.asarray(values)
    if array.ndim < 3:
        raise DataError(
            f"Raster {name!r} must have shape (samples, steps, neurons...), received "
            f"shape {array.shape}."
        )
    array = array.reshape(array.shape[0], array.shape[1], -1)
    if array.dtype != bool:
        if not np.all((array == 0) | (array == 1)):
            bad = array[(array != 0) & (array != 1)].flat[0]
            raise DataError(
                f"Raster {name!r} contains the value {bad!r}; spikes must be 0 or 1. "
                "Save membrane states through the states argument."
            )
        array = array.astype(bool)
    return array


def rasters_to_nir_data(
    spikes: Mapping[str, np.ndarray],
    *,
    dt: float,
    states: Mapping[str, np.ndarray] | None = None,
) -> nir.NIRGraphData:
    """Return spike rasters (and optional states) as a ``nir.NIRGraphData``.

    Args:
        spikes: Layer name to raster ``(samples, steps, *shape)`` of 0 and 1.
        dt: Time step in seconds.
        states: Optional layer name to membrane states of the same shape.
    """
    step = _check_dt(dt)
    if not spikes:
        raise DataError("No rasters to save; pass at least one layer.")
    states = dict(states or {})
    unknown = sorted(set(states) - set(spikes))
    if unknown:
        raise DataError(f"States given for layers without spikes: {unknown}.")
    nodes = {}
    for name, values in spikes.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise DataError(f"Layer name {name!r} cannot key an HDF5 group; rename it.")
        raster = _as_raster(name, values)
        observables = {SPIKES: nir.TimeGriddedData(raster, step)}
        if name in states:
            state = np.asarray(states[name], dtype=np.float64)
            if state.ndim >= 3:
                state = state.reshape(state.shape[0], state.shape[1], -1)
            if state.shape != raster.shape:
                raise DataError(
                    f"States of {name!r} have shape {state.shape}, the spikes "
                    f"{raster.shape}."
                )
            observables[STATES] = nir.TimeGriddedData(state, step)
        nodes[name] = nir.NIRNodeData(observables=observables)
    return nir.NIRGraphData(nodes=nodes)


def write_rasters(
    path: str | os.PathLike,
    spikes: Mapping[str, np.ndarray],
    *,
    dt: float,
    states: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write spike rasters to ``path`` as NIR data and return the path.

    Writes through a temporary file and a rename; see :func:`rasters_to_nir_data`
    for the arguments.
    """
    data = rasters_to_nir_data(spikes, dt=dt, states=states)
    target = atomic_write(path, lambda temporary: nir.write_data(temporary, data))
    logger.info("Wrote NIR spike data %s (%d layers)", target, len(data.nodes))
    return target


def _gridded(
    name: str, observable: object, dt: float | None, boolean: bool
) -> nir.TimeGriddedData:
    if isinstance(observable, nir.TimeGriddedData):
        return observable
    if isinstance(observable, nir.EventData):
        if dt is None:
            raise DataError(
                f"Layer {name!r} stores events, not a time grid; pass dt to place them "
                "on steps."
            )
        gridded = observable.to_time_gridded(dt)
        if boolean and gridded.data.dtype != bool:
            gridded = nir.TimeGriddedData(gridded.data != 0, dt)
        return gridded
    raise DataError(
        f"Layer {name!r}: unsupported observable {type(observable).__name__}."
    )


def _flatten_nodes(
    data: nir.NIRGraphData, prefix: str = ""
) -> dict[str, nir.NIRNodeData]:
    flat: dict[str, nir.NIRNodeData] = {}
    for key, node in data.nodes.items():
        if isinstance(node, nir.NIRGraphData):
            flat.update(_flatten_nodes(node, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = node
    return flat


def nir_data_to_rasters(
    data: nir.NIRGraphData, *, dt: float | None = None
) -> NIRRasters:
    """Return the ``"spikes"`` (and ``"v"``) observables of NIR data as rasters.

    Nested graph data is flattened with ``parent.child`` names. Event data is
    placed on the grid of ``dt`` (required then); time-gridded data must agree
    with ``dt`` when both are given.

    Raises:
        DataError: no layer has spikes, the steps of two layers differ, or
            spike values are not 0 and 1.
    """
    requested = None if dt is None else _check_dt(dt)
    spikes: dict[str, np.ndarray] = {}
    states: dict[str, np.ndarray] = {}
    steps: set[float] = set()
    for name, node in _flatten_nodes(data).items():
        if SPIKES not in node.observables:
            continue
        gridded = _gridded(name, node.observables[SPIKES], requested, boolean=True)
        steps.add(float(gridded.dt))
        spikes[name] = _as_raster(name, gridded.data)
        if STATES in node.observables:
            state = _gridded(name, node.observables[STATES], requested, boolean=False)
            states[name] = np.asarray(state.data, dtype=np.float64)
    if not spikes:
        raise DataError(f"The NIR data contains no {SPIKES!r} observable in any node.")
    if len(steps) != 1:
        raise DataError(
            f"Layers of one file use different time steps: {sorted(steps)} s."
        )
    stored = steps.pop()
    if requested is not None and not math.isclose(stored, requested, rel_tol=1e-12):
        raise DataError(
            f"The rasters are gridded with dt={stored!r} s, but dt={requested!r} s was "
            "requested."
        )
    return NIRRasters(spikes=spikes, dt=stored, states=states)


def read_rasters(path: str | os.PathLike, *, dt: float | None = None) -> NIRRasters:
    """Read a NIR data file written by :func:`write_rasters` or another NIR tool.

    Raises:
        DataError: the file is missing, not NIR data, or contains no spike raster.
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(f"NIR data file {str(source)!r} does not exist.")
    try:
        data = nir.read_data(str(source))
    except OSError as error:
        raise DataError(
            f"{str(source)!r} is not a readable HDF5 file ({error})."
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{str(source)!r} is not NIR graph data ({error}).") from None
    return nir_data_to_rasters(data, dt=dt)

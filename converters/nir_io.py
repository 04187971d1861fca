"""NIR files in and out: the public entry points of the NIR converter.

``write_nir`` and ``to_nir_graph`` export a network spec (see
:mod:`converters.nir_export`), ``read_nir`` imports a NIR file or graph as a
spec (see :mod:`converters.nir_import`). A spec read from NIR runs in the numpy
reference (:func:`snubridge.reference.simulate`), in Keras through
``snubridge.keras_io.model_from_spec`` and in Brian2 through
``snubridge.converters.brian2_export``. The mapping between NIR's continuous
neurons and the discrete SNU update is stated in ``docs/nir.md``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nir

from snubridge.params_file import atomic_write
from snubridge.spec import NetworkSpec

from .nir_export import (
    DISCRETISATIONS,
    flatten_permutation,
    input_scale,
    to_nir_graph,
)
from .nir_import import graph_to_spec, load_nir_graph, read_nir

logger = logging.getLogger(__name__)

__all__ = [
    "DISCRETISATIONS",
    "flatten_permutation",
    "graph_to_spec",
    "input_scale",
    "load_nir_graph",
    "read_nir",
    "to_nir_graph",
    "write_nir",
]


def write_nir(
    spec: NetworkSpec,
    path: str | os.PathLike,
    *,
    dt: float | None = None,
    discretisation: str = "exact",
    relu: str = "reject",
) -> Path:
    """Export ``spec`` to the NIR file ``path`` and return the path.

    The graph is built by :func:`to_nir_graph` (same keyword arguments), then
    written with ``nir.write`` to a temporary file in the destination folder
    and renamed onto ``path``, so an interrupted write leaves no partial file.

    Raises:
        ConversionError: a layer has no exact NIR form.
    """
    graph = to_nir_graph(spec, dt=dt, discretisation=discretisation, relu=relu)
    target = atomic_write(path, lambda temporary: nir.write(temporary, graph))
    logger.info("Wrote NIR graph %s (%d nodes)", target, len(graph.nodes))
    return target

"""Pytest plugin: assert that a converted SNU network is equivalent to its model.

Installed through the ``pytest11`` entry point, it gives every test session of
this environment the ``snu_equivalence`` fixture and two command-line options,
``--snubridge-target`` (Brian2 code-generation target) and
``--snubridge-backends`` (two back ends, comma-separated). Users' tests can
also call :func:`assert_equivalent` directly::

    from snubridge.validation.pytest_plugin import assert_equivalent

    def test_export_is_exact(trained_spec, spikes):
        assert_equivalent(trained_spec, spikes, precision="float64")

This module imports only the standard library, pytest and snubridge's error
classes when pytest loads it; TensorFlow and Brian2 load when a check runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from snubridge.errors import EquivalenceError

logger = logging.getLogger(__name__)

DEFAULT_BACKENDS = ("keras", "brian2")


class NotEquivalentError(EquivalenceError, AssertionError):
    """Two back ends disagree beyond the tolerances of an equivalence check.

    Attributes:
        comparison: The :class:`~snubridge.validation.compare.Comparison`.
        failures: One message per failed tolerance.
    """

    def __init__(self, message: str, comparison: Any, failures: list[str]) -> None:
        super().__init__(message)
        self.comparison = comparison
        self.failures = failures


def _resolve_model(model_or_spec: Any) -> tuple[Any, Any]:
    """Return ``(spec, model)`` of a spec, a parameter or model file, or a model."""
    from snubridge.spec import NetworkSpec

    if isinstance(model_or_spec, NetworkSpec):
        return model_or_spec.validate(), None
    if isinstance(model_or_spec, (str, os.PathLike)):
        from snubridge.validation.suites import load_case_spec

        path = Path(model_or_spec)
        if path.suffix not in (".h5", ".keras"):
            raise EquivalenceError(
                f"model_or_spec {str(path)!r} must be a .h5 parameter file or a .keras "
                "model."
            )
        return load_case_spec(path), path
    if hasattr(model_or_spec, "layers") and hasattr(model_or_spec, "dtype_policy"):
        from snubridge import keras_io

        return keras_io.spec_from_model(model_or_spec), model_or_spec
    raise EquivalenceError(
        f"model_or_spec must be a NetworkSpec, a .h5 or .keras path, or a Keras model, "
        f"received {type(model_or_spec).__name__}."
    )


def _as_inputs(inputs: Any, spec) -> Any:
    import numpy as np

    if hasattr(inputs, "to_array") and hasattr(inputs, "neuron_shape"):
        return inputs.to_array(np.float64, shape=tuple(spec.input_shape))
    return np.asarray(inputs, dtype=np.float64)


def compare_backends(
    model_or_spec: Any,
    inputs: Any,
    *,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    precision: str | None = None,
    target: str = "numpy",
    latency: int | Mapping[str, int] | None = None,
    settings: Any = None,
):
    """Run two back ends on ``inputs`` and return their comparison.

    Args:
        model_or_spec: A :class:`~snubridge.spec.NetworkSpec`, the path of a
            ``.h5`` parameter file or ``.keras`` model, or a Keras model.
        inputs: Array ``(samples, steps, *input_shape)`` or
            :class:`~snubridge.spikes.SpikeData`.
        backends: First and second back end (see
            :data:`snubridge.validation.suites.BACKENDS`).
        precision: Precision of the first back end; defaults to the spec's.
            The second computes in float64.
        target: Brian2 code-generation target.
        latency: Steps the second back end lags, as in
            :func:`~snubridge.validation.compare.compare_results`.
        settings: :class:`~snubridge.validation.compare.MetricSettings`.

    Returns:
        The :class:`~snubridge.validation.compare.Comparison`.
    """
    from snubridge.validation.compare import compare_results
    from snubridge.validation.suites import BackendOptions, run_backend

    backends = tuple(backends)
    if len(backends) != 2:
        raise EquivalenceError(
            f"backends must name two back ends, received {backends!r}."
        )
    spec, model = _resolve_model(model_or_spec)
    values = _as_inputs(inputs, spec)
    precisions = (precision or spec.precision, "float64")
    options = BackendOptions(model=model, target=target)
    runs = [
        run_backend(name, spec, values, side, options)
        for name, side in zip(backends, precisions, strict=True)
    ]
    for run in runs:
        if run.note:
            logger.warning("Back end %s: %s", run.name, run.note)
    return compare_results(
        spec,
        values,
        runs[0].result,
        runs[1].result,
        precisions=precisions,
        names=backends,
        latency=latency,
        settings=settings,
    )


def assert_equivalent(
    model_or_spec: Any,
    inputs: Any,
    *,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    precision: str | None = None,
    target: str = "numpy",
    tolerances: Mapping[str, float] | None = None,
    latency: int | Mapping[str, int] | None = None,
    settings: Any = None,
):
    """Raise :class:`NotEquivalentError` unless two back ends agree within tolerances.

    Arguments are those of :func:`compare_backends`, plus ``tolerances``, a
    mapping of metric names (:data:`snubridge.validation.compare.METRICS`) to
    bounds. Without it a float64 check needs identical rasters
    (``mismatch_fraction = 0``) and a float32 check allows only mismatches that
    rounding at the threshold explains (``unexplained_mismatches = 0``).

    Returns:
        The :class:`~snubridge.validation.compare.Comparison` when it passes.
    """
    comparison = compare_backends(
        model_or_spec,
        inputs,
        backends=backends,
        precision=precision,
        target=target,
        latency=latency,
        settings=settings,
    )
    if tolerances is None:
        tolerances = (
            {"mismatch_fraction": 0.0}
            if comparison.precisions[0] == "float64"
            else {"unexplained_mismatches": 0}
        )
    failures = comparison.check(tolerances)
    if failures:
        lines = [f"{backends[0]} and {backends[1]} are not equivalent:"]
        lines += [f"  {failure}" for failure in failures]
        if comparison.first_divergence is not None:
            lines.append(
                f"  first divergence: {comparison.first_divergence.describe()}"
            )
        raise NotEquivalentError("\n".join(lines), comparison, failures)
    return comparison


class EquivalenceChecker:
    """The object behind the ``snu_equivalence`` fixture.

    Attributes:
        backends: Default back ends, from ``--snubridge-backends``.
        target: Default Brian2 target, from ``--snubridge-target``.
    """

    def __init__(self, backends: Sequence[str], target: str) -> None:
        self.backends = tuple(backends)
        self.target = target

    def compare(self, model_or_spec: Any, inputs: Any, **options: Any):
        """Run :func:`compare_backends` with this session's defaults."""
        options.setdefault("backends", self.backends)
        options.setdefault("target", self.target)
        return compare_backends(model_or_spec, inputs, **options)

    def assert_equivalent(self, model_or_spec: Any, inputs: Any, **options: Any):
        """Run :func:`assert_equivalent` with this session's defaults."""
        options.setdefault("backends", self.backends)
        options.setdefault("target", self.target)
        return assert_equivalent(model_or_spec, inputs, **options)

    __call__ = assert_equivalent


def pytest_addoption(parser) -> None:
    """Add the ``--snubridge-target`` and ``--snubridge-backends`` options."""
    group = parser.getgroup("snubridge", "snubridge equivalence checks")
    group.addoption(
        "--snubridge-target",
        default="numpy",
        help="Brian2 code-generation target of snu_equivalence checks (default: numpy)",
    )
    group.addoption(
        "--snubridge-backends",
        default=",".join(DEFAULT_BACKENDS),
        help="two back ends compared by snu_equivalence, comma-separated "
        "(default: keras,brian2; others: reference)",
    )


@pytest.fixture
def snu_equivalence(request) -> EquivalenceChecker:
    """Return an :class:`EquivalenceChecker` with the session's back ends and target."""
    backends = [
        name.strip()
        for name in request.config.getoption("snubridge_backends").split(",")
    ]
    if len(backends) != 2:
        raise EquivalenceError(
            f"--snubridge-backends must name two back ends, received {backends!r}."
        )
    return EquivalenceChecker(backends, request.config.getoption("snubridge_target"))

"""Validation suites: TOML files of equivalence cases, and the runner behind them.

A suite lists cases, each one network run on two back ends and compared with
:func:`snubridge.validation.compare.compare_results`::

    name = "dense MNIST"            # optional suite name

    [defaults]                      # optional; any case field
    samples = 16

    [[case]]
    name = "dense_float64"          # required, unique
    model = "../runs/model.h5"      # required: .h5 parameter file or .keras model,
                                    # relative to this file
    inputs = "mnist"                # "random" (default), "mnist" or "jsb"
    data = "../data/mnist"          # data file or folder, relative to this file;
                                    # mnist without it reads load_mnist(None)
    encoder = "rate"                # "rate", "poisson", "current" or "raster"
    max_probability = 0.5           # rate encoder: spike probability per step at 1
    max_rate_hz = 200.0             # poisson encoder: rate at intensity 1, in Hz
    seed = 0                        # seed of the random intensities and encoder
    samples = 16                    # number of input samples
    offset = 0                      # first sample taken from the data set
    steps = 50                      # time steps per sample
    precision = "float64"           # float precision of the first back end
    target = "numpy"                # Brian2 code-generation target
    backends = ["keras", "brian2"]  # first and second back end
    latency = 0                     # steps the second back end lags, or a table
                                    # {layer = steps}
    plot_neurons = [0, 1]           # neurons whose membranes are drawn, or a
                                    # table {layer = [neurons]}
    plot_sample = 0                 # sample drawn in the pictures

    [case.metrics]                  # parameters of the distances
    van_rossum_tau = 5.0            # kernel time constant, in steps
    victor_purpura_cost = 0.5       # cost of moving a spike by one step
    gamma_window = 1                # coincidence half-width, in steps

    [case.tolerances]               # metric = bound, see compare.METRICS
    mismatch_fraction = 0.0

The first back end computes in ``precision``; the second in float64, the
precision Brian2 uses. Without a ``tolerances`` table a float64 case must give
identical rasters (``mismatch_fraction = 0``) and a float32 case may differ
only where rounding at the threshold explains it
(``unexplained_mismatches = 0``).

Back ends are ``keras`` (:mod:`snubridge.keras_io`), ``brian2``
(:func:`snubridge.converters.brian2_export.run_brian2`) and ``reference``
(:func:`snubridge.reference.simulate`). The ``keras`` back end runs a ``.keras``
model as saved when its precision matches the case's. Otherwise it builds the
model from the spec in the case's precision.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import inspect
import json
import logging
import math
import multiprocessing
import os
import platform
import time
import tomllib
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from snubridge.errors import EquivalenceError
from snubridge.params_file import atomic_write

logger = logging.getLogger(__name__)

INPUT_SETS = ("random", "mnist", "jsb")
ENCODERS = ("rate", "poisson", "current", "raster")
PRECISIONS = ("float32", "float64")
MODEL_SUFFIXES = (".h5", ".keras")
REPORT_NAME = "report.json"
# Cases listed with every mismatch cause in the report, per layer.
MAX_LISTED = 100


def _backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


@dataclasses.dataclass
class Case:
    """One equivalence case of a suite; fields as in the module docstring.

    Paths are absolute once the suite is loaded. ``tolerances`` maps metric
    names of :data:`snubridge.validation.compare.METRICS` to bounds.
    """

    name: str
    model: Path
    inputs: str = "random"
    data: Path | None = None
    encoder: str | None = None
    max_probability: float = 0.5
    max_rate_hz: float = 200.0
    seed: int = 0
    samples: int = 16
    offset: int = 0
    steps: int = 50
    precision: str = "float64"
    target: str = "numpy"
    backends: tuple[str, str] = ("keras", "brian2")
    latency: int | dict[str, int] = 0
    plot_neurons: list[int] | dict[str, list[int]] | None = None
    plot_sample: int | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    tolerances: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def precisions(self) -> tuple[str, str]:
        """Precision of the first and the second back end."""
        return (self.precision, "float64")

    def to_dict(self) -> dict[str, Any]:
        """Return the case as JSON-ready values."""
        data = dataclasses.asdict(self)
        data["model"] = str(self.model)
        data["data"] = None if self.data is None else str(self.data)
        data["backends"] = list(self.backends)
        return data


@dataclasses.dataclass
class Suite:
    """A loaded suite file.

    Attributes:
        path: The suite file.
        name: Suite name (the file stem unless the file sets ``name``).
        cases: Cases in file order.
    """

    path: Path
    name: str
    cases: list[Case]


_CASE_FIELDS = {field.name: field for field in dataclasses.fields(Case)}


def _problem(case: str, field: str, message: str) -> str:
    return f"case {case!r}, field {field!r}: {message}"


def load_suite(
    path: str | os.PathLike,
    cases: Sequence[str] | None = None,
    check_files: bool = True,
) -> Suite:
    """Read and check a suite file; return the :class:`Suite`.

    Args:
        path: The TOML file.
        cases: Names of the cases to keep (all when None). Only kept cases
            need their model files to exist.
        check_files: Check that model and data paths exist.

    Raises:
        EquivalenceError: the file is missing or not valid TOML, or a case has
            an unknown or invalid field, an unknown metric, a missing model, or
            a duplicate name. The message lists every problem, each naming its
            case and field.
    """
    source = Path(path).resolve()
    if not source.is_file():
        raise EquivalenceError(f"Suite file {str(source)!r} does not exist.")
    try:
        with source.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise EquivalenceError(
            f"Suite file {str(source)!r} is not valid TOML: {error}. "
            "Fix the line named."
        ) from None
    except UnicodeDecodeError as error:
        raise EquivalenceError(
            f"Suite file {str(source)!r} is not UTF-8 text: {error}."
        ) from None
    problems: list[str] = []
    for key in document:
        if key not in ("name", "defaults", "case"):
            problems.append(
                f"top level, field {key!r}: unknown; expected 'name', 'defaults' or "
                "[[case]] tables"
            )
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.append("top level, field 'defaults': must be a table")
        defaults = {}
    entries = document.get("case", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append("top level, field 'case': must be [[case]] tables")
        entries = []
    if not entries and not problems:
        problems.append("top level, field 'case': the suite has no [[case]] tables")
    loaded: list[Case] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        merged = {**defaults, **entry}
        for table in ("metrics", "tolerances"):
            if isinstance(defaults.get(table), dict) and isinstance(
                entry.get(table), dict
            ):
                merged[table] = {**defaults[table], **entry[table]}
        label = str(merged.get("name", f"#{position + 1}"))
        case = _parse_case(merged, label, source.parent, problems)
        if case is None:
            continue
        if case.name in seen:
            problems.append(
                _problem(case.name, "name", "used by two cases; names must be unique")
            )
        seen.add(case.name)
        loaded.append(case)
    if cases is not None:
        unknown = sorted(set(cases) - {case.name for case in loaded})
        if unknown and not problems:
            problems.append(
                "top level, field 'case': no case named "
                f"{', '.join(map(repr, unknown))}; "
                f"cases are {', '.join(case.name for case in loaded)}"
            )
        loaded = [case for case in loaded if case.name in set(cases)]
    for case in loaded if check_files else ():
        if not case.model.is_file():
            problems.append(
                _problem(
                    case.name,
                    "model",
                    f"file {str(case.model)!r} does not exist; train or convert the "
                    "model first, or edit the path (it is relative to the suite file)",
                )
            )
        if case.data is not None and not case.data.exists():
            problems.append(
                _problem(case.name, "data", f"path {str(case.data)!r} does not exist")
            )
    if problems:
        raise EquivalenceError(
            f"Invalid suite {str(source)!r}: " + "; ".join(problems) + "."
        )
    name = document.get("name", source.stem)
    return Suite(path=source, name=str(name), cases=loaded)


def _parse_case(
    entry: dict, label: str, folder: Path, problems: list[str]
) -> Case | None:
    from snubridge.validation.compare import METRICS, MetricSettings

    count = len(problems)
    for key in entry:
        if key not in _CASE_FIELDS:
            problems.append(
                _problem(
                    label,
                    key,
                    f"unknown field; known fields are {', '.join(_CASE_FIELDS)}",
                )
            )
    values: dict[str, Any] = {}

    def text(field: str, allowed: Sequence[str] | None = None) -> None:
        if field not in entry:
            return
        value = entry[field]
        if not isinstance(value, str) or not value:
            problems.append(
                _problem(label, field, f"must be a string, received {value!r}")
            )
        elif allowed is not None and value not in allowed:
            problems.append(
                _problem(label, field, f"{value!r} is not one of {', '.join(allowed)}")
            )
        else:
            values[field] = value

    def number(field: str, integer: bool, low: float, high: float = math.inf) -> None:
        if field not in entry:
            return
        value = entry[field]
        kinds = (int,) if integer else (int, float)
        if (
            isinstance(value, bool)
            or not isinstance(value, kinds)
            or not low <= value <= high
        ):
            kind = "a whole number" if integer else "a number"
            problems.append(
                _problem(
                    label,
                    field,
                    f"must be {kind} in [{low:g}, {high:g}], received {value!r}",
                )
            )
        else:
            values[field] = value

    if "name" not in entry:
        problems.append(
            _problem(label, "name", "missing; every case needs a unique name")
        )
    text("name")
    if "model" not in entry:
        problems.append(
            _problem(label, "model", "missing; give the .h5 or .keras file")
        )
    text("model")
    text("inputs", INPUT_SETS)
    text("data")
    text("encoder", ENCODERS)
    text("precision", PRECISIONS)
    text("target")
    number("max_probability", False, 0.0, 1.0)
    number("max_rate_hz", False, 0.0)
    number("seed", True, 0)
    number("samples", True, 1)
    number("offset", True, 0)
    number("steps", True, 1)
    number("plot_sample", True, 0)
    if "model" in values and Path(values["model"]).suffix not in MODEL_SUFFIXES:
        problems.append(
            _problem(label, "model", f"{values['model']!r} must end in .h5 or .keras")
        )
    if "backends" in entry:
        backends = entry["backends"]
        if (
            not isinstance(backends, list)
            or len(backends) != 2
            or not all(isinstance(b, str) and b in BACKENDS for b in backends)
        ):
            problems.append(
                _problem(
                    label,
                    "backends",
                    f"must list two of {', '.join(_backend_names())}, "
                    f"received {backends!r}",
                )
            )
        else:
            values["backends"] = tuple(backends)
    if "latency" in entry:
        latency = entry["latency"]
        if _is_count(latency) or (
            isinstance(latency, dict) and all(_is_count(v) for v in latency.values())
        ):
            values["latency"] = latency
        else:
            problems.append(
                _problem(
                    label,
                    "latency",
                    f"must be steps >= 0 or a table of them, received {latency!r}",
                )
            )
    if "plot_neurons" in entry:
        neurons = entry["plot_neurons"]
        if _is_index_list(neurons) or (
            isinstance(neurons, dict)
            and all(_is_index_list(v) for v in neurons.values())
        ):
            values["plot_neurons"] = neurons
        else:
            problems.append(
                _problem(
                    label,
                    "plot_neurons",
                    "must be a list of neuron indices or a table of them, "
                    f"received {neurons!r}",
                )
            )
    settings = {field.name for field in dataclasses.fields(MetricSettings)}
    for table, known in (("metrics", settings), ("tolerances", set(METRICS))):
        if table not in entry:
            continue
        content = entry[table]
        if not isinstance(content, dict):
            problems.append(_problem(label, table, "must be a table"))
            continue
        for key, value in content.items():
            field = f"{table}.{key}"
            if key not in known:
                kind = "metric" if table == "tolerances" else "metric setting"
                problems.append(
                    _problem(
                        label,
                        field,
                        f"unknown {kind}; known are {', '.join(sorted(known))}",
                    )
                )
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(
                    _problem(label, field, f"must be a number, received {value!r}")
                )
        values[table] = dict(content)
    if "metrics" in values:
        try:
            MetricSettings(**values["metrics"])
            _check_settings(values["metrics"])
        except (TypeError, EquivalenceError) as error:
            problems.append(_problem(label, "metrics", str(error)))
    if len(problems) > count:
        return None
    values["model"] = (folder / values["model"]).resolve()
    if "data" in values:
        values["data"] = (folder / values["data"]).resolve()
    if values.get("inputs") == "jsb" and "data" not in values:
        problems.append(
            _problem(label, "data", "a jsb case needs the path of jsb_chorales.json.gz")
        )
        return None
    encoder = values.get("encoder")
    input_set = values.get("inputs", "random")
    if input_set == "jsb" and encoder not in (None, "raster"):
        problems.append(
            _problem(label, "encoder", "jsb piano rolls are rasters; use 'raster'")
        )
        return None
    if input_set != "jsb" and encoder == "raster":
        problems.append(
            _problem(
                label, "encoder", f"'raster' applies to jsb only, not to {input_set!r}"
            )
        )
        return None
    case = Case(**values)
    if case.encoder is None:
        case.encoder = "raster" if input_set == "jsb" else "rate"
    if "tolerances" not in values:
        case.tolerances = (
            {"mismatch_fraction": 0.0}
            if case.precision == "float64"
            else {"unexplained_mismatches": 0}
        )
    return case


def _check_settings(settings: Mapping[str, float]) -> None:
    from snubridge.validation import metrics

    empty = np.zeros((1, 2, 1), bool)
    if "van_rossum_tau" in settings:
        metrics.van_rossum_distance(empty, empty, settings["van_rossum_tau"])
    if "victor_purpura_cost" in settings:
        metrics.victor_purpura_distance(empty, empty, settings["victor_purpura_cost"])
    if "gamma_window" in settings:
        metrics.coincidence_factor(empty, empty, settings["gamma_window"])


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_index_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_count(v) for v in value)


# ---------------------------------------------------------------------------
# Models, inputs and back ends


def load_case_spec(model: str | os.PathLike):
    """Return the :class:`~snubridge.spec.NetworkSpec` of a .h5 or .keras file."""
    from snubridge.params_file import load_params

    path = Path(model)
    if path.suffix == ".h5":
        return load_params(path)
    from snubridge import keras_io

    return keras_io.spec_from_model(keras_io.load_model(path))


def make_inputs(case: Case, spec) -> np.ndarray:
    """Build the case's input ``(samples, steps, *spec.input_shape)`` in float64.

    ``random`` draws intensities uniform in [0, 1) from
    ``numpy.random.default_rng(seed)``, and ``mnist`` takes images ``offset``
    to ``offset + samples`` of the data set. Both then go through the encoder,
    where ``current`` repeats the intensity at every step as an analog input.
    ``jsb`` takes the first ``steps`` steps of test pieces ``offset`` onwards as
    88-key piano rolls, shorter pieces padded with silence.
    """
    from snubridge import encoders

    shape = tuple(spec.input_shape)
    if case.inputs == "jsb":
        return _jsb_inputs(case, shape)
    rng = np.random.default_rng(case.seed)
    if case.inputs == "random":
        intensities = rng.random((case.samples, int(np.prod(shape))))
    else:
        from snubridge.data.mnist import load_mnist

        digits = load_mnist(None if case.data is None else case.data)
        images = digits.images[case.offset : case.offset + case.samples]
        if len(images) < case.samples:
            raise EquivalenceError(
                f"Case {case.name!r}: the MNIST data contains {len(digits.images)} "
                f"images, too few for offset {case.offset} and {case.samples} "
                "samples."
            )
        intensities = encoders.scale_intensities(images).reshape(case.samples, -1)
        if intensities.shape[1] != int(np.prod(shape)):
            raise EquivalenceError(
                f"Case {case.name!r}: MNIST images have {intensities.shape[1]} "
                f"pixels but the network expects input shape {shape}."
            )
    if case.encoder == "current":
        values = np.repeat(intensities[:, np.newaxis, :], case.steps, axis=1)
    elif case.encoder == "poisson":
        values = encoders.poisson_encode(
            intensities, case.steps, max_rate_hz=case.max_rate_hz, dt=spec.dt, seed=rng
        ).to_array(np.float64)
    else:
        values = encoders.rate_encode(
            intensities, case.steps, max_probability=case.max_probability, seed=rng
        ).to_array(np.float64)
    return values.reshape(case.samples, case.steps, *shape)


def _jsb_inputs(case: Case, shape: tuple[int, ...]) -> np.ndarray:
    from snubridge.data.jsb import load_jsb, piano_roll

    pieces = load_jsb(case.data).test[case.offset : case.offset + case.samples]
    if len(pieces) < case.samples:
        raise EquivalenceError(
            f"Case {case.name!r}: the JSB test split has too few pieces for offset "
            f"{case.offset} and {case.samples} samples."
        )
    rolls = np.zeros((case.samples, case.steps, 88))
    for index, piece in enumerate(pieces):
        roll = piano_roll(piece, dtype=np.float64)[: case.steps]
        rolls[index, : len(roll)] = roll
    if shape != (88,):
        raise EquivalenceError(
            f"Case {case.name!r}: JSB piano rolls have 88 keys but the network expects "
            f"input shape {shape}."
        )
    return rolls


@dataclasses.dataclass
class BackendRun:
    """One back end's run of a case.

    Attributes:
        name: Back end requested in the suite.
        used: What actually ran, for the report.
        note: Why ``used`` differs from ``name``, else empty.
        result: The :class:`~snubridge.reference.SimulationResult`.
        seconds: Wall-clock run time.
    """

    name: str
    used: str
    note: str
    result: Any
    seconds: float


@dataclasses.dataclass
class BackendOptions:
    """Settings a back end reads besides the spec and the inputs.

    Attributes:
        model: The ``.keras`` file or a loaded Keras model the ``keras`` back end
            runs as it is when its precision matches; else None.
        target: Brian2 code-generation target.
    """

    model: Any = None
    target: str = "numpy"


def _run_reference(spec, inputs, precision, options):
    from snubridge.reference import simulate

    return (
        simulate(spec, inputs, dtype=np.dtype(precision).type),
        "snubridge.reference",
        "",
    )


def _keras_model(keras_io, spec, precision, options):
    model = options.model
    if isinstance(model, (str, os.PathLike)):
        model = keras_io.load_model(model) if Path(model).suffix == ".keras" else None
    if model is not None and model.dtype_policy.compute_dtype == precision:
        return model
    return keras_io.model_from_spec(spec, dtype=precision)


def _run_keras(spec, inputs, precision, options):
    try:
        from snubridge import keras_io
    except ImportError as error:
        logger.warning(
            "Keras back end unavailable (%s); using snubridge.reference", error
        )
        result, _, _ = _run_reference(spec, inputs, precision, options)
        return (
            result,
            "snubridge.reference",
            f"snubridge.keras_io could not be imported ({error}); the numpy reference "
            "simulator ran in its place",
        )
    model = _keras_model(keras_io, spec, precision, options)
    run = keras_io.run_keras
    if "record_states" in inspect.signature(run).parameters:
        result = run(model, inputs, record_states=True)
    else:
        result = run(model, inputs)
    return result, f"keras ({precision})", ""


def _run_brian2(spec, inputs, precision, options):
    from snubridge.converters.brian2_export import run_brian2

    result = run_brian2(spec, inputs, target=options.target, record_states=True)
    return result, f"brian2 ({options.target})", ""


# name -> runner(spec, inputs, precision, options) -> (result, used, note)
BACKENDS: dict[str, Callable] = {
    "keras": _run_keras,
    "brian2": _run_brian2,
    "reference": _run_reference,
}


def run_backend(
    name: str,
    spec,
    inputs: np.ndarray,
    precision: str,
    options: BackendOptions | None = None,
) -> BackendRun:
    """Run back end ``name`` on ``inputs`` in ``precision``.

    Raises:
        EquivalenceError: an unknown back-end name.
    """
    if name not in BACKENDS:
        raise EquivalenceError(
            f"Unknown back end {name!r}; known back ends are "
            f"{', '.join(_backend_names())}."
        )
    start = time.perf_counter()
    result, used, note = BACKENDS[name](
        spec, inputs, precision, options or BackendOptions()
    )
    return BackendRun(name, used, note, result, time.perf_counter() - start)


# ---------------------------------------------------------------------------
# Running


def run_case(case: Case, out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run one case and return its report entry, with any error it raised.

    The entry has ``status`` ``"pass"``, ``"fail"`` (a tolerance failed) or
    ``"error"`` (the case could not run; ``error`` holds the message and
    ``traceback`` the trace). Pictures go to ``out_dir / case.name``.
    """
    from snubridge.validation.compare import MetricSettings, compare_results

    start = time.perf_counter()
    entry: dict[str, Any] = {"name": case.name, "ran": True, "case": case.to_dict()}
    try:
        spec = load_case_spec(case.model)
        inputs = make_inputs(case, spec)
        options = BackendOptions(model=case.model, target=case.target)
        runs = [
            run_backend(name, spec, inputs, precision, options)
            for name, precision in zip(case.backends, case.precisions, strict=True)
        ]
        entry["backends"] = [
            {
                "name": run.name,
                "used": run.used,
                "note": run.note,
                "seconds": run.seconds,
            }
            for run in runs
        ]
        comparison = compare_results(
            spec,
            inputs,
            runs[0].result,
            runs[1].result,
            precisions=case.precisions,
            names=(case.backends[0], case.backends[1]),
            latency=case.latency,
            settings=MetricSettings(**case.metrics),
            max_listed=MAX_LISTED,
        )
        failures = comparison.check(case.tolerances)
        entry["status"] = "fail" if failures else "pass"
        entry["failures"] = failures
        entry["comparison"] = comparison.to_dict()
        if out_dir is not None:
            entry["pictures"] = _draw(case, spec, runs, comparison, Path(out_dir))
    except Exception as error:  # noqa: BLE001 - one case must not stop the others
        logger.error("Case %r failed to run: %s", case.name, error)
        entry["status"] = "error"
        entry["error"] = f"{type(error).__name__}: {error}"
        entry["traceback"] = traceback.format_exc()
    entry["seconds"] = time.perf_counter() - start
    return entry


def _draw(case: Case, spec, runs, comparison, out_dir: Path) -> dict[str, str]:
    from snubridge.validation import plots

    folder = out_dir / _safe_name(case.name)
    sample = case.plot_sample
    if sample is None:
        divergence = comparison.first_divergence
        sample = 0 if divergence is None else divergence.sample
    labels = tuple(run.used for run in runs)
    raster = plots.plot_rasters(
        spec,
        runs[0].result,
        runs[1].result,
        folder / "raster.png",
        sample=sample,
        labels=labels,
        latency=comparison.latency,
        steps=comparison.steps,
    )
    neurons = plots.choose_neurons(spec, comparison, case.plot_neurons, sample=sample)
    traces = plots.plot_membranes(
        spec,
        runs[0].result,
        runs[1].result,
        folder / "membranes.png",
        neurons=neurons,
        sample=sample,
        labels=labels,
        latency=comparison.latency,
        steps=comparison.steps,
    )
    return {"raster": str(raster), "membranes": str(traces)}


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return cleaned.lstrip(".") or "case"


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("snubridge", "numpy", "tensorflow-cpu", "keras", "brian2"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_suite(
    suite: Suite,
    out_dir: str | os.PathLike,
    workers: int = 1,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every case of ``suite`` and write ``out_dir / report.json``.

    Cases run one after another, or in ``workers`` spawned processes. A case
    that raises is recorded with status ``"error"`` and the others go on.

    Args:
        suite: The loaded suite.
        out_dir: Folder for the report and the pictures (created if needed).
        workers: Number of worker processes, >= 1.
        progress: Called with each case entry as it finishes.

    Returns:
        The report: suite, times, versions, ``cases`` in suite order and a
        ``summary`` of counts per status with ``passed`` true when every case
        passed.

    Raises:
        EquivalenceError: ``workers`` below 1.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise EquivalenceError(
            f"workers must be a whole number >= 1, received {workers!r}."
        )
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    entries: dict[str, dict[str, Any]] = {}
    if workers == 1 or len(suite.cases) == 1:
        for case in suite.cases:
            entries[case.name] = run_case(case, out)
            if progress:
                progress(entries[case.name])
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(workers, len(suite.cases)), mp_context=context
        ) as pool:
            futures = {pool.submit(run_case, case, out): case for case in suite.cases}
            for future in concurrent.futures.as_completed(futures):
                case = futures[future]
                try:
                    entry = future.result()
                except Exception as error:  # noqa: BLE001 - a crashed worker
                    entry = {
                        "name": case.name,
                        "ran": False,
                        "status": "error",
                        "error": "worker process failed: "
                        f"{type(error).__name__}: {error}",
                        "case": case.to_dict(),
                    }
                entries[case.name] = entry
                if progress:
                    progress(entry)
    ordered = [entries[case.name] for case in suite.cases]
    counts = {status: 0 for status in ("pass", "fail", "error")}
    for entry in ordered:
        counts[entry["status"]] += 1
    report = {
        "suite": str(suite.path),
        "name": suite.name,
        "started": started.isoformat(),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(),
        "workers": workers,
        "versions": _versions(),
        "cases_ran": [entry["name"] for entry in ordered if entry.get("ran")],
        "summary": {
            **counts,
            "total": len(ordered),
            "passed": counts["pass"] == len(ordered),
        },
        "cases": ordered,
    }
    write_report(report, out / REPORT_NAME)
    return report


def write_report(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``report`` as indented JSON through a temporary file and a rename."""
    text = json.dumps(report, indent=2, allow_nan=False, default=_json_default)

    def write(temporary: str) -> None:
        Path(temporary).write_text(text + "\n", encoding="utf-8")

    return atomic_write(path, write)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def format_table(report: Mapping[str, Any]) -> str:
    """Return a plain-text table of the report: one row per case."""
    header = (
        "case",
        "status",
        "backends",
        "mismatch",
        "unexplained",
        "max |diff|",
        "first divergence",
        "s",
    )
    rows = [header]
    for entry in report["cases"]:
        comparison = entry.get("comparison") or {}
        measures = comparison.get("metrics", {})
        divergence = comparison.get("first_divergence")
        if entry["status"] == "error":
            where = entry.get("error", "")[:60]
        elif divergence:
            where = (
                f"{divergence['layer']} n{divergence['neuron']} "
                f"s{divergence['sample']} t{divergence['step']}: "
                f"{divergence['classification']}"
            )
        else:
            where = "none"
        used = " vs ".join(b["used"] for b in entry.get("backends", [])) or "-"
        rows.append(
            (
                entry["name"],
                entry["status"].upper(),
                used,
                _cell(measures.get("mismatch_fraction"), ".3g"),
                _cell(measures.get("unexplained_mismatches"), ".0f"),
                _cell(measures.get("max_abs_difference"), ".2g"),
                where,
                f"{entry.get('seconds', 0.0):.1f}",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    summary = report["summary"]
    lines.append(
        f"{summary['pass']} passed, {summary['fail']} failed, "
        f"{summary['error']} errors of {summary['total']} cases"
    )
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)

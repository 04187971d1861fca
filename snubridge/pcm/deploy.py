"""Deployment of a :class:`~snubridge.spec.NetworkSpec` onto emulated PCM crossbars.

Every synaptic matrix of the network is programmed onto its own set of
tiles: dense, recurrent and readout kernels, and convolution kernels as
``(kh kw c_in, c_out)`` im2col matrices. Biases, thresholds and the neuron
dynamics stay digital. The SNU dynamics run in :func:`snubridge.reference.simulate`
with every matrix product replaced by crossbar reads. The network is scored
at several times after programming, with and without global drift
compensation, on the same programmed devices and the same sampled drift.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from snubridge.errors import DataError, DeviceError
from snubridge.params_file import atomic_write
from snubridge.pcm.crossbar import AnalogMatrix, CrossbarConfig, MatrixState
from snubridge.pcm.devices import DeviceModel, device_from_name
from snubridge.pcm.energy import estimate_inference, mean_input_activity
from snubridge.reference import simulate
from snubridge.spec import NetworkSpec

logger = logging.getLogger(__name__)

DEFAULT_TIMES: dict[str, float] = {
    "1 s": 1.0,
    "1 hour": 3600.0,
    "1 day": 86400.0,
    "1 month": 30 * 86400.0,
    "1 year": 365 * 86400.0,
}
TASKS = ("classification", "music")
MAPPABLE_KINDS = ("snu_dense", "snu_recurrent", "snu_conv2d", "readout")


def synaptic_matrices(spec: NetworkSpec) -> dict[str, np.ndarray]:
    """Return every matrix the crossbars store, keyed as the ``matmul`` hook names them.

    Keys are layer names, with ``"/recurrent"`` appended for recurrent kernels.

    Raises:
        DeviceError: a layer kind the backend cannot map, or a layer without
            a kernel.
    """
    matrices: dict[str, np.ndarray] = {}
    for layer in spec.layers:
        if layer.kind == "flatten":
            continue
        if layer.kind not in MAPPABLE_KINDS:
            raise DeviceError(
                f"Layer {layer.name!r} of kind {layer.kind!r} cannot be mapped onto "
                f"PCM crossbars; mappable kinds are {', '.join(MAPPABLE_KINDS)}."
            )
        if layer.kernel is None:
            raise DeviceError(
                f"Layer {layer.name!r} has no kernel, so there is nothing to program; "
                "load the trained weights into the spec first."
            )
        kernel = np.asarray(layer.kernel, dtype=np.float64)
        if layer.kind == "snu_conv2d":
            kernel = kernel.reshape(-1, kernel.shape[-1])
        matrices[layer.name] = kernel
        if layer.kind == "snu_recurrent":
            if layer.recurrent_kernel is None:
                raise DeviceError(
                    f"Layer {layer.name!r} is snu_recurrent but has no "
                    "recurrent_kernel."
                )
            matrices[f"{layer.name}/recurrent"] = np.asarray(
                layer.recurrent_kernel, dtype=np.float64
            )
    return matrices


class _RecordingHook:
    """``matmul`` hook that computes exact products and keeps the first inputs."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.inputs: dict[str, list[np.ndarray]] = {}

    def __call__(self, key: str, inputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        stored = self.inputs.setdefault(key, [])
        have = sum(len(chunk) for chunk in stored)
        if have < self.rows:
            stored.append(np.array(inputs[: self.rows - have]))
        return inputs @ weights


class EmulatorHook:
    """``matmul`` hook that reads sampled crossbar states instead of multiplying.

    Args:
        states: Matrix key to sampled state.
        rng: Generator for read and output noise.
    """

    def __init__(
        self, states: Mapping[str, MatrixState], rng: np.random.Generator
    ) -> None:
        self.states = states
        self.rng = rng

    def __call__(self, key: str, inputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        if key not in self.states:
            raise DeviceError(
                f"No crossbar contains the matrix {key!r}; mapped matrices are "
                f"{', '.join(self.states)}."
            )
        state = self.states[key]
        if tuple(weights.shape) != state.matrix.shape:
            raise DeviceError(
                f"Matrix {key!r} was programmed with shape {state.matrix.shape} but "
                f"the network now multiplies by {tuple(weights.shape)}."
            )
        return state.matmul(inputs, self.rng)


def program_network(
    spec: NetworkSpec,
    device: DeviceModel,
    config: CrossbarConfig,
    rng: np.random.Generator,
    calibration_inputs: np.ndarray | None = None,
) -> dict[str, AnalogMatrix]:
    """Program every synaptic matrix of ``spec``; return key to :class:`AnalogMatrix`.

    ``calibration_inputs`` (network inputs) set each ADC range when
    ``config.adc_range`` is None: the network runs once in exact arithmetic and
    the inputs each matrix receives are recorded. A reference read for drift
    compensation is taken right after programming.
    """
    matrices = synaptic_matrices(spec)
    recorded: dict[str, np.ndarray] = {}
    if config.adc_range is None and config.adc_bits is not None:
        if calibration_inputs is None:
            raise DeviceError(
                "CrossbarConfig.adc_range is None (calibrated), so program_network "
                "needs calibration_inputs."
            )
        hook = _RecordingHook(rows=4096)
        simulate(spec, calibration_inputs, matmul=hook)
        recorded = {key: np.concatenate(chunks) for key, chunks in hook.inputs.items()}
    programmed = {}
    for key, weights in matrices.items():
        matrix = AnalogMatrix(
            weights,
            device,
            config,
            rng,
            name=key,
            calibration_inputs=recorded.get(key),
        )
        matrix.record_reference(rng)
        programmed[key] = matrix
    return programmed


def _score(
    spec: NetworkSpec,
    outputs: np.ndarray,
    labels: np.ndarray,
    task: str,
    mask: np.ndarray | None,
) -> float:
    if task == "classification":
        values = outputs if outputs.ndim == 2 else outputs.sum(axis=1)
        values = values.reshape(values.shape[0], -1)
        predicted = values.argmax(axis=1)
        target = labels if labels.ndim == 1 else labels.argmax(axis=-1)
        return float(np.mean(predicted == target))
    from snubridge.data.jsb import frame_nll

    probabilities = np.clip(outputs, 0.0, 1.0)
    return float(frame_nll(probabilities, labels, mask))


def _run(
    spec: NetworkSpec,
    data: np.ndarray,
    batch_size: int,
    hook: Any = None,
) -> np.ndarray:
    last = spec.layers[-1].name
    chunks = []
    for start in range(0, data.shape[0], batch_size):
        result = simulate(spec, data[start : start + batch_size], matmul=hook)
        chunks.append(result.outputs[last])
    return np.concatenate(chunks)


@dataclasses.dataclass
class DeploymentReport:
    """Scores of a network on emulated PCM crossbars at several inference times.

    Attributes:
        task: ``"classification"`` (metric: accuracy, a fraction) or ``"music"``
            (metric: frame NLL in nats per step).
        metric: ``"accuracy"`` or ``"frame_nll"``.
        software: Metric of the exact float64 network on the same data.
        times: Label to seconds after programming.
        compensated: Label to the mean metric with drift compensation.
        uncompensated: Label to the mean metric without it.
        compensated_spread, uncompensated_spread: Label to the standard
            deviation over repeats (0 for one repeat).
        compensation_factors: Label to matrix key to the mean ``alpha``.
        matrices: Mapping summary of each matrix (devices, tiles, scales).
        devices: PCM devices used in total (two per weight).
        tiles: Tiles used in total.
        device_model: Device model fields.
        crossbar: Crossbar configuration fields.
        samples: Number of samples scored.
        repeats: Independent programmings averaged.
        energy: Energy and latency estimate of one sample, from
            :func:`snubridge.pcm.energy.estimate_inference` with the input
            activity measured on the calibration samples.
    """

    task: str
    metric: str
    software: float
    times: dict[str, float]
    compensated: dict[str, float]
    uncompensated: dict[str, float]
    compensated_spread: dict[str, float]
    uncompensated_spread: dict[str, float]
    compensation_factors: dict[str, dict[str, float]]
    matrices: list[dict[str, Any]]
    devices: int
    tiles: int
    device_model: dict[str, Any]
    crossbar: dict[str, Any]
    samples: int
    repeats: int
    energy: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=_json_default))

    def table(self) -> str:
        """Return a plain-text table of the metric against time."""
        percent = self.metric == "accuracy"
        unit = "accuracy %" if percent else "frame NLL (nats/step)"

        def show(value: float) -> str:
            return f"{100 * value:7.2f}" if percent else f"{value:7.3f}"

        lines = [
            f"PCM deployment ({self.device_model.get('name')} model, {self.devices} "
            f"devices on {self.tiles} tiles, {self.samples} samples, {self.repeats} "
            f"programming(s)); {unit}",
            f"software (exact float64): {show(self.software).strip()}",
            f"{'time after programming':<24} {'compensated':>12} {'uncompensated':>14}",
        ]
        for label in self.times:
            lines.append(
                f"{label:<24} {show(self.compensated[label]):>12} "
                f"{show(self.uncompensated[label]):>14}"
            )
        component = self.energy.get("component_estimate")
        if component:
            chip = self.energy["chip_level_estimate"]
            total = component["total_energy_j"] * 1e9
            lines.append(
                f"energy per sample (estimate): {total:.1f} nJ from device, DAC and "
                f"ADC counts, {chip['energy_j'] * 1e9:.1f} nJ at the efficiency of "
                "IBM's 64-core PCM chip"
            )
        return "\n".join(lines)

    def save(
        self, directory: str | os.PathLike, stem: str = "pcm_deploy"
    ) -> dict[str, Path]:
        """Write ``STEM.json``, ``.txt`` and ``.png`` atomically; return the paths."""
        folder = Path(directory)
        paths = {
            "json": folder / f"{stem}.json",
            "table": folder / f"{stem}.txt",
            "plot": folder / f"{stem}.png",
        }
        text = json.dumps(self.to_dict(), indent=2)
        atomic_write(paths["json"], lambda tmp: Path(tmp).write_text(text + "\n"))
        table = self.table()
        atomic_write(paths["table"], lambda tmp: Path(tmp).write_text(table + "\n"))
        atomic_write(paths["plot"], self._write_plot)
        return paths

    def _write_plot(self, path: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot

        seconds = [self.times[label] for label in self.times]
        scale = 100.0 if self.metric == "accuracy" else 1.0
        figure, axes = pyplot.subplots(figsize=(6, 4))
        for values, spread, label, marker in (
            (self.compensated, self.compensated_spread, "drift compensation on", "o"),
            (
                self.uncompensated,
                self.uncompensated_spread,
                "drift compensation off",
                "s",
            ),
        ):
            mean = np.array([values[key] for key in self.times]) * scale
            error = np.array([spread[key] for key in self.times]) * scale
            axes.errorbar(
                seconds, mean, yerr=error, marker=marker, label=label, capsize=3
            )
        axes.axhline(
            self.software * scale, color="black", linestyle="--", label="software"
        )
        axes.set_xscale("log")
        axes.set_xticks(seconds)
        axes.set_xticklabels(list(self.times), rotation=30)
        axes.set_xlabel("time after programming")
        axes.set_ylabel(
            "accuracy (%)" if self.metric == "accuracy" else "frame NLL (nats/step)"
        )
        axes.set_title(
            f"{self.task} on emulated PCM ({self.device_model.get('name')} model)"
        )
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, format="png", dpi=120)
        pyplot.close(figure)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def _check_inputs(
    spec: NetworkSpec,
    data: np.ndarray,
    labels: np.ndarray,
    task: str,
    mask: np.ndarray | None,
) -> None:
    if task not in TASKS:
        raise DeviceError(f"task={task!r} is not supported; expected one of {TASKS}.")
    expected = tuple(spec.input_shape)
    if data.ndim != 2 + len(expected) or tuple(data.shape[2:]) != expected:
        raise DataError(
            f"data must have shape (samples, steps, {', '.join(map(str, expected))}), "
            f"received {data.shape}."
        )
    if labels.shape[0] != data.shape[0]:
        raise DataError(
            f"labels contain {labels.shape[0]} samples but data contains "
            f"{data.shape[0]}."
        )
    if not np.all(np.isfinite(data)):
        raise DataError("data contains NaN or infinity.")
    if task == "music" and mask is not None and mask.shape != labels.shape[:-1]:
        raise DataError(
            f"mask must have shape {labels.shape[:-1]}, received {mask.shape}."
        )


def deploy(
    spec: NetworkSpec,
    data: np.ndarray,
    labels: np.ndarray,
    *,
    task: str = "classification",
    mask: np.ndarray | None = None,
    device: DeviceModel | str = "statistical",
    crossbar: CrossbarConfig | None = None,
    times: Mapping[str, float] | Sequence[float] | None = None,
    repeats: int = 1,
    seed: int = 0,
    batch_size: int = 256,
    calibration_samples: int = 64,
) -> DeploymentReport:
    """Program ``spec`` onto PCM crossbars and score it at several inference times.

    Args:
        spec: Trained network.
        data: Encoded inputs ``(samples, steps, *spec.input_shape)``.
        labels: Classification: class indices ``(samples,)`` or one-hot. Music:
            target frames of the same shape as the network's output.
        task: ``"classification"`` (accuracy of the argmax of the last layer's
            output, summed over steps when it has a time axis) or ``"music"``
            (frame NLL of the last layer's outputs as note probabilities).
        mask: Music only: valid steps ``(samples, steps)``.
        device: Device model or preset name (``"statistical"``, ``"pulse"``).
        crossbar: Crossbar settings; default :class:`CrossbarConfig`.
        times: Inference times in seconds after programming, as a label to
            seconds mapping or a list of seconds; default 1 s, 1 hour, 1 day,
            30 days, 365 days.
        repeats: Independent programmings to average.
        seed: Seed of every random draw.
        batch_size: Samples simulated at once.
        calibration_samples: Samples used to calibrate ADC ranges.
    """
    data = np.asarray(data)
    labels = np.asarray(labels)
    mask = None if mask is None else np.asarray(mask)
    spec.validate()
    _check_inputs(spec, data, labels, task, mask)
    if isinstance(device, str):
        device = device_from_name(device)
    config = crossbar or CrossbarConfig()
    times = _resolve_times(times)
    if int(repeats) < 1:
        raise DeviceError(f"repeats must be at least 1, received {repeats!r}.")
    if int(batch_size) < 1:
        raise DeviceError(f"batch_size must be at least 1, received {batch_size!r}.")
    rng = np.random.default_rng(seed)
    software = _score(spec, _run(spec, data, batch_size), labels, task, mask)
    logger.info("software %s: %.4f on %d samples", task, software, data.shape[0])
    scores: dict[str, dict[str, list[float]]] = {
        "on": {label: [] for label in times},
        "off": {label: [] for label in times},
    }
    factors: dict[str, dict[str, list[float]]] = {label: {} for label in times}
    calibration = data[: max(1, int(calibration_samples))]
    activity_hook = _RecordingHook(rows=4096)
    simulate(spec, calibration, matmul=activity_hook)
    activity = mean_input_activity(
        {key: np.concatenate(chunks) for key, chunks in activity_hook.inputs.items()}
    )
    programmed: dict[str, AnalogMatrix] = {}
    for repeat in range(int(repeats)):
        programmed = program_network(spec, device, config, rng, calibration)
        for label, seconds in times.items():
            states = {
                key: matrix.state(seconds, rng) for key, matrix in programmed.items()
            }
            hook = EmulatorHook(states, rng)
            off = _score(spec, _run(spec, data, batch_size, hook), labels, task, mask)
            for key, state in states.items():
                factors[label].setdefault(key, []).append(state.compensate_drift(rng))
            on = _score(spec, _run(spec, data, batch_size, hook), labels, task, mask)
            scores["on"][label].append(on)
            scores["off"][label].append(off)
            logger.info(
                "repeat %d, %s: %.4f with drift compensation, %.4f without",
                repeat,
                label,
                on,
                off,
            )
    summaries = [matrix.summary() for matrix in programmed.values()]
    return DeploymentReport(
        task=task,
        metric="accuracy" if task == "classification" else "frame_nll",
        software=software,
        times=dict(times),
        compensated={label: float(np.mean(v)) for label, v in scores["on"].items()},
        uncompensated={label: float(np.mean(v)) for label, v in scores["off"].items()},
        compensated_spread={
            label: float(np.std(v)) for label, v in scores["on"].items()
        },
        uncompensated_spread={
            label: float(np.std(v)) for label, v in scores["off"].items()
        },
        compensation_factors={
            label: {key: float(np.mean(v)) for key, v in entry.items()}
            for label, entry in factors.items()
        },
        matrices=summaries,
        devices=sum(summary["devices"] for summary in summaries),
        tiles=sum(summary["tiles"] for summary in summaries),
        device_model=dataclasses.asdict(device),
        crossbar=dataclasses.asdict(config),
        samples=int(data.shape[0]),
        repeats=int(repeats),
        energy=estimate_inference(
            spec, programmed, int(data.shape[1]), input_activity=activity
        ),
    )


def _resolve_times(
    times: Mapping[str, float] | Sequence[float] | None,
) -> dict[str, float]:
    if times is None:
        return dict(DEFAULT_TIMES)
    if isinstance(times, Mapping):
        resolved = {str(label): float(value) for label, value in times.items()}
    else:
        resolved = {_time_label(float(value)): float(value) for value in times}
    if not resolved:
        raise DeviceError("times must name at least one inference time.")
    for label, value in resolved.items():
        if not math.isfinite(value) or value <= 0:
            raise DeviceError(
                f"Inference time {label!r} must be a positive number of seconds, "
                f"received {value!r}."
            )
    return resolved


def _time_label(seconds: float) -> str:
    for label, value in DEFAULT_TIMES.items():
        if math.isclose(seconds, value):
            return label
    return f"{seconds:g} s"

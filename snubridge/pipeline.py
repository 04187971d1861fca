"""The main job: train -> convert -> validate -> deploy, with one report.

Every stage reads the artefacts of the stage before it from the output folder
and writes its own, ending with ``<stage>.json``. A stage whose JSON exists and
was made with the same settings is skipped, so an interrupted pipeline resumes
from the last finished stage. The layout of the output folder::

    train.json, model.keras, params.h5, checkpoints/     training
    convert.json, brian2/run_brian2.py, brian2/...       Brian2 export
    validate.json, validation/report.json, *.png          Keras vs Brian2
    deploy.json, deployment/report.json, *.png           PCM crossbar
    report.json                                          headline numbers
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from snubridge.errors import SnubridgeError
from snubridge.params_file import atomic_write
from snubridge.train_stage import TrainConfig, load_mnist_split, run_train

logger = logging.getLogger(__name__)

STAGES = ("train", "convert", "validate", "deploy")
# Brian2 targets; the standalone GPU devices need brian2cuda or brian2genn and
# fall back to numpy with one logged warning where those are not installed.
BRIAN2_TARGETS = ("numpy", "cython", "cpp_standalone", "cuda_standalone", "genn")
REPORT_SCHEMA_VERSION = 1
# Largest accepted float64 difference of readout outputs between Keras and
# Brian2: about 1e4 times the float64 epsilon, for sums of a few hundred terms.
READOUT_TOLERANCE = 1e-12


@dataclasses.dataclass
class PipelineConfig:
    """Settings of a pipeline run (training settings live in ``train``).

    Attributes:
        train: Training settings; ``train.out`` is the output folder.
        target: Brian2 code-generation target.
        threads: OpenMP threads of a standalone Brian2 device, or None.
        validate_samples: Held-out digits run through Keras and Brian2.
        deploy_samples: Held-out digits scored on the PCM emulator.
        device: PCM device preset name.
        inference_times: Label to seconds after programming.
        drift_tolerance_points: Largest accepted accuracy drop, in percentage
            points, of the drift-compensated PCM network one day after
            programming.
        seed: Seed of input encoding and device sampling.
        restart: Run every stage again even if its results exist.
    """

    train: TrainConfig
    target: str = "numpy"
    threads: int | None = None
    validate_samples: int = 64
    deploy_samples: int = 1000
    device: str = "statistical"
    inference_times: dict[str, float] = dataclasses.field(
        default_factory=lambda: {
            "1 s": 1.0,
            "1 hour": 3600.0,
            "1 day": 86400.0,
            "1 month": 30 * 86400.0,
            "1 year": 365 * 86400.0,
        }
    )
    drift_tolerance_points: float = 1.0
    seed: int = 0
    restart: bool = False

    def check(self) -> PipelineConfig:
        """Raise :class:`SnubridgeError` naming the first invalid field."""
        self.train.check()
        if self.train.arch not in ("dense", "conv"):
            raise SnubridgeError(
                f"The pipeline runs the dense or conv SNU on MNIST, received "
                f"arch={self.train.arch!r}; use `snubridge train` for the others."
            )
        for field in ("validate_samples", "deploy_samples"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise SnubridgeError(
                    f"{field} must be a positive integer, received {value!r}."
                )
        if self.target not in BRIAN2_TARGETS:
            raise SnubridgeError(
                f"target={self.target!r}; expected one of {', '.join(BRIAN2_TARGETS)}."
            )
        if not self.drift_tolerance_points >= 0:
            raise SnubridgeError(
                "drift_tolerance_points must be >= 0, received "
                f"{self.drift_tolerance_points!r}."
            )
        return self

    @classmethod
    def quick(cls, train: TrainConfig, **overrides: Any) -> PipelineConfig:
        """Settings that finish within about 5 minutes on a 2-core machine."""
        train.epochs = min(train.epochs, 2)
        train.n_steps = min(train.n_steps, 25)
        defaults = dict(validate_samples=16, deploy_samples=300)
        defaults.update(overrides)
        return cls(train=train, **defaults)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, default=_json_default)
    atomic_write(path, lambda temporary: Path(temporary).write_text(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Pipeline:
    """Runs the stages in order and gathers ``report.json``."""

    def __init__(
        self, config: PipelineConfig, progress: Callable[[str], None] | None = None
    ):
        self.config = config.check()
        if config.restart:
            # Running every stage again includes training from scratch.
            config.train.resume = False
        self.out = Path(config.train.out)
        self.progress = progress or (lambda message: logger.info("%s", message))
        self._evaluation = None

    def stage_settings(self, stage: str) -> dict[str, Any]:
        """Return the settings that decide whether a finished stage is reusable."""
        config = self.config
        train = dataclasses.asdict(config.train)
        train.pop("resume")
        settings: dict[str, Any] = {"train": train}
        if stage in ("convert", "validate", "deploy"):
            settings["target"] = config.target
        if stage == "validate":
            settings.update(samples=config.validate_samples, seed=config.seed)
        if stage == "deploy":
            settings.update(
                samples=config.deploy_samples,
                device=config.device,
                times=config.inference_times,
                tolerance=config.drift_tolerance_points,
                seed=config.seed,
            )
        return settings

    def _finished(self, stage: str) -> dict[str, Any] | None:
        path = self.out / f"{stage}.json"
        if self.config.restart or not path.is_file():
            return None
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError:
            logger.warning("%s is unreadable; running the %s stage again", path, stage)
            return None
        if summary.get("settings") != json.loads(
            json.dumps(self.stage_settings(stage))
        ):
            logger.info(
                "Settings changed since the last %s stage; running it again", stage
            )
            return None
        return summary

    def run(self) -> dict[str, Any]:
        """Run every stage that has no reusable result; return the report."""
        from snubridge.folders import output_folder

        with output_folder(self.out):
            return self._run_stages()

    def _run_stages(self) -> dict[str, Any]:
        summaries: dict[str, dict[str, Any]] = {}
        for index, stage in enumerate(STAGES, start=1):
            previous = self._finished(stage)
            if previous is not None:
                self.progress(f"[{index}/{len(STAGES)}] {stage}: reusing {stage}.json")
                summaries[stage] = previous
                continue
            self.progress(f"[{index}/{len(STAGES)}] {stage} ...")
            started = time.perf_counter()
            summary = getattr(self, f"_{stage}")()
            summary["seconds"] = time.perf_counter() - started
            summary["settings"] = self.stage_settings(stage)
            _write_json(self.out / f"{stage}.json", summary)
            summaries[stage] = summary
            self.progress(
                f"[{index}/{len(STAGES)}] {stage} done in {summary['seconds']:.1f} s"
            )
        report = self._report(summaries)
        _write_json(self.out / "report.json", report)
        return report

    def _evaluation_digits(self):
        if self._evaluation is None:
            train = self.config.train
            _, self._evaluation = load_mnist_split(
                train.data, train.n_train, train.seed
            )
        return self._evaluation

    def _inputs(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from snubridge.encoders import rate_encode

        digits = self._evaluation_digits()
        count = min(count, len(digits))
        spikes = rate_encode(
            digits.images[:count], self.config.train.n_steps, seed=seed
        )
        shape = (28, 28, 1) if self.config.train.arch == "conv" else None
        return spikes.to_array(np.float64, shape=shape), digits.labels[:count]

    def _train(self) -> dict[str, Any]:
        summary = run_train(self.config.train)
        summary.pop("config", None)
        return summary

    def _convert(self) -> dict[str, Any]:
        from snubridge import load_params
        from snubridge.converters.brian2_script import export_script

        spec = load_params(self.out / "params.h5")
        script = export_script(spec, self.out / "brian2")
        return {
            "script": str(script),
            "precision": spec.precision,
            "dt": spec.dt,
            "layers": [
                {"name": layer.name, "kind": layer.kind, "units": layer.units}
                for layer in spec.layers
            ],
        }

    def _validate(self) -> dict[str, Any]:
        from snubridge import keras_io, load_params
        from snubridge.converters.brian2_export import run_brian2
        from snubridge.validation import plots
        from snubridge.validation.compare import compare_results

        spec = load_params(self.out / "params.h5")
        inputs, labels = self._inputs(
            self.config.validate_samples, self.config.seed + 1
        )
        folder = self.out / "validation"
        folder.mkdir(exist_ok=True)
        trained = keras_io.run_keras(
            keras_io.load_model(self.out / "model.keras"), inputs
        )
        keras64 = keras_io.run_keras(
            keras_io.model_from_spec(spec, dtype="float64"), inputs
        )
        brian2 = run_brian2(
            spec,
            inputs,
            target=self.config.target,
            record_states=True,
            threads=self.config.threads,
        )
        exact = compare_results(
            spec, inputs, keras64, brian2, names=("keras_float64", "brian2")
        )
        rounding = compare_results(
            spec,
            inputs,
            trained,
            brian2,
            precisions=(spec.precision, "float64"),
            names=("keras_trained", "brian2"),
        )
        readout = spec.layers[-1].name
        accuracy = {
            name: float(np.mean(np.argmax(result.outputs[readout], axis=-1) == labels))
            for name, result in (("keras", trained), ("brian2", brian2))
        }
        plots.plot_rasters(
            spec,
            keras64,
            brian2,
            folder / "raster.png",
            labels=("Keras float64", "Brian2"),
        )
        neurons = plots.choose_neurons(spec, exact)
        plots.plot_membranes(
            spec,
            keras64,
            brian2,
            folder / "membranes.png",
            neurons=neurons,
            labels=("Keras float64", "Brian2"),
        )
        report = {"float64": exact.to_dict(), "trained_precision": rounding.to_dict()}
        _write_json(folder / "report.json", report)
        self._write_suite(folder / "suite.toml")
        identity = {
            name: 1.0 - layer.mismatch_fraction
            for name, layer in exact.layers.items()
            if layer.spiking
        }
        identity_trained = {
            name: 1.0 - layer.mismatch_fraction
            for name, layer in rounding.layers.items()
            if layer.spiking
        }
        divergence = exact.first_divergence or rounding.first_divergence
        # Spikes must agree exactly; readouts are sums of float64 products that
        # Brian2 adds in another order, so they agree to rounding only.
        readout_difference = exact.layers[readout].max_output_difference
        passed = exact.spikes_identical and (readout_difference <= READOUT_TOLERANCE)
        return {
            "samples": int(len(labels)),
            "passed": bool(passed),
            "readout_max_difference_float64": float(readout_difference),
            "identity_float64": identity,
            "identity_trained_precision": identity_trained,
            "first_divergence": None if divergence is None else divergence.to_dict(),
            "accuracy": accuracy,
            "report": str(folder / "report.json"),
            "pictures": [str(folder / "raster.png"), str(folder / "membranes.png")],
            "suite": str(folder / "suite.toml"),
        }

    def _write_suite(self, path: Path) -> None:
        """Write a validation suite of this run's model for ``snubridge validate``."""
        train = self.config.train
        data = (
            ""
            if train.data is None
            else f"data = {json.dumps(str(Path(train.data).resolve()))}\n"
        )
        text = (
            "# Keras against Brian2 for the model of this pipeline run:\n"
            f"#     snubridge validate {path}\n"
            f'name = "pipeline_{train.arch}"\n\n'
            "[defaults]\n"
            'model = "../params.h5"\n'
            'inputs = "mnist"\n'
            f"{data}"
            f"samples = {self.config.validate_samples}\n"
            f"steps = {train.n_steps}\n"
            f"seed = {self.config.seed}\n"
            f'target = "{self.config.target}"\n'
            'backends = ["keras", "brian2"]\n\n'
            "[[case]]\n"
            'name = "float64"\n'
            'precision = "float64"\n\n'
            "[case.tolerances]\n"
            "mismatch_fraction = 0.0\n\n"
            "[[case]]\n"
            f'name = "{train.precision}"\n'
            f'precision = "{train.precision}"\n\n'
            "[case.tolerances]\n"
            "unexplained_mismatches = 0\n"
        )
        atomic_write(path, lambda temporary: Path(temporary).write_text(text))

    def _deploy(self) -> dict[str, Any]:
        from snubridge import load_params
        from snubridge.pcm.deploy import deploy

        spec = load_params(self.out / "params.h5")
        inputs, labels = self._inputs(self.config.deploy_samples, self.config.seed + 2)
        report = deploy(
            spec,
            inputs,
            labels,
            device=self.config.device,
            times=self.config.inference_times,
            seed=self.config.seed,
        )
        folder = self.out / "deployment"
        paths = report.save(folder, stem="report")
        day = "1 day" if "1 day" in report.compensated else list(report.compensated)[-1]
        drop = (report.software - report.compensated[day]) * 100
        return {
            "samples": int(len(labels)),
            "software_accuracy": report.software,
            "compensated": report.compensated,
            "uncompensated": report.uncompensated,
            "devices": report.devices,
            "tiles": report.tiles,
            "drop_points_at": day,
            "drop_points": drop,
            "passed": bool(drop <= self.config.drift_tolerance_points),
            "table": report.table(),
            "report": str(paths["json"]),
            "plot": str(paths["plot"]),
        }

    def _report(self, summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from snubridge import __version__

        train, validate = summaries["train"], summaries["validate"]
        deploy = summaries["deploy"]
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "snubridge_version": __version__,
            "arch": train["arch"],
            "data": train["data"],
            "keras_accuracy": train["keras_accuracy"],
            "keras_accuracy_samples": train["n_evaluation"],
            "validation_samples": validate["samples"],
            "keras_accuracy_on_validation_samples": validate["accuracy"]["keras"],
            "brian2_accuracy_on_validation_samples": validate["accuracy"]["brian2"],
            "raster_identity_float64": validate["identity_float64"],
            "raster_identity_trained_precision": validate["identity_trained_precision"],
            "first_divergence": validate["first_divergence"],
            "pcm_samples": deploy["samples"],
            "pcm_software_accuracy": deploy["software_accuracy"],
            "pcm_accuracy_compensated": deploy["compensated"],
            "pcm_accuracy_uncompensated": deploy["uncompensated"],
            "pcm_devices": deploy["devices"],
            "pcm_tiles": deploy["tiles"],
            "stage_seconds": {stage: summaries[stage]["seconds"] for stage in STAGES},
            "passed": {"validate": validate["passed"], "deploy": deploy["passed"]},
            "files": {
                "model": str(self.out / "model.keras"),
                "params": str(self.out / "params.h5"),
                "brian2_script": summaries["convert"]["script"],
                "validation_report": validate["report"],
                "deployment_report": deploy["report"],
            },
        }


def summary_table(report: dict[str, Any]) -> str:
    """Return the report's headline numbers as a plain-text table."""
    rows = [
        (
            "Keras accuracy",
            f"{report['keras_accuracy']:.4f} "
            f"({report['keras_accuracy_samples']} digits)",
        ),
        (
            "Brian2 accuracy",
            f"{report['brian2_accuracy_on_validation_samples']:.4f} "
            f"({report['validation_samples']} digits; Keras "
            f"{report['keras_accuracy_on_validation_samples']:.4f})",
        ),
    ]
    for name, value in report["raster_identity_float64"].items():
        trained = report["raster_identity_trained_precision"].get(name, float("nan"))
        rows.append(
            (f"raster identity {name}", f"{value:.6f} float64, {trained:.6f} trained")
        )
    divergence = report["first_divergence"]
    rows.append(
        (
            "first divergence",
            "none"
            if divergence is None
            else f"{divergence.get('layer')} neuron {divergence.get('neuron')} sample "
            f"{divergence.get('sample')} step {divergence.get('step')}",
        )
    )
    rows.append(
        (
            "PCM software accuracy",
            f"{report['pcm_software_accuracy']:.4f} "
            f"({report['pcm_samples']} digits, {report['pcm_devices']} devices, "
            f"{report['pcm_tiles']} tiles)",
        )
    )
    for label, value in report["pcm_accuracy_compensated"].items():
        off = report["pcm_accuracy_uncompensated"][label]
        rows.append((f"PCM at {label}", f"{value:.4f} compensated, {off:.4f} without"))
    for stage, seconds in report["stage_seconds"].items():
        rows.append((f"{stage} time", f"{seconds:.1f} s"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

"""``snubridge pipeline``: train, convert, validate and deploy in one command."""

from __future__ import annotations

import argparse
import json

from snubridge.cli import train as train_command
from snubridge.pipeline import BRIAN2_TARGETS, Pipeline, PipelineConfig, summary_table

# Library fields named in error messages, and the options that set them.
FIELD_OPTIONS = {
    **train_command.FIELD_OPTIONS,
    "drift_tolerance_points": "--drift-tolerance",
    "validate_samples": "--validate-samples",
    "deploy_samples": "--deploy-samples",
    "threads": "--threads",
}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="train -> convert -> validate -> deploy with one report",
        description="Train an SNU network on rate-coded MNIST, export it to Brian2, "
        "check that Keras and Brian2 give the same spikes, deploy it on the "
        "emulated PCM crossbar and write report.json. Finished stages are reused "
        "when the pipeline runs again with the same settings. Exit status 0 means "
        "every stage met its tolerances.",
    )
    train_command.add_training_options(parser)
    parser.add_argument(
        "--out", default="snubridge-run", help="output folder (default: snubridge-run)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run of about a minute on 2 cores: at most 2 "
        "epochs and 25 steps, 16 validation and 300 PCM digits",
    )
    parser.add_argument(
        "--target",
        choices=BRIAN2_TARGETS,
        default="numpy",
        help="Brian2 code-generation target (default: numpy); the GPU devices "
        "cuda_standalone and genn need brian2cuda or brian2genn",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OpenMP threads of a standalone Brian2 device (default: none)",
    )
    parser.add_argument(
        "--validate-samples",
        type=int,
        default=None,
        help="held-out digits compared in Keras and Brian2 "
        "(default: 64; 16 with --quick)",
    )
    parser.add_argument(
        "--deploy-samples",
        type=int,
        default=None,
        help="held-out digits scored on the PCM emulator "
        "(default: 1000; 300 with --quick)",
    )
    parser.add_argument(
        "--device",
        choices=("statistical", "pulse"),
        default="statistical",
        help="PCM device preset (default: statistical, the model fitted "
        "on a million devices)",
    )
    parser.add_argument(
        "--drift-tolerance",
        type=float,
        default=1.0,
        help="largest accepted drop in percentage points of the "
        "drift-compensated PCM accuracy one day after programming "
        "(default: 1.0)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="run every stage again instead of reusing finished ones",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    train = train_command.config_from_args(args)
    options = dict(
        threads=args.threads,
        target=args.target,
        device=args.device,
        seed=args.seed,
        drift_tolerance_points=args.drift_tolerance,
        restart=args.restart,
    )
    if args.validate_samples is not None:
        options["validate_samples"] = args.validate_samples
    if args.deploy_samples is not None:
        options["deploy_samples"] = args.deploy_samples
    if args.quick:
        config = PipelineConfig.quick(train, **options)
    else:
        config = PipelineConfig(train=train, **options)
    report = Pipeline(config, progress=print).run()
    print()
    print(summary_table(report))
    print(f"\nreport: {config.train.out}/report.json")
    failed = [stage for stage, passed in report["passed"].items() if not passed]
    if failed:
        print(
            f"stages outside their tolerances: {', '.join(failed)}; details in "
            f"{json.dumps(report['passed'])}"
        )
        return 1
    return 0

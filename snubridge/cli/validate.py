"""``snubridge validate SUITE``: run an equivalence suite and report.

Runs every case of a suite file (see :mod:`snubridge.validation.suites`),
prints one table row per case, and writes ``report.json`` and the pictures of
each case to the output folder. Exit status: 0 when every case passed, 1 when
a case failed its tolerances or could not run, 2 for an invalid suite file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``validate`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "validate",
        help="check that two back ends give the same spikes, case by case",
        description=(
            "Run every case of a validation suite (a TOML file): each case runs one "
            "network on two back ends, compares their rasters layer by layer, and "
            "checks the case's tolerances. Writes report.json and pictures per case."
        ),
    )
    parser.add_argument("suite", type=Path, help="suite file (.toml)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder for report.json and pictures (default: "
        "validation-<suite name> in the current folder)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="number of worker processes that run cases in parallel (default: 1)",
    )
    parser.add_argument(
        "--case",
        action="append",
        dest="cases",
        metavar="NAME",
        help="run only this case; repeat for several (default: every case)",
    )
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the suite named in ``args``; return the exit status."""
    from snubridge.validation import suites

    suite = suites.load_suite(args.suite, cases=args.cases)
    out = (
        args.out
        if args.out is not None
        else Path(f"validation-{suites._safe_name(suite.name)}")
    )

    def progress(entry: dict) -> None:
        logger.info(
            "Case %s: %s (%.1f s)",
            entry["name"],
            entry["status"],
            entry.get("seconds", 0),
        )

    report = suites.run_suite(suite, out, workers=args.workers, progress=progress)
    print(suites.format_table(report))
    print(f"Report: {Path(out).resolve() / suites.REPORT_NAME}")
    for entry in report["cases"]:
        for failure in entry.get("failures", []):
            print(f"  {entry['name']}: {failure}")
        if entry["status"] == "error":
            print(f"  {entry['name']}: error: {entry.get('error')}")
    return 0 if report["summary"]["passed"] else 1

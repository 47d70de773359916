"""Shared by the benchmark scripts here: ``recokd benchmark`` with this folder's defaults.

Results of the ``cpu`` and ``gpu`` schedules go to ``results/`` beside this file (they are
committed); a ``smoke`` run only checks the pipeline and writes into its work directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recokd.cli import main

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
HIPPOCAMPUS = HERE.parents[1].parent / "shared" / "data" / "Dataset004_Hippocampus"


def run(dataset: str, argv: list[str]) -> int:
    """``recokd benchmark --dataset <dataset> [argv]``, writing real schedules' results to ``results/``."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--schedule", default="cpu")
    peek.add_argument("--output-dir")
    known, _ = peek.parse_known_args(argv)
    output = [] if known.output_dir or known.schedule == "smoke" else ["--output-dir", str(RESULTS)]
    return main(["benchmark", "--dataset", dataset, "--source", str(HIPPOCAMPUS), *argv, *output])

"""``recokd demo``: the end-to-end showcase on the synthetic phantom (see :mod:`recokd.demo`)."""

from __future__ import annotations

import sys
from pathlib import Path

from recokd.commands.training_options import TrainingProgress
from recokd.demo import DemoConfig, run_demo
from recokd.workspace import DEFAULT_WORK_DIR


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="end-to-end showcase on the synthetic phantom (CPU, minutes)",
        description="Generates phantoms, takes the shipped phantom teacher (an nnU-Net at half width), distils "
                    "three students at a quarter of its width (ReCo-KD and no KD started from the teacher, no KD "
                    "from random init), exports their packages, segments held-out phantoms and reports Dice and "
                    "CPU time.")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                   help=f"where everything goes (default ./{DEFAULT_WORK_DIR} or $RECOKD_WORK_DIR); reused by reruns")
    p.add_argument("--retrain-teacher", action="store_true",
                   help="train the phantom teacher with nnU-Net's trainer instead of using the shipped one (about "
                        "half an hour on 2 cores); its package is written to <work-dir>/packages/phantom-teacher.recokd.zip")
    p.set_defaults(func=run)


def run(args) -> int:
    config = DemoConfig()
    steps = []

    def announce(title: str) -> None:
        steps.append(title)
        print(f"\n==> [{len(steps)}] {title}", file=sys.stderr, flush=True)

    def training_progress(label, schedule):
        return TrainingProgress("bar", schedule, label)

    summary = run_demo(args.work_dir, config, announce, training_progress, retrain_teacher=args.retrain_teacher)
    from recokd.evaluate.report import markdown_table

    print("\nResults on the held-out phantoms (CPU):\n")
    print(markdown_table(summary))
    print(f"\nDemo finished in {summary['total_seconds'] / 60:.1f} min. Report: {summary['report']['markdown']}")
    print(f"Model packages: {', '.join(summary['packages'].values())}")
    return 0

"""``recokd distill``: train a student from a teacher with ReCo-KD, then export its model package."""

from __future__ import annotations

import os
from pathlib import Path

from recokd.commands.distillation_options import add_distillation_arguments, options_from
from recokd.commands.training_options import (
    TrainingProgress,
    add_training_arguments,
    schedule_from,
    workspace_from,
)
from recokd.device import resolve_device
from recokd.nnunet.student_plans import parse_width
from recokd.nnunet.training import run_distillation


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "distill", help="distil a small student from an nnU-Net teacher (ReCo-KD)",
        description="Trains a narrower copy of the teacher's nnU-Net network on the teacher's preprocessed "
                    "data with ReCo-KD (MS-SARD + MS-CA, arXiv 2601.08301), or a baseline, then exports "
                    "the student as a model package. Runs under torchrun for several GPUs.")
    p.add_argument("--teacher", type=Path, required=True,
                   help="the teacher's nnU-Net results folder (.../<Trainer>__<Plans>__<configuration>)")
    p.add_argument("--teacher-fold", default="0")
    p.add_argument("--teacher-checkpoint", default="checkpoint_final.pth")
    p.add_argument("--width", default="1/4", help="student channels relative to the teacher: 1, 1/2, 1/4, 1/8")
    add_training_arguments(p)
    add_distillation_arguments(p)
    out = p.add_argument_group("export")
    out.add_argument("--export", type=Path, default=None,
                     help="model package to write (default: <work-dir>/packages/<student>.recokd.zip)")
    out.add_argument("--no-export", action="store_true", help="train only")
    p.set_defaults(func=run)


def run(args) -> int:
    options = options_from(args)
    width = parse_width(args.width)
    schedule = schedule_from(args)
    workspace = workspace_from(args)
    is_main_rank = os.environ.get("RANK", "0") == "0"
    progress = TrainingProgress(args.progress if is_main_rank else "none", schedule, f"distil ({options.mode})")
    try:
        with progress.quiet_stdout():
            result = run_distillation(
                workspace, args.teacher, args.dataset, width, options, args.fold, schedule,
                resolve_device(args.device), args.resume, args.teacher_fold, args.teacher_checkpoint,
                on_epoch=progress.on_epoch, on_step=progress.on_step)
    finally:
        progress.close()
    if not is_main_rank:
        return 0
    payload = {"event": "result", "student": str(result)}
    if not args.no_export:
        from recokd.package.export import export_package

        out = args.export or workspace.root / "packages" / f"{result.name}.recokd.zip"
        payload["package"] = str(export_package(result, out, fold=args.fold, overwrite=True))
    progress.emit(payload)
    if args.progress != "json":
        print(f"Student trained: {result}" + (f"\nModel package: {payload['package']}" if "package" in payload else ""))
    return 0

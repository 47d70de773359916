"""``recokd train-teacher``: train an ordinary nnU-Net model to distil from."""

from __future__ import annotations

from recokd.commands.training_options import (
    TrainingProgress,
    add_training_arguments,
    schedule_from,
    workspace_from,
)
from recokd.device import resolve_device
from recokd.nnunet.student_plans import parse_width
from recokd.nnunet.training import train_teacher


def register(subparsers) -> None:
    p = subparsers.add_parser("train-teacher", help="train a teacher with nnU-Net's own trainer",
                              description="Trains nnU-Net's stock nnUNetTrainer (the result is a normal "
                                          "nnU-Net model) on a prepared dataset.")
    add_training_arguments(p)
    p.add_argument("--configuration", default="3d_fullres")
    p.add_argument("--width", default="1", help="1 (nnU-Net's default width) or 1/2, 1/4, 1/8 for a smaller teacher")
    p.set_defaults(func=run)


def run(args) -> int:
    schedule = schedule_from(args)
    progress = TrainingProgress(args.progress, schedule, "teacher")
    try:
        with progress.quiet_stdout():
            folder = train_teacher(workspace_from(args), args.dataset, args.configuration, args.fold, schedule,
                                   resolve_device(args.device), args.resume, on_epoch=progress.on_epoch,
                                   width=parse_width(args.width))
    finally:
        progress.close()
    progress.emit({"event": "result", "teacher": str(folder)})
    if args.progress != "json":
        print(f"Teacher trained: {folder}")
    return 0

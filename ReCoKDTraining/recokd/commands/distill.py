"""``recokd distill``: train a student from a teacher with ReCo-KD, then export its model package."""

from __future__ import annotations

import json
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
from recokd.distill.options import KDOptions
from recokd.errors import RecokdError
from recokd.nnunet.student_plans import parse_width
from recokd.nnunet.training import run_distillation


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "distill", help="distil a small student from an nnU-Net teacher (ReCo-KD)",
        description="Trains a narrower copy of the teacher's nnU-Net network with ReCo-KD (MS-SARD + MS-CA, "
                    "arXiv 2601.08301), or a baseline, then exports the student as a model package. The student "
                    "learns from the teacher's preprocessed dataset (--dataset), or from a folder of your own "
                    "scans (--images, labels optional): they are preprocessed once with the teacher's plans, and "
                    "the teacher's labels are the targets of every scan without a label file (cached in the work "
                    "directory). Runs under torchrun for several GPUs.")
    p.add_argument("--teacher", type=Path, required=True,
                   help="the teacher's nnU-Net results folder (.../<Trainer>__<Plans>__<configuration>) or its "
                        "model package (*.recokd.zip, recokd export)")
    p.add_argument("--teacher-fold", default="0")
    p.add_argument("--teacher-checkpoint", default="checkpoint_final.pth")
    p.add_argument("--width", default="1/4", help="student channels relative to the teacher: 1, 1/2, 1/4, 1/8")
    add_training_arguments(p, dataset_required=False)
    scans = p.add_argument_group("your own scans (instead of --dataset)")
    scans.add_argument("--images", type=Path, default=None,
                       help="folder of scans: NIfTI/NRRD/MHA files or DICOM series folders, one case each (nnU-Net's "
                            "<case>_0000 channel files are grouped)")
    scans.add_argument("--labels", type=Path, default=None,
                       help="folder of label files named after their cases (optional; cases without one learn the "
                            "teacher's labels)")
    scans.add_argument("--prepare-only", action="store_true",
                       help="preprocess the scans and let the teacher label them, then stop (the step to run once "
                            "before a torchrun of several processes, which cannot prepare them together)")
    scans.add_argument("--no-teacher-mirroring", action="store_true",
                       help="the teacher labels scans without test-time mirroring (up to 8x faster, coarser labels)")
    scans.add_argument("--soft-target-weight", type=float, default=KDOptions.soft_target_weight,
                       help="weight of logit KD on the cases the teacher labels (mode recokd; default 0 = off)")
    scans.add_argument("--labeled-share", type=float, default=KDOptions.labeled_share,
                       help="probability that a sampled training case is a labeled one (default -1: every case "
                            "equally, as nnU-Net samples)")
    add_distillation_arguments(p)
    out = p.add_argument_group("export")
    out.add_argument("--export", type=Path, default=None,
                     help="model package to write (default: <work-dir>/packages/<student>.recokd.zip)")
    out.add_argument("--no-export", action="store_true", help="train only")
    p.set_defaults(func=run)


def run(args) -> int:
    if (args.dataset is None) == (args.images is None):
        raise RecokdError("Give the student's data as either --dataset (a preprocessed nnU-Net dataset) or --images "
                          "(a folder of scans), not both or neither.")
    if args.images is None and (args.labels is not None or args.soft_target_weight or args.labeled_share != -1
                                or args.prepare_only):
        raise RecokdError("--labels, --soft-target-weight, --labeled-share and --prepare-only go with --images "
                          "(a folder of scans).")
    options = options_from(args)
    width = parse_width(args.width)
    schedule = schedule_from(args)
    workspace = workspace_from(args)
    device = resolve_device(args.device)
    is_main_rank = os.environ.get("RANK", "0") == "0"
    progress = TrainingProgress(args.progress if is_main_rank else "none", schedule, f"distil ({options.mode})")
    try:
        with progress.quiet_stdout():
            teacher, dataset, teacher_fold, teacher_checkpoint = _teacher_and_dataset(args, workspace, device, progress)
            result = None if args.prepare_only else run_distillation(
                workspace, teacher, dataset, width, options, args.fold, schedule, device, args.resume,
                teacher_fold, teacher_checkpoint, on_epoch=progress.on_epoch, on_step=progress.on_step)
    finally:
        progress.close()
    if result is None:
        return _report_prepared(args, workspace, dataset) if is_main_rank else 0
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


def _report_prepared(args, workspace, dataset: str) -> int:
    """The end of ``--prepare-only``: the dataset the scans are in (a JSON result with ``--progress json``)."""
    folder = workspace.preprocessed / dataset
    if args.progress == "json":
        print(json.dumps({"event": "result", "dataset": dataset, "folder": str(folder)}), flush=True)
    else:
        print(f"Scans prepared: {folder}\nNow run the same command without --prepare-only (torchrun may start it).")
    return 0


def _teacher_and_dataset(args, workspace, device, progress: TrainingProgress) -> tuple[Path, str, str, str]:
    """``(teacher results folder, dataset, teacher fold, teacher checkpoint)``; with --images the scans' dataset."""
    from recokd.package.teacher_folder import read_teacher

    teacher = read_teacher(args.teacher)
    if args.images is None:
        if teacher.package is not None:
            workspace.activate()
        return (teacher.results_folder(workspace.root), args.dataset,
                *teacher.checkpoint(args.teacher_fold, args.teacher_checkpoint))
    from recokd.scans.prepare import prepare_scans

    prepared = prepare_scans(workspace, teacher, args.images, args.labels, args.fold, args.teacher_fold,
                             args.teacher_checkpoint, device, not args.no_teacher_mirroring, progress.on_scans)
    return prepared.teacher_folder, prepared.dataset.name, prepared.teacher_fold, prepared.teacher_checkpoint

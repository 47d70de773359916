"""``recokd distill``: train a student from a teacher with ReCo-KD, then export its model package."""

from __future__ import annotations

import os
from pathlib import Path

from recokd.commands.training_options import (
    TrainingProgress,
    add_training_arguments,
    schedule_from,
    workspace_from,
)
from recokd.device import resolve_device
from recokd.distill.options import KD_MODES, MS_CA_FORMS, KDOptions
from recokd.nnunet.student_plans import parse_width
from recokd.nnunet.training import run_distillation

DEFAULTS = KDOptions()


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
    kd = p.add_argument_group("distillation options (defaults: the method's published values)")
    kd.add_argument("--mode", choices=KD_MODES, default=DEFAULTS.mode,
                    help="recokd (MS-SARD + MS-CA), logit (baseline), none (student alone)")
    kd.add_argument("--ms-ca", choices=MS_CA_FORMS, default=DEFAULTS.ms_ca,
                    help="MS-CA form: gc (global-context blocks) or affinity (pooled voxel affinity)")
    kd.add_argument("--kd-weight", type=float, default=DEFAULTS.kd_weight, help="lambda after warm-up")
    kd.add_argument("--warmup-fraction", type=float, default=DEFAULTS.warmup_fraction)
    kd.add_argument("--alpha", type=float, default=DEFAULTS.alpha, help="stage weights ∝ 2^(-3 alpha k)")
    kd.add_argument("--attention-temperature", type=float, default=DEFAULTS.attention_temperature)
    kd.add_argument("--affinity-grid", type=int, default=DEFAULTS.affinity_grid)
    kd.add_argument("--logit-temperature", type=float, default=DEFAULTS.logit_temperature)
    kd.add_argument("--ema-decay", type=float, default=DEFAULTS.ema_decay)
    out = p.add_argument_group("export")
    out.add_argument("--export", type=Path, default=None,
                     help="model package to write (default: <work-dir>/packages/<student>.recokd.zip)")
    out.add_argument("--no-export", action="store_true", help="train only")
    p.set_defaults(func=run)


def options_from(args) -> KDOptions:
    return KDOptions(mode=args.mode, kd_weight=args.kd_weight, warmup_fraction=args.warmup_fraction,
                     alpha=args.alpha, attention_temperature=args.attention_temperature, ms_ca=args.ms_ca,
                     affinity_grid=args.affinity_grid, logit_temperature=args.logit_temperature,
                     ema_decay=args.ema_decay)


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

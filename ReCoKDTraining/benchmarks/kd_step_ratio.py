"""Time of one ReCo-KD training step over one plain-student step, same batch, same process.

    python ReCoKDTraining/benchmarks/kd_step_ratio.py                     # phantom, tiny teacher
    python ReCoKDTraining/benchmarks/kd_step_ratio.py --teacher RESULTS_FOLDER --dataset 4 --work-dir DIR

Without ``--teacher`` a phantom dataset is generated in the work directory and a teacher is
trained for a couple of iterations: step time depends on the networks and the patch, not on
how well the teacher is trained. Prints the ratio and writes it, with the machine and the
settings, to ``--out``. Target (issue 4): at most 1.6 on a GPU; reported for CPUs too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from recokd.data.phantom import PhantomConfig, write_dataset
from recokd.device import DEVICE_CHOICES, resolve_device
from recokd.distill.options import MS_CA_FORMS, KDOptions
from recokd.evaluate.environment import machine_description, package_versions
from recokd.evaluate.report import json_ready
from recokd.evaluate.step_timing import measure_kd_step_ratio
from recokd.nnunet.prepare import prepare_dataset
from recokd.nnunet.student_plans import parse_width
from recokd.nnunet.training import Schedule, train_teacher
from recokd.workspace import DEFAULT_WORK_DIR, Workspace

PHANTOM = "Dataset906_PhantomStepTiming"


def phantom_teacher(workspace: Workspace, size: int, cases: int) -> Path:
    """A phantom dataset of ``cases`` cubes of side ``size`` and a briefly trained teacher (reused when present)."""
    if not (workspace.raw / PHANTOM / "dataset.json").is_file():
        write_dataset(workspace.raw / PHANTOM, cases, 0, 0, PhantomConfig(shape=(size, size, size)))
    prepare_dataset(workspace, PHANTOM)
    folder = workspace.results / PHANTOM / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    if not (folder / "fold_0" / "checkpoint_final.pth").is_file():
        train_teacher(workspace, PHANTOM, schedule=Schedule(1, 2, 1), device=resolve_device("cpu"))
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, help="teacher results folder (default: a phantom teacher)")
    p.add_argument("--dataset", help="its prepared dataset (id or name), with --teacher")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR / "kd_step_ratio")
    p.add_argument("--size", type=int, default=64, help="phantom cube side in voxels (without --teacher)")
    p.add_argument("--cases", type=int, default=6, help="phantom cases (without --teacher; nnU-Net needs 5+)")
    p.add_argument("--width", default="1/4")
    p.add_argument("--ms-ca", choices=MS_CA_FORMS, default="gc")
    p.add_argument("--steps", type=int, default=10, help="timed steps of each kind")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind first")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="PyTorch CPU threads (default: PyTorch's choice; 1 gives steadier numbers on a busy machine)")
    p.add_argument("--out", type=Path, default=Path("kd_step_ratio.json"))
    args = p.parse_args(argv)
    if (args.teacher is None) != (args.dataset is None):
        p.error("give --teacher and --dataset together, or neither (phantom)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    workspace = Workspace.under(args.work_dir, respect_environment=args.teacher is not None).activate()
    teacher = args.teacher or phantom_teacher(workspace, args.size, args.cases)
    dataset = args.dataset or PHANTOM
    device = resolve_device(args.device)
    options = KDOptions(ms_ca=args.ms_ca)
    timing = measure_kd_step_ratio(workspace, teacher, dataset, parse_width(args.width), options, device,
                                   steps=args.steps, warmup=args.warmup)
    print(f"KD step {timing.kd_step_s:.3f} s / plain step {timing.plain_step_s:.3f} s = {timing.ratio:.2f}x "
          f"on {timing.device} (batch {timing.batch_shape}, width {timing.width}, median of {timing.steps}, "
          f"{timing.threads} CPU threads)")
    args.out.write_text(json.dumps(json_ready({
        "kd_step_ratio": timing.ratio, "kd_step_timing": timing.to_dict(), "dataset": str(dataset),
        "kd_options": options.to_dict(), "device": machine_description(device), "versions": package_versions(),
    }), indent=2) + "\n")
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

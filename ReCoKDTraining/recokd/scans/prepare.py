"""``recokd distill --images``: from a teacher and a folder of scans to the dataset a student trains on.

Order matters: every check (the teacher's plans, the scans, the labels, the fold) runs before
the work directory is created, so a refused input leaves nothing behind; only then is a
package teacher written out as a results folder, the teacher loaded and the dataset built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from recokd.errors import RecokdError
from recokd.nnunet.teacher import load_teacher
from recokd.nnunet.training import CPU
from recokd.package.teacher_folder import TeacherSource
from recokd.scans.cases import find_cases
from recokd.scans.checks import check_scans, check_teacher_can_preprocess
from recokd.scans.dataset import ScanProgress, ScansDataset, build_scans_dataset
from recokd.scans.teacher_labels import TeacherLabeller
from recokd.workspace import Workspace


@dataclass(frozen=True)
class PreparedScans:
    """What the distillation needs next: the teacher's results folder, fold and checkpoint, and the dataset."""

    teacher_folder: Path
    teacher_fold: int | str
    teacher_checkpoint: str
    dataset: ScansDataset


def prepare_scans(
    workspace: Workspace,
    teacher: TeacherSource,
    images: Path,
    labels: Path | None,
    fold: int | str,
    teacher_fold: int | str = 0,
    teacher_checkpoint: str = "checkpoint_final.pth",
    device: torch.device = CPU,
    mirroring: bool = True,
    progress: ScanProgress | None = None,
) -> PreparedScans:
    """Check everything, then build (or reuse) the scans' dataset; see the module docstring.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank only verifies that the dataset is up to
    date: ranks cannot coordinate writes before their process group exists.
    """
    cases = find_cases(images, labels, teacher.channels)
    check_teacher_can_preprocess(teacher)
    check_scans(cases, teacher)
    if len(cases) < 2 and str(fold) != "all":
        raise RecokdError(f"{images} holds one scan: a cross-validation fold needs at least two. Add scans, or train "
                          "on all of them with --fold all.")
    teacher_fold, teacher_checkpoint = teacher.checkpoint(teacher_fold, teacher_checkpoint)
    # A results folder is loaded before anything is written, so a bad checkpoint leaves nothing behind too;
    # a package was verified when it was read, and is loaded from the folder it is written out to.
    loaded = load_teacher(teacher.path, teacher_fold, teacher_checkpoint, device) if teacher.package is None else None
    workspace.activate()
    folder = teacher.results_folder(workspace.root)
    loaded = loaded or load_teacher(folder, teacher_fold, teacher_checkpoint, device)
    read_only = int(os.environ.get("WORLD_SIZE", "1")) > 1
    dataset = build_scans_dataset(workspace, images, cases, TeacherLabeller(loaded, device, mirroring), progress,
                                  read_only)
    return PreparedScans(folder, teacher_fold, teacher_checkpoint, dataset)

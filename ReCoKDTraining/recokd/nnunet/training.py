"""Run nnU-Net trainings: a teacher with the stock trainer, a student with the ReCoKD trainer.

Trainers are constructed directly (nnU-Net's lookup of trainers by name imports modules that
need torchvision, which breaks on CPU-only torch builds) and driven by their own
``run_training()``. Under ``torchrun`` the process group is created here, on NCCL for GPUs
and gloo for CPUs, and nnU-Net's trainer takes its DDP path.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from recokd.distill.options import KDOptions
from recokd.errors import RecokdError
from recokd.nnunet.augmentation import augmentation_workers, default_worker_count
from recokd.nnunet.checkpoint import write_checkpoints_atomically
from recokd.nnunet.prepare import resolve_dataset
from recokd.nnunet.progress import EpochCallback, EpochProgress
from recokd.nnunet.student_plans import derive_student_plans
from recokd.nnunet.teacher import configuration_of_results_folder
from recokd.workspace import Workspace

log = logging.getLogger(__name__)

CPU = torch.device("cpu")

# An interrupted run has a "latest" checkpoint; a finished one only a "final" one.
RESUME_ORDER = ("checkpoint_latest.pth", "checkpoint_final.pth")


@dataclass(frozen=True)
class Schedule:
    """How long to train. nnU-Net's defaults are 1000 x 250 iterations, 50 validation iterations."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50

    def __post_init__(self) -> None:
        if min(self.epochs, self.iterations_per_epoch, self.val_iterations_per_epoch) < 1:
            raise RecokdError(f"Epochs and iterations must be at least 1, got {asdict(self)}.")

    def apply(self, trainer) -> None:
        trainer.num_epochs = self.epochs
        trainer.num_iterations_per_epoch = self.iterations_per_epoch
        trainer.num_val_iterations_per_epoch = self.val_iterations_per_epoch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators: what a seeded training starts from.

    nnU-Net draws its patches, augmentation and validation batches from these streams (with
    augmentation in the main process, as on small CPU machines), and the random initialisation
    and the calibration of an inherited student follow PyTorch's seed.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def distributed(device: torch.device) -> Iterator[torch.device]:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); yields this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or dist.is_initialized():
        yield device
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def _load_plans_and_dataset(workspace: Workspace, dataset: str | int) -> tuple[str, Path, dict, dict]:
    _, name = resolve_dataset(workspace, dataset)
    folder = workspace.preprocessed / name
    plans_file = folder / "nnUNetPlans.json"
    if not plans_file.is_file():
        raise RecokdError(f"{name} is not planned and preprocessed yet ({plans_file} missing): run recokd prepare.")
    return name, folder, json.loads(plans_file.read_text()), json.loads((folder / "dataset.json").read_text())


def _load_dataset(workspace: Workspace, dataset: str | int) -> tuple[Path, dict]:
    """The preprocessed dataset folder and its dataset.json: all a student needs (its plans are the teacher's)."""
    _, name = resolve_dataset(workspace, dataset)
    folder = workspace.preprocessed / name
    if not (folder / "dataset.json").is_file():
        raise RecokdError(f"{name} is not preprocessed yet ({folder / 'dataset.json'} missing): run recokd prepare.")
    return folder, json.loads((folder / "dataset.json").read_text())


def _resume_or_refuse(trainer, resume: bool) -> None:
    """Load the newest checkpoint when resuming; never silently overwrite an earlier run."""
    fold_folder = Path(trainer.output_folder)
    existing = [fold_folder / name for name in RESUME_ORDER if (fold_folder / name).is_file()]
    if resume:
        if not existing:
            raise RecokdError(f"Nothing to resume in {fold_folder}: no checkpoint_latest.pth or checkpoint_final.pth.")
        log.info("Resuming from %s", existing[0])
        trainer.load_checkpoint(str(existing[0]))
    elif existing:
        raise RecokdError(f"{fold_folder} already holds a training ({existing[0].name}). Pass --resume to continue "
                          "it, or use another --work-dir for a new run.")


def _initialise_and_train(trainer, schedule: Schedule, resume: bool, on_epoch: EpochCallback | None) -> Path:
    """nnU-Net's ``initialize``, epoch progress, the resume (or the refusal to overwrite), the training.

    Returns the results folder (``<Trainer>__<Plans>__<configuration>``).
    """
    trainer.initialize()
    if on_epoch is not None:
        EpochProgress(schedule.epochs, on_epoch).attach(trainer)
    _resume_or_refuse(trainer, resume)
    trainer.run_training()
    return Path(trainer.output_folder_base)


def train_teacher(
    workspace: Workspace,
    dataset: str | int,
    configuration: str = "3d_fullres",
    fold: int | str = 0,
    schedule: Schedule = Schedule(),
    device: torch.device = CPU,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    width: Fraction = Fraction(1),
) -> Path:
    """Train an ordinary nnU-Net model (``nnUNetTrainer``) and return its results folder.

    The result is a stock nnU-Net model: nnU-Net's own tools can predict with it. ``width`` < 1
    trains a narrower teacher on the same preprocessed data (for CPU-sized demonstrations).
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    workspace.activate()
    _, preprocessed, plans, dataset_json = _load_plans_and_dataset(workspace, dataset)
    if width != 1:
        plans = _narrowed_plans(plans, configuration, width, preprocessed)
    with augmentation_workers(default_worker_count(device)), distributed(device) as device:
        trainer = nnUNetTrainer(plans | {"continue_training": resume}, configuration, _fold(fold), dataset_json, device)
        schedule.apply(trainer)
        trainer.save_every = 1  # as for the students: an interruption loses at most one epoch (nnU-Net: 50)
        write_checkpoints_atomically(trainer)
        return _initialise_and_train(trainer, schedule, resume, on_epoch)


def run_distillation(
    workspace: Workspace,
    teacher_folder: Path,
    dataset: str | int,
    width: Fraction,
    options: KDOptions,
    fold: int | str = 0,
    schedule: Schedule = Schedule(),
    device: torch.device = CPU,
    resume: bool = False,
    teacher_fold: int | str = 0,
    teacher_checkpoint: str = "checkpoint_final.pth",
    on_epoch: EpochCallback | None = None,
    on_step: Callable[[int, int, dict], None] | None = None,
) -> Path:
    """Distil a student of ``width`` from the teacher; returns the student's results folder.

    The student plans (teacher plans, narrower) are written next to the teacher's plans in the
    preprocessed dataset folder, so nnU-Net finds the shared preprocessed data.
    """
    workspace.activate()
    with augmentation_workers(default_worker_count(device)), distributed(device) as device:
        trainer = build_student_trainer(workspace, teacher_folder, dataset, width, options, fold, device,
                                        teacher_fold, teacher_checkpoint, continue_training=resume)
        schedule.apply(trainer)
        trainer.on_step = on_step
        return _initialise_and_train(trainer, schedule, resume, on_epoch)


def build_student_trainer(
    workspace: Workspace,
    teacher_folder: Path,
    dataset: str | int,
    width: Fraction,
    options: KDOptions,
    fold: int | str = 0,
    device: torch.device = CPU,
    teacher_fold: int | str = 0,
    teacher_checkpoint: str = "checkpoint_final.pth",
    continue_training: bool = False,
):
    """The ReCoKD trainer of ``options.mode`` for a student of ``width``, configured, not yet initialised.

    Set the schedule (and anything else nnU-Net reads in ``initialize``) before calling
    ``initialize()``.
    """
    from recokd.nnunet.trainer import TRAINERS

    teacher_folder = Path(teacher_folder).resolve()
    configuration = configuration_of_results_folder(teacher_folder)
    teacher_plans_file = teacher_folder / "plans.json"
    if not teacher_plans_file.is_file():
        raise RecokdError(f"{teacher_folder} has no plans.json: give the teacher's nnU-Net results folder "
                          "(…/<Trainer>__<Plans>__<configuration>).")
    preprocessed, dataset_json = _load_dataset(workspace, dataset)
    student_plans = _narrowed_plans(json.loads(teacher_plans_file.read_text()), configuration, width, preprocessed)
    trainer = TRAINERS[options.mode](student_plans | {"continue_training": continue_training}, configuration,
                                     _fold(fold), dataset_json, device)
    trainer.kd_options = options
    trainer.teacher_folder = teacher_folder
    trainer.teacher_fold = teacher_fold
    trainer.teacher_checkpoint = teacher_checkpoint
    trainer.student_width = str(width)
    return trainer


def _narrowed_plans(plans: dict, configuration: str, width: Fraction, preprocessed: Path) -> dict:
    """Plans at ``width`` saved beside the dataset's plans, where nnU-Net looks for plans files."""
    narrowed = derive_student_plans(plans, configuration, width)
    narrowed["dataset_name"] = preprocessed.name
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank derives the same plans; one writes
        (preprocessed / f"{narrowed['plans_name']}.json").write_text(json.dumps(narrowed, indent=2))
    return narrowed


def _fold(fold: int | str) -> int | str:
    return "all" if str(fold) == "all" else int(fold)

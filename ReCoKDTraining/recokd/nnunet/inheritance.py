"""Students that start from the teacher: prune, refit, and point the KD adapters at the kept channels.

A random-init narrow nnU-Net spends hundreds of steps predicting background everywhere before
it learns anything; on a CPU schedule that is the whole run. Minitron (Muralidharan et al.,
arXiv 2407.14679) builds small language models by structured width pruning of the large
model, inheriting its weights, and distilling, at a fraction of the from-scratch budget. For
an nnU-Net student:

1. a calibration batch of training patches (nnU-Net's own data loader, foreground
   oversampled, no augmentation; the global NumPy RNG is left as it was, so the training that
   follows draws the same batches as without inheritance);
2. per channel space, the teacher channels of highest importance are kept and every layer is
   sliced consistently (:mod:`recokd.nnunet.pruning`);
3. optionally every layer is refitted by least squares to the teacher's output on the same
   batch (:mod:`recokd.nnunet.reconstruction`), which at a quarter of the width is what
   keeps a working function (measured in the benchmark's notes);
4. the ReCo-KD channel adapters start as the selection (student channel ``j`` -> the teacher
   channel it came from), so the feature terms start near their floor instead of at a random
   projection.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recokd.nnunet.channel_spaces import ChannelStructure
from recokd.nnunet.pruning import Importance, Selection, prune_teacher_into
from recokd.nnunet.reconstruction import reconstruct

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inheritance:
    """What :func:`inherit_from_teacher` did: the kept channels, the fit of each refitted layer."""

    selection: Selection
    structure: ChannelStructure
    importance: str
    refit: str
    calibration_patches: int
    error_sliced: float | None  # mean over refitted layers of error / target variance, before the refit
    error_refitted: float | None
    seconds: float

    def describe(self) -> dict:
        """JSON-ready summary (checkpoints, logs)."""
        return {"importance": self.importance, "refit": self.refit, "calibration_patches": self.calibration_patches,
                "layer_error_sliced": self.error_sliced, "layer_error_refitted": self.error_refitted,
                "seconds": round(self.seconds, 2)}


@torch.no_grad()
def inherit_from_teacher(teacher: nn.Module, student: nn.Module, batches: list[torch.Tensor],
                         importance: Importance = "activation", refit: str = "least_squares",
                         seed: int = 0) -> Inheritance:
    """Initialise ``student`` from ``teacher`` (both on one device); returns what was done.

    Args:
        teacher: the trained network, eval mode, frozen.
        student: the narrower network built from the derived plans (its current weights are replaced).
        batches: calibration patches, a list of ``(b, C_in, *patch)`` tensors on the networks' device.
        importance: ``"activation"`` or ``"gamma"`` (:mod:`recokd.nnunet.pruning`).
        refit: ``"least_squares"`` or ``"none"``.
        seed: seed of the voxel sampling of the refit.
    """
    start = time.perf_counter()
    selection, structure = prune_teacher_into(teacher, student, importance, batches)
    fits = reconstruct(teacher, student, structure, selection, batches, seed=seed) if refit == "least_squares" else []
    inheritance = Inheritance(
        selection, structure, importance, refit, sum(len(b) for b in batches),
        float(np.mean([f.error_sliced for f in fits])) if fits else None,
        float(np.mean([f.error_refitted for f in fits])) if fits else None,
        time.perf_counter() - start)
    log.info("Student inherited from the teacher: %s", inheritance.describe())
    return inheritance


@torch.no_grad()
def adapters_from_selection(adapters: nn.ModuleList, inheritance: Inheritance) -> None:
    """Set each ReCo-KD adapter ``(C_teacher x C_student)`` to the 0/1 selection of stage ``k``'s kept channels."""
    for adapter, space in zip(adapters, inheritance.structure.stage_outputs):
        kept = inheritance.selection[space].to(adapter.linear.weight.device)
        adapter.linear.weight.zero_()
        adapter.linear.weight[kept, torch.arange(len(kept), device=kept.device)] = 1.0
        adapter.linear.bias.zero_()


@contextmanager
def numpy_rng_left_alone(seed: int):
    """Seed NumPy's global RNG for the block, then restore its state (nnU-Net samples patches from it)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def calibration_batches(trainer, patches: int, seed: int = 0) -> list[torch.Tensor]:
    """``patches`` training patches of an nnU-Net trainer's fold, in batches of its batch size, on its device.

    nnU-Net's data loader picks cases and crops (half the patches forced to contain
    foreground); no augmentation. Validation cases are never used.
    """
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    dataset, _ = trainer.get_tr_and_val_datasets()
    patch_size = trainer.configuration_manager.patch_size
    batch_size = max(1, min(patches, trainer.configuration_manager.batch_size))
    loader = nnUNetDataLoader(dataset, batch_size, patch_size, patch_size, trainer.label_manager,
                              oversample_foreground_percent=0.5)
    batches, drawn = [], 0
    with numpy_rng_left_alone(seed):
        while drawn < patches:
            data = loader.generate_train_batch()["data"][: patches - drawn]
            batches.append(data.to(trainer.device))
            drawn += len(data)
    return batches

"""How good a student is before its first step: nnU-Net's pseudo Dice on validation patches at step 0.

A random-init student predicts noise; a student inherited from its teacher
(:mod:`recokd.nnunet.inheritance`) may already segment. The probe builds the student trainer
exactly as a training would (same options, same seed, so the same calibration patches and the
same inheritance), runs nnU-Net's ``initialize()``, and scores the network on a fixed set of
validation patches of its fold: nnU-Net's data loader without augmentation, a third of the
patches forced to hold foreground (as its online validation), true and false positives and
false negatives summed over the patches per class (nnU-Net's pseudo Dice).
"""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from recokd.distill.hooks import unwrap_network
from recokd.distill.options import KDOptions
from recokd.nnunet.inheritance import numpy_rng_left_alone
from recokd.nnunet.training import Schedule, build_student_trainer, seed_everything
from recokd.workspace import Workspace

CPU = torch.device("cpu")
PROBE_PATCHES = 24
PROBE_SEED = 12345  # the validation patches, the same for every student probed


def probe_start(workspace: Workspace, teacher_folder: Path, dataset: str, width: Fraction, options: KDOptions,
                seed: int, device: torch.device = CPU) -> dict:
    """``{pseudo_dice, pseudo_dice_per_class, inheritance}`` of the student ``options`` describe, before training.

    ``seed`` is the training seed (it decides the random initialisation and the calibration
    patches); ``inheritance`` is what inheritance did (``None`` from a random start). Nothing
    is written to the workspace's results folder.
    """
    with tempfile.TemporaryDirectory(prefix="recokd-start-probe-") as scratch:
        scratch_workspace = Workspace(workspace.root, workspace.raw, workspace.preprocessed, Path(scratch)).activate()
        seed_everything(seed)
        trainer = build_student_trainer(scratch_workspace, teacher_folder, dataset, width, options, 0, device)
        Schedule(epochs=1, iterations_per_epoch=1, val_iterations_per_epoch=1).apply(trainer)
        trainer.initialize()
        per_class = validation_pseudo_dice(trainer, unwrap_network(trainer.network))
    workspace.activate()
    return {"pseudo_dice": float(np.mean(per_class)), "pseudo_dice_per_class": per_class,
            "inheritance": trainer.inheritance_record}


@torch.no_grad()
def validation_pseudo_dice(trainer, network: torch.nn.Module, patches: int = PROBE_PATCHES) -> list[float]:
    """Pseudo Dice per foreground class of ``network`` on ``patches`` fixed validation patches of ``trainer``'s fold."""
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    _, validation = trainer.get_tr_and_val_datasets()
    patch_size = trainer.configuration_manager.patch_size
    loader = nnUNetDataLoader(validation, patches, patch_size, patch_size, trainer.label_manager,
                              oversample_foreground_percent=trainer.oversample_foreground_percent)
    with numpy_rng_left_alone(PROBE_SEED):
        batch = loader.generate_train_batch()
    was_training = network.training
    network.eval()
    counts = np.zeros((trainer.label_manager.num_segmentation_heads - 1, 3))
    for start in range(0, patches, trainer.configuration_manager.batch_size):
        data = batch["data"][start:start + trainer.configuration_manager.batch_size].to(trainer.device)
        output = network(data)
        predicted = (output[0] if isinstance(output, (list, tuple)) else output).argmax(1).cpu()
        target = batch["target"][start:start + len(data), 0]
        for index in range(len(counts)):
            label = index + 1
            counts[index] += [int(((predicted == label) & (target == label)).sum()),
                              int(((predicted == label) & (target != label)).sum()),
                              int(((predicted != label) & (target == label)).sum())]
    network.train(was_training)
    return [float(2 * tp / max(1, 2 * tp + fp + fn)) for tp, fp, fn in counts]

"""Tiny nnU-Net training results on disk, for model package tests.

A result folder as nnU-Net's trainer leaves it (``plans.json``, ``dataset.json``,
``fold_0/checkpoint_final.pth``) for a 3-stage ``PlainConvUNet`` or ``ResidualEncoderUNet``
with the phantom's labels. Student checkpoints carry the ``"recokd"`` entry (EMA weights
that differ from the raw weights, KD modules that must not be exported); teacher
checkpoints are plain nnU-Net ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tiny_student import tiny_plans

from recokd.nnunet.network import build_network

CONFIGURATION = "3d_fullres"
TRAINER = "nnUNetTrainerReCoKD"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def plans_for(arch: str = "plain", features: tuple[int, int, int] = (4, 8, 16)) -> dict:
    """Tiny plans; ``arch`` is ``"plain"`` (PlainConvUNet) or ``"resenc"`` (ResidualEncoderUNet)."""
    plans = tiny_plans(features=features)
    if arch == "resenc":
        architecture = plans["configurations"][CONFIGURATION]["architecture"]
        architecture["network_class_name"] = RESENC
        architecture["arch_kwargs"]["n_blocks_per_stage"] = architecture["arch_kwargs"].pop("n_conv_per_stage")
    return plans


def phantom_dataset_json() -> dict:
    return {
        "name": "Phantom",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "kidney_left": 2, "kidney_right": 3, "adrenal_gland": 4,
                   "vessel": 5},
        "numTraining": 4,
        "file_ending": ".nii.gz",
        "licence": "CC0-1.0",
    }


def seeded_weights(plans: dict, dataset_json: dict, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in build_network(plans, dataset_json, CONFIGURATION).state_dict().items()}


def checkpoint_for(plans: dict, dataset_json: dict, student: bool = True, prefix: str = "") -> dict:
    """An nnU-Net checkpoint dict; a student's EMA weights are seed 1, its raw weights seed 0."""
    raw = seeded_weights(plans, dataset_json, seed=0)
    checkpoint = {
        "network_weights": {prefix + k: v for k, v in raw.items()},
        "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": 0, "dataset_json": dataset_json,
                      "device": torch.device("cpu")},
        "trainer_name": TRAINER if student else "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "current_epoch": 3,
    }
    if student:
        ema = seeded_weights(plans, dataset_json, seed=1)
        checkpoint["recokd"] = {
            "ema_weights": {prefix + k: v for k, v in ema.items()},
            "kd_modules": {"adapters.0.weight": torch.ones(8, 4, 1, 1, 1), "context.0.mask.weight": torch.ones(1, 4)},
            "options": {"lambda_kd": 0.01, "temperature": 0.5, "context_form": "gc"},
            "teacher": {"folder": "/home/someone/results/Dataset990_Phantom/nnUNetTrainer__nnUNetPlans__3d_fullres",
                        "plans_identifier": "nnUNetPlans", "params": 123456},
            "width": "1/2",
        }
    return checkpoint


def write_result(root: Path, plans: dict, dataset_json: dict, checkpoint: dict, fold: int = 0) -> Path:
    """Write an nnU-Net result folder under ``root`` and return it."""
    folder = root / "Dataset990_Phantom" / f"{TRAINER}__{plans['plans_name']}__{CONFIGURATION}"
    (folder / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def student_result(root: Path, arch: str = "plain") -> Path:
    """A ReCo-KD student result folder with the phantom labels."""
    plans, dataset_json = plans_for(arch), phantom_dataset_json()
    return write_result(root, plans, dataset_json, checkpoint_for(plans, dataset_json))

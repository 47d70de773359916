"""A tiny model package built in memory for inference tests: hand-written plans, seeded random weights.

A 3-stage ``PlainConvUNet`` (4/8/16 features), 16^3 patch, 1 mm target spacing, CT
normalisation, labels background/liver/kidney. Untrained, so its labels are arbitrary but
deterministic, which is all that geometry, progress, cancel and I/O tests need.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from recokd.nnunet.network import build_network
from recokd.package.model import LabelInfo, ModelPackage, Terminology

SCT = "SCT"
LABELS = [
    LabelInfo(
        1, "liver", (221, 130, 101), Terminology(SCT, "123037004", "Anatomical Structure"),
        Terminology(SCT, "10200004", "Liver"),
    ),
    LabelInfo(
        2, "kidney", (185, 102, 83), Terminology(SCT, "123037004", "Anatomical Structure"),
        Terminology(SCT, "64033007", "Kidney"), modifier=Terminology(SCT, "7771000", "Left"),
    ),
]

_CONFIGURATION = {
    "data_identifier": "nnUNetPlans_3d_fullres",
    "preprocessor_name": "DefaultPreprocessor",
    "batch_size": 2,
    "patch_size": [16, 16, 16],
    "median_image_size_in_voxels": [32, 32, 32],
    "spacing": [1.0, 1.0, 1.0],
    "normalization_schemes": ["CTNormalization"],
    "use_mask_for_norm": [False],
    "resampling_fn_data": "resample_data_or_seg_to_shape",
    "resampling_fn_seg": "resample_data_or_seg_to_shape",
    "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
    "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
    "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
    "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
    "architecture": {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 3,
            "features_per_stage": [4, 8, 16],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * 3,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2],
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    },
    "batch_dice": False,
}


def tiny_plans(features: tuple[int, int, int] = (4, 8, 16), spacing=(1.0, 1.0, 1.0), transpose=(0, 1, 2)) -> dict:
    """nnU-Net v2 plans for the tiny network; ``transpose`` is nnU-Net's ``transpose_forward``."""
    configuration = copy.deepcopy(_CONFIGURATION)
    configuration["architecture"]["arch_kwargs"]["features_per_stage"] = list(features)
    configuration["spacing"] = [spacing[i] for i in transpose]
    backward = [int(i) for i in np.argsort(transpose)]
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": configuration["spacing"],
        "original_median_shape_after_transp": [32, 32, 32],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(transpose),
        "transpose_backward": backward,
        "configurations": {"3d_fullres": configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 300.0, "mean": 60.0, "median": 60.0, "min": -200.0,
                "percentile_00_5": -150.0, "percentile_99_5": 250.0, "std": 60.0,
            }
        },
    }


def tiny_dataset_json() -> dict:
    return {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "kidney": 2},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }


def tiny_package(seed: int = 0, mirror_axes=(0, 1, 2), dataset_json: dict | None = None, **plans_options) -> ModelPackage:
    """A package whose weights are a seeded random initialisation of the network the plans describe."""
    plans, dataset_json = tiny_plans(**plans_options), dataset_json or tiny_dataset_json()
    torch.manual_seed(seed)
    network = build_network(plans, dataset_json, "3d_fullres")
    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    return ModelPackage(
        plans=plans,
        dataset_json=dataset_json,
        configuration="3d_fullres",
        labels=list(LABELS),
        state_dict=state,
        card={"name": "tiny-student"},
        mirror_axes=mirror_axes,
    )


def oblique_volume(size_xyz=(40, 30, 20), spacing=(0.8, 1.1, 2.5), seed: int = 0) -> sitk.Image:
    """An int16 CT-like volume with anisotropic spacing, an oblique direction and a non-zero origin."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in size_xyz[::-1]), indexing="ij")
    blob = (x**2 + (y - 0.2) ** 2 + z**2) < 0.4
    array = np.where(blob, 60, -100) + rng.normal(0, 20, blob.shape)
    image = sitk.GetImageFromArray(array.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 30.25, 7.0))
    angle = np.deg2rad(25.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    ) @ np.array([[1.0, 0.0, 0.0], [0.0, np.cos(0.3), -np.sin(0.3)], [0.0, np.sin(0.3), np.cos(0.3)]])
    image.SetDirection(tuple(rotation.ravel()))
    return image


def write_volume(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path), True)
    return path


UID_ROOT = "1.2.826.0.1.3680043.2.1125.7"


def write_dicom_series(folder: Path, volume: sitk.Image, series_uid: str, description: str,
                       modality: str = "CT") -> None:
    """One slice file per z index (CT unless ``modality`` says otherwise), with the tags GDCM needs to group and
    order them."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = volume.GetDirection()
    for k in range(volume.GetDepth()):
        slice_ = volume[:, :, k]
        tags = {
            "0008|0060": modality,
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": f"{UID_ROOT}.1",
            "0020|000e": series_uid,
            "0008|103e": description,
            "0020|0013": str(k + 1),
            "0020|0037": "\\".join(str(v) for v in (*direction[0:7:3], *direction[1:8:3])),
            "0020|0032": "\\".join(str(v) for v in volume.TransformIndexToPhysicalPoint((0, 0, k))),
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid[-1]}_{k:03d}.dcm"))
        writer.Execute(slice_)

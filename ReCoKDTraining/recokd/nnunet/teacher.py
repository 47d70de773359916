"""Load a frozen teacher from any nnU-Net v2 results folder and check that it fits a dataset."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from recokd.errors import RecokdError
from recokd.nnunet.checkpoint import load_checkpoint
from recokd.nnunet.network import build_network

log = logging.getLogger(__name__)


@dataclass
class Teacher:
    """A trained nnU-Net network in ``eval()`` mode with every parameter frozen."""

    network: nn.Module
    plans: dict
    dataset_json: dict
    configuration: str
    folder: Path
    checkpoint: Path
    mirror_axes: tuple[int, ...] | None

    @property
    def plans_identifier(self) -> str:
        return self.plans["plans_name"]

    @property
    def channels(self) -> int:
        return len(channel_names(self.dataset_json))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def describe(self) -> dict:
        return {
            "folder": str(self.folder),
            "checkpoint": self.checkpoint.name,
            "plans_identifier": self.plans_identifier,
            "configuration": self.configuration,
            "params": self.num_parameters,
        }


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise RecokdError(f"{path} is missing: is {path.parent} an nnU-Net results folder "
                          "(…/<Trainer>__<Plans>__<configuration>)?")
    return json.loads(path.read_text())


def channel_names(dataset_json: dict) -> dict:
    """The input channels a ``dataset.json`` names (nnU-Net v2's ``channel_names``, v1's ``modality``)."""
    return dataset_json.get("channel_names", dataset_json.get("modality", {}))


def configuration_of_results_folder(folder: Path) -> str:
    """nnU-Net names result folders ``<Trainer>__<Plans>__<configuration>``."""
    parts = Path(folder).name.split("__")
    if len(parts) != 3:
        raise RecokdError(f"{folder} is not named like an nnU-Net results folder (<Trainer>__<Plans>__<configuration>).")
    return parts[2]


def load_teacher(folder: Path, fold: int | str = 0, checkpoint_name: str = "checkpoint_final.pth",
                 device: torch.device | str = "cpu", dataset_json: dict | None = None) -> Teacher:
    """The teacher in ``folder/fold_<fold>/<checkpoint_name>``, frozen, on ``device``.

    With ``dataset_json`` (the dataset the student will learn), labels and input channels are
    checked before anything heavy is loaded. The network is rebuilt from the folder's
    ``plans.json`` without deep supervision (only the full-resolution logits and the encoder
    features are needed) and must take the checkpoint's weights.
    """
    folder = Path(folder).resolve()
    configuration = configuration_of_results_folder(folder)
    plans = _read_json(folder / "plans.json")
    teacher_dataset_json = _read_json(folder / "dataset.json")
    if dataset_json is not None:
        check_labels_and_channels(teacher_dataset_json, dataset_json)
    checkpoint_path = folder / f"fold_{fold}" / checkpoint_name
    checkpoint = load_checkpoint(checkpoint_path)
    network = build_network(plans, teacher_dataset_json, configuration, deep_supervision=False)
    weights = {k.removeprefix("module.").removeprefix("_orig_mod."): v
               for k, v in checkpoint["network_weights"].items()}
    try:
        # Trained with deep supervision: the extra low-resolution heads are not needed here.
        missing, unexpected = network.load_state_dict(weights, strict=False)
    except RuntimeError as error:
        missing, unexpected = [str(error).splitlines()[-1].strip()], []
    if missing or any(not k.startswith("decoder.seg_layers.") for k in unexpected):
        raise RecokdError(f"Teacher checkpoint {checkpoint_path} does not fit the teacher's plans.json and "
                          f"dataset.json (missing or mismatched {missing[:3]}, unexpected {unexpected[:3]}).")
    network.to(device).eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    mirror_axes = checkpoint.get("inference_allowed_mirroring_axes")
    log.info("Loaded teacher %s (%d parameters)", checkpoint_path, sum(p.numel() for p in network.parameters()))
    return Teacher(network, plans, teacher_dataset_json, configuration, folder, checkpoint_path,
                   tuple(mirror_axes) if mirror_axes is not None else None)


def check_labels_and_channels(teacher_dataset_json: dict, dataset_json: dict) -> None:
    """The student learns the teacher's label set from the same kind of input: both must match."""
    if teacher_dataset_json.get("labels") != dataset_json.get("labels"):
        raise RecokdError(
            f"The teacher's labels {teacher_dataset_json.get('labels')} differ from the dataset's "
            f"{dataset_json.get('labels')}: a student must learn the teacher's label set."
        )
    teacher_channels, channels = channel_names(teacher_dataset_json), channel_names(dataset_json)
    if len(teacher_channels) != len(channels):
        raise RecokdError(f"The teacher expects {len(teacher_channels)} input channel(s) {teacher_channels}, "
                          f"the dataset has {len(channels)} {channels}.")


def check_preprocessed_data(teacher: Teacher, preprocessed_dataset: Path) -> None:
    """The student trains on the teacher's preprocessed data: it must exist for this dataset."""
    identifier = teacher.plans["configurations"][teacher.configuration].get("data_identifier")
    if identifier is None or not (Path(preprocessed_dataset) / identifier).is_dir():
        raise RecokdError(
            f"The teacher's preprocessed data '{identifier}' is not in {preprocessed_dataset}. Preprocess the "
            f"dataset with the teacher's plans first (recokd prepare, or nnUNetv2_preprocess -p "
            f"{teacher.plans_identifier} -c {teacher.configuration})."
        )


def check_student_fits_teacher(student_configuration: dict, teacher_configuration: dict) -> None:
    """Same patch, data and strides: each distilled stage must have the same size in both networks."""
    for key in ("patch_size", "data_identifier"):
        if student_configuration.get(key) != teacher_configuration.get(key):
            raise RecokdError(
                f"Student plans do not fit the teacher: {key} is {student_configuration.get(key)} for the student, "
                f"{teacher_configuration.get(key)} for the teacher. Derive the student plans from the teacher's "
                "(recokd distill does).")
    strides = [c["architecture"]["arch_kwargs"].get("strides") for c in (student_configuration, teacher_configuration)]
    if strides[0] != strides[1]:
        raise RecokdError(f"Student plans do not fit the teacher: strides {strides[0]} vs {strides[1]}.")

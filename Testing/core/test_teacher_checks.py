"""A teacher that cannot teach this dataset, or a broken checkpoint, stops with a clear message."""

from __future__ import annotations

import copy
import json
from fractions import Fraction

import pytest
import torch
from tiny_student import tiny_dataset_json, tiny_plans

from recokd.errors import RecokdError
from recokd.nnunet.checkpoint import load_checkpoint, save_atomically
from recokd.nnunet.network import build_network
from recokd.nnunet.student_plans import derive_student_plans
from recokd.nnunet.teacher import check_labels_and_channels, check_student_fits_teacher, load_teacher


@pytest.fixture
def teacher_folder(tmp_path):
    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    plans, dataset_json = tiny_plans(), tiny_dataset_json()
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    network = build_network(plans, dataset_json, "3d_fullres", deep_supervision=True)
    save_atomically({"network_weights": network.state_dict(), "inference_allowed_mirroring_axes": (0, 1, 2)},
                    folder / "fold_0" / "checkpoint_final.pth")
    return folder


def test_a_fitting_teacher_loads_frozen_in_eval_mode(teacher_folder):
    teacher = load_teacher(teacher_folder, dataset_json=tiny_dataset_json())
    assert not teacher.network.training
    assert not any(p.requires_grad for p in teacher.network.parameters())
    assert teacher.mirror_axes == (0, 1, 2) and teacher.num_parameters > 0


def test_teacher_with_other_labels_is_refused(teacher_folder):
    other = tiny_dataset_json() | {"labels": {"background": 0, "tumour": 1}}
    with pytest.raises(RecokdError, match="labels .* differ"):
        load_teacher(teacher_folder, dataset_json=other)


def test_teacher_with_other_input_channels_is_refused():
    two_channels = tiny_dataset_json() | {"channel_names": {"0": "T1", "1": "T2"}}
    with pytest.raises(RecokdError, match="expects 1 input channel"):
        check_labels_and_channels(tiny_dataset_json(), two_channels)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_truncated_or_corrupt_checkpoint_is_refused(teacher_folder, damage):
    path = teacher_folder / "fold_0" / "checkpoint_final.pth"
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00not a checkpoint" * 50, "empty": b""}[damage])
    with pytest.raises(RecokdError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_checkpoint_holding_arbitrary_objects_is_not_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "payload": Fraction(1, 3)}, path)  # any non-allowlisted class
    with pytest.raises(RecokdError, match="could run code"):
        load_checkpoint(path)


def test_missing_teacher_checkpoint_and_non_results_folder_are_refused(teacher_folder, tmp_path):
    with pytest.raises(RecokdError, match="does not exist"):
        load_teacher(teacher_folder, fold=3)
    with pytest.raises(RecokdError, match="not named like an nnU-Net results folder"):
        load_teacher(tmp_path)


def test_student_plans_that_do_not_fit_the_teacher_are_refused():
    teacher = tiny_plans()["configurations"]["3d_fullres"]
    student = derive_student_plans(tiny_plans(), "3d_fullres", Fraction(1, 2))["configurations"]["3d_fullres"]
    check_student_fits_teacher(student, teacher)  # derived plans fit
    other_patch = copy.deepcopy(student) | {"patch_size": [24, 24, 24]}
    with pytest.raises(RecokdError, match="patch_size"):
        check_student_fits_teacher(other_patch, teacher)
    other_strides = copy.deepcopy(student)
    other_strides["architecture"]["arch_kwargs"]["strides"] = [[1, 1, 1], [2, 2, 2], [1, 2, 2]]
    with pytest.raises(RecokdError, match="strides"):
        check_student_fits_teacher(other_strides, teacher)

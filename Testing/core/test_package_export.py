"""Export from an nnU-Net / ReCo-KD result folder to a package, and back."""

from __future__ import annotations

import pytest
import torch
from tiny_results import (
    CONFIGURATION,
    checkpoint_for,
    phantom_dataset_json,
    plans_for,
    seeded_weights,
    student_result,
    write_result,
)

from recokd.errors import RecokdError
from recokd.evaluate.complexity import count_parameters
from recokd.nnunet.network import build_network
from recokd.package.archive import load_package
from recokd.package.export import export_package, network_weights
from recokd.package.terminology import default_label_infos


def assert_weights_equal(state_dict: dict, expected: dict) -> None:
    assert state_dict.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(state_dict[key], tensor), key


@pytest.mark.parametrize("arch", ["plain", "resenc"])
def test_student_export_round_trip_uses_ema_weights(tmp_path, arch):
    result = student_result(tmp_path, arch)
    package = load_package(export_package(result, tmp_path / "s.recokd.zip"))
    plans, dataset_json = plans_for(arch), phantom_dataset_json()
    assert_weights_equal(package.state_dict, seeded_weights(plans, dataset_json, seed=1))  # EMA, not raw (seed 0)
    assert package.labels == default_label_infos(dataset_json)
    assert package.configuration == CONFIGURATION and package.mirror_axes == (0, 1, 2)
    assert package.plans == plans and package.dataset_json == dataset_json


def test_kd_modules_are_not_exported(tmp_path):
    package = load_package(export_package(student_result(tmp_path), tmp_path / "s.recokd.zip"))
    assert not any(key.startswith(("adapters", "context")) for key in package.state_dict)
    assert "kd_modules" not in package.card


def test_model_card_records_provenance_size_and_licence(tmp_path):
    out = export_package(student_result(tmp_path), tmp_path / "s.recokd.zip", metrics={"dice": {"liver": 0.9}},
                         extra_card={"notes": "test run"})
    card = load_package(out).card
    plans, dataset_json = plans_for(), phantom_dataset_json()
    assert card["name"] == "Dataset999_Tiny-student-w1of2-3d_fullres"
    assert card["width"] == "1/2" and card["trainer"] == "nnUNetTrainerReCoKD"
    assert card["teacher"] == {"folder": "nnUNetTrainer__nnUNetPlans__3d_fullres",
                               "plans_identifier": "nnUNetPlans", "params": 123456}  # no local path
    assert card["parameters"] == count_parameters(build_network(plans, dataset_json, CONFIGURATION))
    assert card["flops_per_patch"] > 0 and card["patch_size"] == [16, 16, 16]
    assert card["training_data"] == {"dataset": "Dataset999_Tiny", "num_training": 4, "fold": 0, "epochs": 3}
    assert card["recokd_options"]["temperature"] == 0.5
    assert card["metrics"] == {"dice": {"liver": 0.9}} and card["notes"] == "test run"
    assert card["licence"] == {"code": "Apache-2.0", "training_data": "CC0-1.0"}
    assert card["recokd_version"] and card["nnunetv2_version"] == "2.8.1"
    assert card["created"].endswith("+00:00")
    assert "ReCo-KD student (width 1/2)" in card["description"]


def test_teacher_result_exports_its_network_weights(tmp_path):
    plans, dataset_json = plans_for("resenc", (8, 16, 32)), phantom_dataset_json()
    result = write_result(tmp_path, plans, dataset_json, checkpoint_for(plans, dataset_json, student=False))
    package = load_package(export_package(result, tmp_path / "t.recokd.zip", name="my teacher"))
    assert_weights_equal(package.state_dict, seeded_weights(plans, dataset_json, seed=0))
    assert package.name == "my teacher" and package.card["width"] is None and package.card["teacher"] is None


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_orig_mod.module."])
def test_wrapper_prefixes_are_stripped(tmp_path, prefix):
    plans, dataset_json = plans_for(), phantom_dataset_json()
    result = write_result(tmp_path, plans, dataset_json, checkpoint_for(plans, dataset_json, prefix=prefix))
    package = load_package(export_package(result, tmp_path / "p.recokd.zip"))
    assert_weights_equal(package.state_dict, seeded_weights(plans, dataset_json, seed=1))


def test_network_weights_fall_back_to_raw_weights_without_ema():
    checkpoint = {"network_weights": {"module.a": torch.zeros(1)}, "recokd": {"ema_weights": {}}}
    assert list(network_weights(checkpoint)) == ["a"]


def test_weights_that_do_not_fit_the_plans_are_refused(tmp_path):
    dataset_json = phantom_dataset_json()
    checkpoint = checkpoint_for(plans_for("plain", (8, 16, 32)), dataset_json)
    result = write_result(tmp_path, plans_for("plain", (4, 8, 16)), dataset_json, checkpoint)
    with pytest.raises(RecokdError, match="do not fit the network"):
        export_package(result, tmp_path / "x.recokd.zip")
    assert not (tmp_path / "x.recokd.zip").exists()


def test_missing_checkpoint_names_what_exists(tmp_path):
    result = student_result(tmp_path)
    with pytest.raises(RecokdError, match=r"Folds in .*\['fold_0'\].*checkpoints in fold_1: none"):
        export_package(result, tmp_path / "x.recokd.zip", fold=1)
    with pytest.raises(RecokdError, match=r"checkpoints in fold_0: \['checkpoint_final.pth'\]"):
        export_package(result, tmp_path / "x.recokd.zip", checkpoint="checkpoint_best.pth")


def test_a_folder_without_plans_is_refused(tmp_path):
    with pytest.raises(RecokdError, match="plans.json is missing"):
        export_package(tmp_path, tmp_path / "x.recokd.zip")


def test_export_refuses_to_overwrite(tmp_path):
    result = student_result(tmp_path)
    out = export_package(result, tmp_path / "s.recokd.zip")
    with pytest.raises(RecokdError, match="already exists"):
        export_package(result, out)
    assert export_package(result, out, overwrite=True) == out

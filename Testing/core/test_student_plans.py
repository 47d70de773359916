"""Student plans: the teacher's plans with every stage narrowed, nothing else changed."""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest
from tiny_student import tiny_dataset_json, tiny_plans

from recokd.errors import RecokdError
from recokd.evaluate.complexity import count_parameters
from recokd.nnunet.network import build_network
from recokd.nnunet.student_plans import derive_student_plans, parse_width


def residual_encoder_plans(features=(32, 64, 128)) -> dict:
    plans = tiny_plans(features=features)
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    architecture["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    kwargs = architecture["arch_kwargs"]
    kwargs["n_blocks_per_stage"] = [1, 2, 2]
    kwargs.pop("n_conv_per_stage")
    return plans


@pytest.mark.parametrize("make_plans", [lambda: tiny_plans(features=(32, 64, 128)), residual_encoder_plans],
                         ids=["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize("width, expected", [("1", [32, 64, 128]), ("1/2", [16, 32, 64]),
                                             ("1/4", [8, 16, 32]), ("1/8", [8, 8, 16])])
def test_channels_shrink_by_width_with_a_floor_of_eight(make_plans, width, expected):
    teacher = make_plans()
    student = derive_student_plans(teacher, "3d_fullres", parse_width(width))
    config = student["configurations"]["3d_fullres"]
    assert config["architecture"]["arch_kwargs"]["features_per_stage"] == expected
    teacher_config = teacher["configurations"]["3d_fullres"]
    for key in ("data_identifier", "patch_size", "batch_size", "spacing", "normalization_schemes"):
        assert config[key] == teacher_config[key], f"{key} must be the teacher's"
    for key in ("strides", "kernel_sizes", "n_stages"):
        assert config["architecture"]["arch_kwargs"][key] == teacher_config["architecture"]["arch_kwargs"][key]
    assert student["plans_name"] != teacher["plans_name"]
    assert teacher_config["architecture"]["arch_kwargs"]["features_per_stage"] == [32, 64, 128], "teacher untouched"
    network = build_network(student, tiny_dataset_json(), "3d_fullres")
    assert type(network).__name__ == teacher_config["architecture"]["network_class_name"].rsplit(".", 1)[1]


def test_quarter_width_student_has_about_a_sixteenth_of_the_parameters():
    teacher = tiny_plans(features=(32, 64, 128))
    student = derive_student_plans(teacher, "3d_fullres", Fraction(1, 4))
    ratio = count_parameters(build_network(student, tiny_dataset_json(), "3d_fullres")) / count_parameters(
        build_network(teacher, tiny_dataset_json(), "3d_fullres"))
    assert ratio < 0.1


def test_inherited_configurations_are_resolved_into_self_contained_student_plans():
    teacher = tiny_plans(features=(32, 64, 128))
    teacher["configurations"]["3d_child"] = {"inherits_from": "3d_fullres", "batch_size": 1}
    student = derive_student_plans(teacher, "3d_child", Fraction(1, 2))
    assert list(student["configurations"]) == ["3d_child"]
    child = student["configurations"]["3d_child"]
    assert "inherits_from" not in child and child["batch_size"] == 1
    assert child["architecture"]["arch_kwargs"]["features_per_stage"] == [16, 32, 64]


@pytest.mark.parametrize("width", ["1/3", "2", "0", "quarter", "1/16"])
def test_unsupported_widths_are_refused(width):
    with pytest.raises(RecokdError, match="not supported"):
        parse_width(width)


def test_missing_configuration_and_unknown_architecture_are_refused():
    teacher = tiny_plans()
    with pytest.raises(RecokdError, match="no configuration '2d'"):
        derive_student_plans(teacher, "2d", Fraction(1, 2))
    odd = copy.deepcopy(teacher)
    odd["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].pop("features_per_stage")
    with pytest.raises(RecokdError, match="features_per_stage"):
        derive_student_plans(odd, "3d_fullres", Fraction(1, 2))

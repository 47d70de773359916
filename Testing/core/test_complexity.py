"""Parameter and FLOP counts: exact on a hand-countable net, and ordered student < teacher."""

from __future__ import annotations

import pytest
import torch
from tiny_results import CONFIGURATION, phantom_dataset_json, plans_for
from torch import nn

from recokd.evaluate.complexity import count_flops, count_parameters, network_complexity, plans_complexity


def hand_net() -> nn.Module:
    return nn.Sequential(nn.Conv3d(1, 4, 3), nn.LeakyReLU(), nn.Conv3d(4, 2, 1))


def test_parameters_and_flops_equal_the_hand_count():
    # conv1: 4 x (1 x 3^3) weights + 4 biases; conv2: 2 x 4 weights + 2 biases
    assert count_parameters(hand_net()) == 4 * 27 + 4 + 2 * 4 + 2
    # an 8^3 input gives 6^3 outputs; 2 FLOPs per multiply-add, biases and activations not counted
    voxels = 6**3
    assert count_flops(hand_net(), (1, 1, 8, 8, 8)) == 2 * voxels * (4 * 27 + 2 * 4)


def test_a_tensor_registered_twice_counts_once():
    conv = nn.Conv3d(1, 4, 3)
    net = nn.Module()
    net.a, net.b = conv, conv
    assert count_parameters(net) == 4 * 27 + 4


def test_counting_flops_restores_training_mode():
    net = hand_net().train()
    count_flops(net, (1, 1, 8, 8, 8))
    assert net.training


def test_meta_device_gives_the_same_counts():
    on_cpu = network_complexity(hand_net(), (1, 1, 8, 8, 8))
    with torch.device("meta"):
        meta_net = hand_net()
    assert network_complexity(meta_net, (1, 1, 8, 8, 8)) == on_cpu


@pytest.mark.parametrize("arch", ["plain", "resenc"])
def test_student_is_cheaper_than_teacher(arch):
    dataset_json = phantom_dataset_json()
    teacher = plans_complexity(plans_for(arch, (8, 16, 32)), dataset_json, CONFIGURATION)
    student = plans_complexity(plans_for(arch, (4, 8, 16)), dataset_json, CONFIGURATION)
    assert 0 < student.parameters < teacher.parameters
    assert 0 < student.flops < teacher.flops
    assert student.input_shape == teacher.input_shape == (1, 1, 16, 16, 16)
